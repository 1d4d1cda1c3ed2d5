"""The conformance checks of generation: composed log-probs, greedy decoding, the seeded sampler's distribution,
cached and batched decoding, and a reward trained by one backend read by another. `check` registers them in
CHECKS; prtcore.testing.checks imports this module.
"""

from __future__ import annotations

import math

import numpy as np

from ..sampling import PRTComposer, Sampler, decode
from .checks_forward import _ids, _reward_logits
from .measures import TOL_LOGITS, TOL_LOGPROBS, TOL_REFERENCE, Measure, compare, np64
from .registry import check
from .workspace import Workspace

GENERATION_TOKENS = 32
SAMPLER = Sampler(temperature=0.8, top_k=40, top_p=0.9, min_p=0.02, repetition_penalty=1.15, seed=7)


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
