"""What a server holds: one target base, the rewards loaded with it, and optionally a fine-tuned model and its
source for EFT / proxy-tuning; a request picks a composition of them (`prt`, `eft`, `proxy`, `base`) and, for
`prt`, which rewards and λs.

Every composition shares the loaded models (nothing is loaded per request); the compositions built are kept,
the most recently used `KEPT` of them.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from ..config import LAM_RULE, is_lam
from ..data import render_prompt, turn_end_marker
from ..errors import ConfigError
from ..hub import parse_hub_id
from ..model import ComposedLM, PRTForCausalLM
from ..tokens import check_token_ids

COMPOSITIONS = ("prt", "eft", "proxy", "base")
KEPT = 32


def short_name(path) -> str:
    """What clients call a model or a reward: its directory's name, or a Hub id's repo name (without `@revision`)."""
    text = str(path)
    hub_id = None if Path(text).exists() else parse_hub_id(text)
    if hub_id is not None:
        text = hub_id[0]
    return Path(text).name or text


def reward_names(paths) -> list[str]:
    """A name per reward (`short_name`), with "#2", "#3"... for repeats."""
    names: list[str] = []
    for path in paths:
        name = short_name(path)
        count = sum(1 for n in names if n == name or n.startswith(name + "#"))
        names.append(name if not count else f"{name}#{count + 1}")
    return names


class ServedModels:
    """`prt`: a PRTForCausalLM holding every reward (None without rewards); `finetuned`: [fine-tuned, source] for
    EFT / proxy-tuning (None without --ft); `names`: one per reward of `prt`; `compose`: the default."""

    def __init__(self, name: str, target, *, prt: PRTForCausalLM | None = None, names=(), finetuned=None,
                 compose: str = "prt", alpha: float = 1.0):
        self.name, self.target, self.prt, self.finetuned, self.alpha = name, target, prt, finetuned, alpha
        self.backend, self.tokenizer = target.backend, target.tokenizer
        self.names = list(names)
        if prt is not None and len(self.names) != len(prt.rewards):
            raise ConfigError(f"{len(self.names)} reward names for {len(prt.rewards)} rewards")
        self.compose = self.check_compose(compose, "--compose")
        self.end_of_turn = turn_end_marker(self.tokenizer)
        self._built: OrderedDict[tuple, object] = OrderedDict()

    # ---------------------------------------------------------------------------------------------- requests
    def compositions(self) -> list[str]:
        return [c for c in COMPOSITIONS if c == "base" or (c == "prt" and self.prt is not None) or
                (c in ("eft", "proxy") and self.finetuned is not None)]

    def check_compose(self, compose, what: str = "compose") -> str:
        if compose not in COMPOSITIONS:
            raise ConfigError(f"{what} {compose!r}: must be one of {', '.join(COMPOSITIONS)}")
        if compose == "prt" and self.prt is None:
            raise ConfigError(f"{what} prt: the server has no reward (start it with --reward DIR)")
        if compose in ("eft", "proxy") and self.finetuned is None:
            raise ConfigError(f"{what} {compose}: the server has no fine-tuned model (start it with --ft and --source)")
        return compose

    def rewards(self, specs) -> list[tuple[int, float]]:
        """(index, λ) of each "NAME" or "NAME:λ" of a request (a NAME alone: the λ it was loaded with)."""
        out = []
        for spec in specs:
            name, sep, lam = spec.rpartition(":")
            if not sep or spec in self.names:
                name, lam = spec, None
            if name not in self.names:
                raise ConfigError(f"rewards: unknown reward {name!r}; this server has {', '.join(map(repr, self.names))}")
            index = self.names.index(name)
            value = self.prt.lams[index]
            if lam is not None:
                try:
                    value = float(lam)
                except ValueError:
                    value = None
                if value is None or not is_lam(value):
                    raise ConfigError(f"rewards: {spec!r}: λ={lam} must be {LAM_RULE}")
            out.append((index, value))
        if not out:
            raise ConfigError("rewards: give at least one reward for compose 'prt' (or compose 'base')")
        return out

    def model(self, compose: str | None = None, rewards=None) -> tuple[tuple, object]:
        """(key, model) of a composition: `rewards` for prt as "NAME[:λ]" strings (None: every loaded reward)."""
        compose = self.check_compose(compose or self.compose)
        if compose == "prt":
            chosen = [(i, lam) for i, lam in enumerate(self.prt.lams)] if rewards is None else self.rewards(rewards)
            key = ("prt", tuple(chosen))
        else:
            if rewards is not None:
                raise ConfigError(f"rewards: only used with compose 'prt', not {compose!r}")
            key = (compose,)
        if key not in self._built:
            self._built[key] = self._build(key)
            while len(self._built) > KEPT:
                self._built.popitem(last=False)
        self._built.move_to_end(key)
        return key, self._built[key]

    def _build(self, key: tuple):
        compose = key[0]
        if compose == "prt":
            prt = self.prt
            chosen = key[1]
            return PRTForCausalLM(self.backend, self.target, [prt.rewards[i] for i, _ in chosen],
                                  [lam for _, lam in chosen], [prt.sources[i] for i, _ in chosen])
        if compose == "base":
            return ComposedLM(self.backend, [self.target], "base")
        return ComposedLM(self.backend, [self.target, *self.finetuned], compose, self.alpha)

    # ---------------------------------------------------------------------------------------------- prompts
    def chat_prompt(self, messages: list[dict], tools=None) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError("messages: the model's tokenizer has no chat template; use /v1/completions")
        return render_prompt(self.tokenizer, messages, tools=tools)

    def text_prompt(self, model, prompt) -> list[int]:
        """Token ids of a completion prompt: text, or token ids checked against the models' rows."""
        ids = model.encode(prompt)
        if not ids:
            raise ConfigError("prompt: the prompt is empty (it encodes to no token ids)")
        check_token_ids(ids, model.rows, "prompt")
        return ids

    def window_left(self, model, ids: list[int]) -> int | None:
        """Tokens left in the context window after the prompt (None: no window known); a prompt that fills it
        is refused, as `stream_steps` refuses it."""
        window = model.context_window()
        if window is None:
            return None
        if len(ids) >= window:
            raise ContextWindowError(f"the prompt has {len(ids)} tokens, the model's context window is {window}: "
                                     "shorten the prompt")
        return window - len(ids)

    def describe(self) -> dict:
        """The model entry of GET /v1/models, with what a request may choose."""
        rewards = [{"name": n, "lam": lam, "kind": r.config.kind} for n, lam, r in
                   zip(self.names, self.prt.lams, self.prt.rewards)] if self.prt is not None else []
        return {"id": self.name, "object": "model", "created": 0, "owned_by": "prtcore",
                "backend": self.backend.name, "compose": self.compose, "compositions": self.compositions(),
                "rewards": rewards, "context_window": self.target.config.get("max_position_embeddings")}


class ContextWindowError(ConfigError):
    """A prompt that leaves no room in the context window."""
