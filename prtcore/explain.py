"""Token-level explanation of a portable reward: the paper's qualitative view.

For a prompt and a continuation, each continuation token gets: its probability under the base alone and under
base + reward (PRT), the reward it received (Σ rᵢ/λᵢ at that token; only differences between tokens matter to
the distribution), Δ = log p_PRT − log p_base, and the base's and PRT's top choices at that position.

    rows = explain(model, prompt_ids, continuation_ids)        # model: a PRTForCausalLM with rewards
    print(render_terminal(rows, color=True))
    Path("out.html").write_text(render_html(rows, prompt="..."))
"""

from __future__ import annotations

import html
import math
from typing import Sequence

import attrs
import numpy as np

from .errors import ConfigError


@attrs.frozen
class TokenExplanation:
    position: int                  # index in the continuation
    token: int
    text: str
    base_prob: float
    prt_prob: float
    reward: float                  # Σ r/λ for this token at this position
    base_top: tuple[tuple[str, float], ...]
    prt_top: tuple[tuple[str, float], ...]

    @property
    def delta(self) -> float:
        """log p_PRT − log p_base of the chosen token."""
        return _log(self.prt_prob) - _log(self.base_prob)

    def to_dict(self) -> dict:
        out = attrs.asdict(self)
        out["base_top"] = [{"text": t, "prob": p} for t, p in self.base_top]
        out["prt_top"] = [{"text": t, "prob": p} for t, p in self.prt_top]
        out["delta_logprob"] = self.delta
        return out


def _log(p: float) -> float:
    return math.log(p) if p > 0 else float("-inf")


def token_text(tokenizer, token: int) -> str:
    return tokenizer.decode([int(token)])


def explain(model, prompt_ids: Sequence[int], continuation_ids: Sequence[int], *, top: int = 3) -> list[TokenExplanation]:
    """One TokenExplanation per continuation token (`model`: a PRTForCausalLM with at least one reward)."""
    if not getattr(model, "rewards", None):
        raise ConfigError("explain needs a model with at least one reward (--reward DIR)")
    prompt_ids, continuation_ids = [int(i) for i in prompt_ids], [int(i) for i in continuation_ids]
    if not prompt_ids:
        raise ConfigError("explain needs a non-empty prompt")
    if not continuation_ids:
        raise ConfigError("explain needs a non-empty continuation")
    out = model([prompt_ids + continuation_ids])
    to_np = model.backend.to_numpy
    logprobs = np.asarray(to_np(out.logprobs), dtype=np.float64)[0]
    base = np.asarray(to_np(out.base_logprobs), dtype=np.float64)[0]
    reward = np.asarray(to_np(out.reward), dtype=np.float64)[0]
    tok = model.tokenizer
    rows = []
    for i, token in enumerate(continuation_ids):
        at = len(prompt_ids) + i - 1  # the position whose distribution predicts this token
        if token >= logprobs.shape[-1]:
            raise ConfigError(f"token id {token} is outside the shared vocabulary of {logprobs.shape[-1]} tokens")

        def best(lp):
            idx = np.argsort(-lp[at])[:top]
            return tuple((token_text(tok, j), float(np.exp(lp[at, j]))) for j in idx)

        rows.append(TokenExplanation(i, token, token_text(tok, token), float(np.exp(base[at, token])),
                                     float(np.exp(logprobs[at, token])), float(reward[at, token]), best(base),
                                     best(logprobs)))
    return rows


# ------------------------------------------------------------------------------------------------ rendering
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}


def _escape(c: str) -> str:
    if c in _ESCAPES:
        return _ESCAPES[c]
    if c == " " or c.isprintable():
        return c
    return f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"


def visible(text: str) -> str:
    """A token's text quoted, with whitespace and unprintable characters escaped: ' the', '\\n', '\\x07'."""
    return "'" + "".join(_escape(c) for c in text) + "'"


def printable(text: str) -> str:
    """Text safe to print on a terminal: unprintable characters other than newline and tab are escaped."""
    return "".join(c if c in "\n\t\\" else _escape(c) for c in text)


def _ansi(code: str, text: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color else text


def _tone(delta: float) -> str:
    """ANSI style of a Δ log p: green when the reward raised the token, red when it lowered it; bold if large."""
    if delta > 0.1:
        return "1;32" if delta > 1.0 else "32"
    if delta < -0.1:
        return "1;31" if delta < -1.0 else "31"
    return "2"


def render_terminal(rows: Sequence[TokenExplanation], *, color: bool = False, prompt: str | None = None) -> str:
    """The continuation coloured by Δ log p, then one table row per token."""
    lines = []
    if prompt is not None:
        lines.append(_ansi("2", "prompt: ", color) + printable(prompt))
    strip = "".join(_ansi(_tone(r.delta), printable(r.text), color) for r in rows)
    lines.append(_ansi("2", "continuation: ", color) + strip)
    lines.append(_ansi("2", "green: the reward raised the token's probability, red: lowered it (bold: by more than e)",
                       color))
    lines.append("")
    header = f"{'pos':>4}  {'token':<16} {'p_base':>8} {'p_prt':>8} {'r/λ':>8} {'Δlogp':>7}  {'base top-3':<40} prt top-3"
    lines.append(_ansi("1", header, color))

    def tops(items):
        return " ".join(f"{visible(t)} {p:.2f}" for t, p in items)

    for r in rows:
        token = visible(r.text)
        token = token if len(token) <= 16 else token[:15] + "…"
        cell = _ansi(_tone(r.delta), f"{token:<16}", color)
        lines.append(f"{r.position:>4}  {cell} {r.base_prob:>8.4f} {r.prt_prob:>8.4f} {r.reward:>+8.3f} "
                     f"{r.delta:>+7.2f}  {tops(r.base_top):<40} {tops(r.prt_top)}")
    return "\n".join(lines)


def _background(delta: float) -> str:
    strength = min(1.0, abs(delta) / 3.0)
    if abs(delta) <= 0.1:
        return "transparent"
    rgb = "34,160,60" if delta > 0 else "210,50,50"
    return f"rgba({rgb},{0.15 + 0.6 * strength:.2f})"


def render_html(rows: Sequence[TokenExplanation], *, prompt: str = "", title: str = "prt explain",
                details: dict | None = None) -> str:
    """A self-contained HTML page (no scripts, no external resources); every text is escaped."""
    e = html.escape
    spans = []
    for r in rows:
        tip = (f"p_base {r.base_prob:.4f} → p_prt {r.prt_prob:.4f} | r/λ {r.reward:+.3f} | Δlogp {r.delta:+.2f}\n"
               f"base top: {', '.join(f'{visible(t)} {p:.2f}' for t, p in r.base_top)}\n"
               f"prt top: {', '.join(f'{visible(t)} {p:.2f}' for t, p in r.prt_top)}")
        spans.append(f'<span class="tok" style="background:{_background(r.delta)}" title="{e(tip)}">{e(r.text)}</span>')

    def tops(items):
        return "<br>".join(f"<code>{e(visible(t))}</code> {p:.3f}" for t, p in items)

    body_rows = "\n".join(
        f"<tr><td>{r.position}</td><td style=\"background:{_background(r.delta)}\"><code>{e(visible(r.text))}</code></td>"
        f"<td>{r.base_prob:.4f}</td><td>{r.prt_prob:.4f}</td><td>{r.reward:+.3f}</td><td>{r.delta:+.2f}</td>"
        f"<td>{tops(r.base_top)}</td><td>{tops(r.prt_top)}</td></tr>" for r in rows)
    info = "".join(f"<li><b>{e(str(k))}</b>: {e(str(v))}</li>" for k, v in (details or {}).items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
.text {{ font-family: ui-monospace, monospace; white-space: pre-wrap; line-height: 1.8; border: 1px solid #ddd;
         padding: 1em; border-radius: 6px; }}
.prompt {{ color: #777; }}
.tok {{ border-radius: 3px; }}
table {{ border-collapse: collapse; margin-top: 1.5em; font-size: 0.9em; }}
td, th {{ border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; text-align: right; }}
td:nth-child(2), td:nth-child(7), td:nth-child(8) {{ text-align: left; }}
</style></head><body>
<h1>{e(title)}</h1>
<ul>{info}</ul>
<p>Each token of the continuation is coloured by how the reward moved its probability: green raised, red lowered
(stronger colour, larger change). Hover a token for details. r/λ is the reward the token received; only
differences between tokens change the distribution.</p>
<div class="text"><span class="prompt">{e(prompt)}</span>{''.join(spans)}</div>
<table><thead><tr><th>pos</th><th>token</th><th>p base</th><th>p PRT</th><th>r/λ</th><th>Δ log p</th>
<th>base top-3</th><th>PRT top-3</th></tr></thead><tbody>
{body_rows}
</tbody></table></body></html>
"""
