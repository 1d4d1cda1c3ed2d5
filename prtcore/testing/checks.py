"""The conformance checks, written once: plain functions over a Workspace, each returning measurements.

`prt conformance` (prtcore.testing.runner), the pytest suite (tests/conformance) and the ConformanceTests classes
a plugin subclasses (prtcore.testing.suite) all run these through `run_check`, which gives a CheckResult:

    status   pass | fail | error | skip | xfail (a declared known failure) | xpass (declared, but it passed)
    figure   the worst measurement, `limit` what it had to stay within, `where` what and where it is

Each check runs in one or more modes, which decide its subjects (the backends it involves):
- "reference": one backend against the NumPy reference (prtcore.testing.reference) on the backend's own inputs;
- "self": one backend against itself (cached versus uncached, batched versus one by one);
- "pair": two backends on the same checkpoint and weights (each unordered pair once, label "a/b");
- "ordered": what backend a wrote, backend b reads (label "a>b"; both orders).

Every measurement is "figure ≤ limit" (a cosine similarity is measured as 1 − cos). Tolerances are float32's:
logits and hidden states 1e-4 × max(1, their scale); log-probs and probabilities 1e-4 between backends,
1e-5 against NumPy on the same inputs; the PRT loss 1e-5 × max(1, |loss|); gradients 1 − cos ≤ 1e-4 and
norms within 1e-3 of each other.
"""

from __future__ import annotations

import math
import time
import traceback
from typing import Callable, Sequence

import attrs
import numpy as np

from ..objectives import prt_loss
from ..sampling import PRTComposer, Sampler, align_vocab, decode
from . import reference
from .gradients import GradientsUnavailable, gradient_provider, reference_linear_gradients, reward_gradients
from .workspace import LoadFailure, Skip, Workspace

TOL_LOGITS = 1e-4       # × max(1, scale)
TOL_LOGPROBS = 1e-4     # absolute, between backends
TOL_REFERENCE = 1e-5    # absolute, a backend against NumPy on its own inputs
TOL_LOSS = 1e-5         # × max(1, |loss|)
TOL_COSINE = 1e-4       # 1 − cosine similarity
TOL_NORM = 1e-3         # relative difference of gradient norms
GENERATION_TOKENS = 32
SAMPLER = Sampler(temperature=0.8, top_k=40, top_p=0.9, min_p=0.02, repetition_penalty=1.15, seed=7)

STATUSES = ("pass", "fail", "error", "xpass", "xfail", "skip")
FAILING = ("fail", "error", "xpass")


# ---------------------------------------------------------------------------------------------- records
@attrs.frozen
class Measure:
    """One comparison: `figure` must stay within `limit`."""

    figure: float
    limit: float
    where: str

    @property
    def ok(self) -> bool:
        return math.isfinite(self.figure) and self.figure <= self.limit


@attrs.frozen
class CheckResult:
    family: str
    check: str
    subject: str
    status: str
    figure: float | None = None
    limit: float | None = None
    where: str = ""
    reason: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status in FAILING

    def describe(self) -> str:
        """One line: the figure against its limit and where, or the reason."""
        parts = []
        if self.figure is not None:
            parts.append(f"{_fmt(self.figure)} (limit {_fmt(self.limit)})")
        if self.where:
            parts.append(self.where)
        if self.reason:
            parts.append(self.reason)
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return attrs.asdict(self)


def _fmt(x) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.2e}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.4g}"


@attrs.frozen
class Check:
    name: str
    doc: str
    modes: dict  # mode -> function(workspace, *backend names) -> list[Measure]


CHECKS: dict[str, Check] = {}


def check(name: str, doc: str, **modes: Callable):
    CHECKS[name] = Check(name, doc, modes)


def subjects(check_name: str, backends: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(mode, backend names) for every subject of a check among `backends` (in their order)."""
    out = []
    for mode in CHECKS[check_name].modes:
        if mode in ("reference", "self"):
            out += [(mode, (b,)) for b in backends]
        elif mode == "pair":
            out += [(mode, (a, b)) for i, a in enumerate(backends) for b in backends[i + 1:]]
        elif mode == "ordered":
            out += [(mode, (a, b)) for a in backends for b in backends if a != b]
    return out


def subject_label(mode: str, names: Sequence[str]) -> str:
    if len(names) == 1:
        return names[0]
    return f"{names[0]}>{names[1]}" if mode == "ordered" else f"{names[0]}/{names[1]}"


def run_check(ws: Workspace, check_name: str, mode: str, names: Sequence[str], expected=None) -> CheckResult:
    """Run one check on one subject; never raises (an exception is an "error" result with where it happened).

    `expected`: a prtcore.testing.expected.ExpectedFailures (or None) consulted for known failures.
    """
    label = subject_label(mode, names)
    start = time.perf_counter()
    figure = limit = None
    where = reason = ""
    try:
        for name in names:
            ws.supports(name)
        measures = CHECKS[check_name].modes[mode](ws, *names)
        if not measures:
            raise RuntimeError(f"check {check_name!r} measured nothing")
        worst = max(measures, key=lambda m: (not m.ok, m.figure / m.limit if m.limit else m.figure))
        figure, limit, where = float(worst.figure), float(worst.limit), worst.where
        status = "pass" if worst.ok else "fail"
    except Skip as e:
        status, reason = "skip", str(e)
    except LoadFailure as e:
        status, reason = "error", str(e)
    except Exception as e:  # a backend's exception is a finding: report it with where it was raised
        status = "error"
        frames = traceback.extract_tb(e.__traceback__)
        if frames:
            where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}"
        first = str(e).splitlines()[0] if str(e) else ""
        reason = f"{type(e).__name__}: {first}"
    except SystemExit as e:
        status, reason = "error", f"SystemExit({e.code}) raised inside the check"
    if expected is not None:
        known = expected.reason_for(ws.family, check_name, label)
        if known is not None:
            if status in ("fail", "error"):
                status, reason = "xfail", f"expected failure: {known}" + (f" ({reason})" if reason else "")
            elif status == "pass":
                status, reason = "xpass", f"declared as an expected failure ({known}) but passed: remove the entry"
    return CheckResult(ws.label, check_name, label, status, figure, limit, where, reason,
                       round(time.perf_counter() - start, 3))


# ---------------------------------------------------------------------------------------------- helpers
def np64(backend, x) -> np.ndarray:
    return np.asarray(backend.to_numpy(x), dtype=np.float64)


def compare(got, want, *, what: str, atol: float, scaled: bool = True) -> Measure:
    """Max |got − want| against atol (× max(1, max|want|) when `scaled`); where names the worst element."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return Measure(math.inf, atol, f"{what}: shapes differ, {got.shape} vs {want.shape}")
    finite_got, finite_want = np.isfinite(got), np.isfinite(want)
    if not np.array_equal(finite_got, finite_want) or not np.array_equal(got[~finite_got], want[~finite_want]):
        index = tuple(int(i) for i in np.argwhere((finite_got != finite_want) | (~finite_got & (got != want)))[0])
        return Measure(math.inf, atol, f"{what}{list(index)}: {got[index]} vs {want[index]}")
    if got.size == 0:
        return Measure(0.0, atol, f"{what}: empty")
    diff = np.where(finite_want, np.abs(got - want), 0.0)
    index = np.unravel_index(int(np.argmax(diff)), diff.shape)
    scale = float(np.max(np.abs(np.where(finite_want, want, 0.0))))
    limit = atol * max(1.0, scale) if scaled else atol
    detail = f"{what}{list(int(i) for i in index)}: {got[index]:.6g} vs {want[index]:.6g}"
    if scaled:
        detail += f" (scale {scale:.3g}, {diff[index] / max(scale, 1e-30):.2e} of it)"
    return Measure(float(diff[index]), limit, detail)


def compare_loss(got: float, want: float, what: str) -> Measure:
    return Measure(abs(got - want), TOL_LOSS * max(1.0, abs(want)), f"{what}: {got:.8g} vs {want:.8g}")


def compare_gradients(got: dict, want: dict, what: str) -> list[Measure]:
    """Per tensor 1 − cos (≤ 1e-4) and the relative difference of the norms (≤ 1e-3); names and shapes must match."""
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing or extra:
        name = (missing or extra)[0]
        return [Measure(math.inf, TOL_COSINE, f"{what}: tensor {name!r} {'missing' if missing else 'unexpected'} "
                                               f"({len(missing)} missing, {len(extra)} unexpected)")]
    out = []
    for name in sorted(want):
        a, b = np.asarray(got[name], dtype=np.float64), np.asarray(want[name], dtype=np.float64)
        if a.shape != b.shape:
            out.append(Measure(math.inf, TOL_COSINE, f"{what}: {name} shapes differ, {a.shape} vs {b.shape}"))
            continue
        na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        if na == 0.0 and nb == 0.0:
            out.append(Measure(0.0, TOL_COSINE, f"{what}: {name} is zero in both"))
            continue
        if na == 0.0 or nb == 0.0:
            out.append(Measure(math.inf, TOL_COSINE, f"{what}: {name} is zero on one side only (norms {na:.3g}, {nb:.3g})"))
            continue
        cos = float(np.sum(a * b) / (na * nb))
        out.append(Measure(1.0 - cos, TOL_COSINE, f"{what}: 1 - cos of {name} (cos {cos:.8f})"))
        out.append(Measure(abs(na / nb - 1.0), TOL_NORM, f"{what}: norm of {name}, {na:.6g} vs {nb:.6g}"))
    return out


def _hidden_and_reward(ws: Workspace, name: str, reward, source, ids):
    b = ws.backend(name)
    x = b.asarray(ids)
    hidden = source.forward(x, hidden=True).hidden if reward.reads_source_hidden else None
    return hidden, reward.forward(x, source_hidden=hidden)


def _reward_logits(ws, name, reward, source, ids) -> np.ndarray:
    return np64(ws.backend(name), _hidden_and_reward(ws, name, reward, source, ids)[1])


def _ids(ws: Workspace) -> list[list[int]]:
    return [ws.trace_ids()]


# ---------------------------------------------------------------------------------------------- base model
def _base_outputs(ws: Workspace, name: str):
    def run():
        b = ws.backend(name)
        out = ws.base(name).forward(b.asarray(_ids(ws)), hidden=True)
        return np64(b, out.logits), (None if out.hidden is None else np64(b, out.hidden))

    return ws.memo(("base-out", name), run)


def base_logits_pair(ws, a, b):
    (la, ha), (lb, hb) = _base_outputs(ws, a), _base_outputs(ws, b)
    out = [compare(la, lb, what=f"logits {a} vs {b}", atol=TOL_LOGITS)]
    if ha is None or hb is None:
        out.append(Measure(math.inf, TOL_LOGITS, f"hidden states missing ({a}: {ha is not None}, {b}: {hb is not None})"))
    else:
        out.append(compare(ha, hb, what=f"hidden {a} vs {b}", atol=TOL_LOGITS))
    return out


check("base_logits", "base logits and last hidden states of the same checkpoint", pair=base_logits_pair)


# ---------------------------------------------------------------------------------------------- rewards
def _head_reward_reference(kind):
    def run(ws, a):
        from ..artifacts import RewardArtifact

        reward, source = ws.load_reward(a, kind)
        hidden, logits = _hidden_and_reward(ws, a, reward, source, _ids(ws))
        artifact = RewardArtifact.open(ws.neutral_artifact(kind))
        want = reference.reward_logits(artifact.tensors(), np64(ws.backend(a), hidden), artifact.config)
        return [compare(np64(ws.backend(a), logits), want, what=f"{kind} reward logits {a} vs NumPy", atol=TOL_LOGITS)]

    return run


def _reward_ordered(kind, capability=None):
    def run(ws, a, b):
        if capability:
            ws.require(a, capability)
            ws.require(b, capability)
        reward_a, source_a = ws.load_reward(a, kind)
        want = _reward_logits(ws, a, reward_a, source_a, _ids(ws))
        reward_b, source_b = ws.load_reward(b, kind, ws.saved_by(a, kind))
        got = _reward_logits(ws, b, reward_b, source_b, _ids(ws))
        return [compare(got, want, what=f"{kind} reward logits, {a}'s artifact in {b} vs {a}", atol=TOL_LOGITS)]

    return run


check("reward_linear", "linear reward logits: against NumPy on the backend's hidden states; an artifact saved by one "
      "backend read by the other", reference=_head_reward_reference("linear"), ordered=_reward_ordered("linear"))
check("reward_transformer", "transformer reward logits (ALiBi, 6 heads): against NumPy; saved by one backend, read "
      "by the other", reference=_head_reward_reference("transformer"), ordered=_reward_ordered("transformer"))
check("reward_twin_lora", "LoRA twin logits: a random PEFT adapter loaded and saved by one backend, read by the other",
      ordered=_reward_ordered("lora", "lora"))
check("reward_twin_full", "fully fine-tuned twin logits: a perturbed checkpoint loaded and saved by one backend, read "
      "by the other", ordered=_reward_ordered("full"))


# ---------------------------------------------------------------------------------------------- loss
LOSS_MASK_DROP = (1, 4)  # target positions left out of the loss


def _loss_inputs(ws: Workspace):
    ids = _ids(ws)
    mask = [[1] * len(ids[0])]
    for i in LOSS_MASK_DROP:
        if i + 1 < len(mask[0]):
            mask[0][i + 1] = 0
    return ids, mask


def _losses(ws: Workspace, name: str):
    """{kind: (loss from the backend's namespace, NumPy reference on the same logits)} for linear and transformer."""
    def run():
        b = ws.backend(name)
        ids, mask = _loss_inputs(ws)
        vocab = ws.vocab()
        x = b.asarray(ids)
        inputs, targets = x[:, :-1], x[:, 1:]
        out = ws.base(name).forward(inputs, hidden=True)
        base = align_vocab(out.logits, vocab, xp=b.xp)
        result = {}
        for kind in ("linear", "transformer"):
            reward, _ = ws.load_reward(name, kind)
            config = ws.reward_config(kind)
            r = align_vocab(reward.forward(inputs, source_hidden=out.hidden), vocab, fill=0.0, xp=b.xp)
            weights = b.xp.asarray(np.asarray(mask, dtype=np.float32)[:, 1:])
            loss, _ = prt_loss(base, r, targets, weights, lam=config.lam, entropy_coeff=config.entropy_coeff, xp=b.xp)
            want, _ = reference.prt_loss(np64(b, base), np64(b, r), np.asarray(ids)[:, 1:], np.asarray(mask)[:, 1:],
                                         lam=config.lam, entropy_coeff=config.entropy_coeff)
            result[kind] = (float(np64(b, loss)), float(want))
        return result

    return ws.memo(("loss", name), run)


def prt_loss_reference(ws, a):
    return [compare_loss(got, want, f"{kind} PRT loss {a} vs NumPy") for kind, (got, want) in _losses(ws, a).items()]


def prt_loss_pair(ws, a, b):
    la, lb = _losses(ws, a), _losses(ws, b)
    return [compare_loss(lb[kind][0], la[kind][0], f"{kind} PRT loss {b} vs {a}") for kind in la]


check("prt_loss", "the PRT loss (λ 0.8, entropy 0.05, masked tokens) of a linear and a transformer reward",
      reference=prt_loss_reference, pair=prt_loss_pair)


# ---------------------------------------------------------------------------------------------- gradients
def _gradients(ws: Workspace, name: str, kind: str):
    def run():
        if gradient_provider(ws.backend(name)) is None:
            raise Skip(f"backend {name!r} lacks capability 'gradients' (no reward_gradients method; "
                       "see prtcore.testing.gradients)")
        if kind == "lora":
            ws.require(name, "lora")
        reward, source = ws.load_reward(name, kind)
        ids, mask = _loss_inputs(ws)
        config = ws.reward_config(kind)
        try:
            return reward_gradients(ws.backend(name), reward, source, ids, mask, lam=config.lam,
                                    entropy_coeff=config.entropy_coeff)
        except (GradientsUnavailable, NotImplementedError) as e:
            raise Skip(f"backend {name!r}: {e}") from None

    return ws.memo(("grads", name, kind), run)


def gradients_linear_reference(ws, a):
    from ..artifacts import RewardArtifact

    got = _gradients(ws, a, "linear")
    b = ws.backend(a)
    ids, mask = _loss_inputs(ws)
    out = ws.base(a).forward(b.asarray([ids[0][:-1]]), hidden=True)
    config = ws.reward_config("linear")
    head = RewardArtifact.open(ws.neutral_artifact("linear")).tensors()["head.weight"]
    want = reference_linear_gradients(np64(b, out.logits), np64(b, out.hidden), head, ids, mask, vocab=ws.vocab(),
                                      lam=config.lam, entropy_coeff=config.entropy_coeff)
    return compare_gradients(got, want, f"linear gradients {a} vs closed form")


def _gradients_pair(kind):
    def run(ws, a, b):
        return compare_gradients(_gradients(ws, b, kind), _gradients(ws, a, kind), f"{kind} gradients {b} vs {a}")

    return run


check("gradients_linear", "gradients of the PRT loss for a linear reward: against the closed form in NumPy, between "
      "backends", reference=gradients_linear_reference, pair=_gradients_pair("linear"))
check("gradients_transformer", "gradients of the PRT loss for a transformer reward, between backends",
      pair=_gradients_pair("transformer"))
check("gradients_twin_lora", "gradients of the PRT loss for a LoRA twin's adapter, between backends",
      pair=_gradients_pair("lora"))


# ---------------------------------------------------------------------------------------------- composition
def _composed(ws: Workspace, name: str, lora: bool):
    """(composed log-probs of the full forward, NumPy's composition of the same base and reward logits)."""
    def run():
        b = ws.backend(name)
        model = ws.prt_model(name, lora)
        x = b.asarray(_ids(ws))
        got = np64(b, model(x).logprobs)
        out = model.target.forward(x, hidden=True)
        rewards = [np64(b, r.forward(x, source_hidden=out.hidden if r.reads_source_hidden else None))
                   for r in model.rewards]
        want = PRTComposer(tuple(model.lams), model.vocab_size)(np64(b, out.logits), *rewards)
        return got, want

    return ws.memo(("composed", name, lora), run)


def composed_reference(ws, a):
    got, want = _composed(ws, a, ws.uses_lora(a))
    return [compare(got, want, what=f"composed log-probs {a} vs NumPy", atol=TOL_REFERENCE, scaled=False)]


def composed_pair(ws, a, b):
    lora = ws.uses_lora(a, b)
    return [compare(_composed(ws, b, lora)[0], _composed(ws, a, lora)[0], what=f"composed log-probs {b} vs {a}",
                    atol=TOL_LOGPROBS, scaled=False)]


check("composed_logprobs", "log_softmax(base) + Σ rᵢ/λᵢ with a transformer reward and (where both have 'lora') a LoRA "
      "twin", reference=composed_reference, pair=composed_pair)


# ---------------------------------------------------------------------------------------------- decoding
def _greedy(ws: Workspace, name: str, lora: bool) -> list[int]:
    def run():
        b = ws.backend(name)
        model = ws.prt_model(name, lora)
        steps = decode(model.scorers(), model.active_composer(), Sampler(), ws.prompt_ids(), xp=b.xp,
                       max_tokens=GENERATION_TOKENS, to_backend=b.asarray, eos_ids=(), tokenizer=None)
        return [s.token for s in steps]

    return ws.memo(("greedy", name, lora), run)


def _margin(ws, name, lora, prefix) -> float:
    """Top-2 gap of the composed log-probs after `prefix` (full forward)."""
    b = ws.backend(name)
    lp = np64(b, ws.prt_model(name, lora)(b.asarray([prefix])).logprobs)[0, -1]
    top = np.sort(lp)[-2:]
    return float(top[1] - top[0])


def greedy_pair(ws, a, b):
    lora = ws.uses_lora(a, b)
    ta, tb = _greedy(ws, a, lora), _greedy(ws, b, lora)
    differing = sum(x != y for x, y in zip(ta, tb)) + abs(len(ta) - len(tb))
    if not differing:
        return [Measure(0.0, 0.0, f"{len(ta)} greedy tokens identical")]
    k = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
    prefix = ws.prompt_ids() + ta[:k]
    where = (f"{differing} of {GENERATION_TOKENS} tokens differ, first at step {k}: {a} chose "
             f"{ta[k] if k < len(ta) else None}, {b} chose {tb[k] if k < len(tb) else None}; top-2 log-prob gap there "
             f"{_margin(ws, a, lora, prefix):.2e} ({a}), {_margin(ws, b, lora, prefix):.2e} ({b})")
    return [Measure(float(differing), 0.0, where)]


check("greedy_generation", f"greedy decoding of {GENERATION_TOKENS} tokens (prtcore's loop, EOS ignored) gives the "
      "same tokens", pair=greedy_pair)


def _trace(ws: Workspace, name: str, lora: bool, chunk: int = 1):
    """Along the fixed token path (prompt, then a fixed continuation fed `chunk` tokens at a time through the
    caches): [(position, composed log-probs, filtered log-probs of SAMPLER, NumPy's filtering of the same)]."""
    def run():
        b = ws.backend(name)
        model = ws.prt_model(name, lora)
        composer, scorers = model.active_composer(), model.scorers()
        path, prompt = ws.trace_ids(), len(ws.prompt_ids())
        out, pos = [], prompt
        logits = [s(b.asarray([path[:prompt]])) for s in scorers]
        while True:
            lp = composer(*logits, xp=b.xp)
            history = path[:pos]
            filtered = SAMPLER.filtered(lp, history, xp=b.xp)
            lp64 = np64(b, lp)
            out.append((pos - 1, lp64[0], np64(b, filtered)[0], SAMPLER.filtered(lp64, history)[0]))
            if pos >= len(path):
                return out
            step = path[pos:pos + chunk]
            logits = [s(b.asarray([step])) for s in scorers]
            pos += len(step)

    return ws.memo(("trace", name, lora, chunk), run)


def _probs(filtered: np.ndarray) -> np.ndarray:
    with np.errstate(under="ignore"):
        return np.exp(filtered)


def sampling_reference(ws, a):
    trace = _trace(ws, a, ws.uses_lora(a))
    got = np.stack([_probs(t[2]) for t in trace])
    want = np.stack([_probs(t[3]) for t in trace])
    return [compare(got, want, what=f"filtered probabilities {a} vs NumPy [step, token]", atol=TOL_REFERENCE,
                    scaled=False)]


def sampling_pair(ws, a, b):
    lora = ws.uses_lora(a, b)
    ga = np.stack([_probs(t[2]) for t in _trace(ws, a, lora)])
    gb = np.stack([_probs(t[2]) for t in _trace(ws, b, lora)])
    return [compare(gb, ga, what=f"filtered probabilities {b} vs {a} [step, token]", atol=TOL_LOGPROBS, scaled=False)]


check("sampling_distribution", "seeded sampling's distribution (Sampler.filtered: temperature, top-k, top-p, min-p, "
      "repetition penalty) at each step of a fixed path", reference=sampling_reference, pair=sampling_pair)


def cached_self(ws, a):
    lora = ws.uses_lora(a)
    full = _composed(ws, a, lora)[0][0]
    out = []
    for chunk in (1, 3):
        trace = _trace(ws, a, lora, chunk)
        got = np.stack([t[1] for t in trace])
        want = np.stack([full[t[0]] for t in trace])
        out.append(compare(got, want, what=f"composed log-probs, cached ({chunk} token(s) a step) vs full forward "
                                            "[step, token]", atol=TOL_LOGPROBS, scaled=False))
    return out


check("cached_decoding", "incremental decoding through the caches (base, transformer reward, LoRA twin) equals the "
      "full forward", self=cached_self)


def batched_self(ws, a):
    """Left-padded batch with attention_mask/position_ids (capability "batched") against one prompt at a time."""
    ws.require(a, "batched")
    b = ws.backend(a)
    lora = ws.uses_lora(a)
    model = ws.prt_model(a, lora)
    prompt = ws.prompt_ids()
    rows = [prompt[: max(2, len(prompt) // 2)], prompt, prompt[1:]]
    pad = getattr(model.tokenizer, "pad_token_id", None)
    pad = 0 if pad is None else int(pad)
    width = max(len(r) for r in rows)
    ids = np.array([[pad] * (width - len(r)) + list(r) for r in rows], dtype=np.int64)
    mask = np.array([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=np.int64)
    positions = np.maximum(np.cumsum(mask, axis=-1) - 1, 0)
    caches = [model.target.make_cache()] + [r.make_cache() for r in model.rewards]
    steps = 6

    def step(new_ids, mask, positions):
        m, p = b.xp.asarray(mask), b.xp.asarray(positions)
        out = model.target.forward(b.asarray(new_ids.tolist()), caches[0], hidden=True, attention_mask=m, position_ids=p)
        logits = [out.logits[:, -1]]
        for reward, source, cache in zip(model.rewards, model.sources, caches[1:]):
            hidden = out.hidden if source is not None and reward.reads_source_hidden else None
            logits.append(reward.forward(b.asarray(new_ids.tolist()), cache, source_hidden=hidden, attention_mask=m,
                                         position_ids=p)[:, -1])
        return np64(b, model.active_composer()(*logits, xp=b.xp))

    batched_lp, batched_tokens = [], []
    lp = step(ids, mask, positions)
    for _ in range(steps):
        batched_lp.append(lp)
        tokens = lp.argmax(-1)
        batched_tokens.append(tokens)
        mask = np.concatenate([mask, np.ones((len(rows), 1), dtype=np.int64)], axis=1)
        positions = positions[:, -1:] + 1
        lp = step(tokens[:, None].astype(np.int64), mask, positions)
    batched_lp = np.stack(batched_lp, axis=1)  # (rows, steps, N)
    batched_tokens = np.stack(batched_tokens, axis=1)

    out = []
    for i, row in enumerate(rows):
        scorers, composer = model.scorers(), model.active_composer()
        logits = [s(b.asarray([list(row)])) for s in scorers]
        single_lp, single_tokens = [], []
        for _ in range(steps):
            lp = np64(b, composer(*logits, xp=b.xp))[0]
            single_lp.append(lp)
            token = int(lp.argmax())
            single_tokens.append(token)
            logits = [s(b.asarray([[token]])) for s in scorers]
        differing = int(np.sum(np.asarray(single_tokens) != batched_tokens[i]))
        out.append(Measure(float(differing), 0.0, f"row {i} (length {len(row)} of {width}): {differing} of {steps} "
                                                   "greedy tokens differ from decoding it alone"))
        out.append(compare(batched_lp[i], np.stack(single_lp), what=f"row {i} composed log-probs batched vs alone "
                                                                    "[step, token]", atol=TOL_LOGPROBS, scaled=False))
    return out


check("batched_decoding", "a left-padded batch (attention_mask, position_ids; capability 'batched') decodes as each "
      "prompt alone", self=batched_self)


# ---------------------------------------------------------------------------------------------- training round trip
def _round_trip(kind):
    def run(ws, a, b):
        from ..artifacts import RewardArtifact

        ws.require(a, "train")
        if kind == "lora":
            ws.require(a, "lora")
            ws.require(b, "lora")
        path = ws.trained(a, kind)
        artifact = RewardArtifact.open(path)
        tensors = artifact.tensors(artifact.meta["weights"][-1])
        # what starts at zero: the linear head, LoRA's B matrices
        started_zero = [k for k in tensors if k == "head.weight" or "lora_B" in k or k.endswith("lora_b")]
        out = []
        if not started_zero or not any(np.any(tensors[k]) for k in started_zero):
            out.append(Measure(math.inf, 0.0, f"training by {a} left the reward at its zero-initialised start"))
        reward_a, source_a = ws.load_reward(a, kind, path)
        want = _reward_logits(ws, a, reward_a, source_a, _ids(ws))
        reward_b, source_b = ws.load_reward(b, kind, path)
        got = _reward_logits(ws, b, reward_b, source_b, _ids(ws))
        out.append(compare(got, want, what=f"{kind} reward trained by {a} (3 steps), logits in {b} vs {a}",
                           atol=TOL_LOGITS))
        return out

    return run


check("round_trip_linear", "a linear reward trained 3 steps by one backend (prtcore.training) gives the same logits "
      "in the other", ordered=_round_trip("linear"))
check("round_trip_twin_lora", "a LoRA twin trained 3 steps by one backend gives the same logits in the other",
      ordered=_round_trip("lora"))
