"""The conformance checks of forward passes: base logits and hidden states, reward logits (against NumPy on the
backend's hidden states, and an artifact saved by one backend read by another), the PRT loss. `check` registers
them in CHECKS; prtcore.testing.checks imports this module.
"""

from __future__ import annotations

import math

import numpy as np

from ..objectives import prt_loss
from ..sampling import align_vocab
from . import reference
from .measures import TOL_LOGITS, Measure, compare, compare_loss, np64
from .registry import check
from .workspace import Workspace


# ---------------------------------------------------------------------------------------------- helpers
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


def _fused_lora(ws: Workspace, a: str):
    """PRTForCausalLM on the LoRA twin's own source: the twin, fused into its own copy of the weights, gives the
    unfused twin's logits, and the target (the same checkpoint) is left as it was."""
    from ..model import PRTForCausalLM

    ws.require(a, "lora")
    b = ws.backend(a)
    reward, source = ws.load_reward(a, "lora")
    want = _reward_logits(ws, a, reward, source, _ids(ws))
    model = PRTForCausalLM.from_pretrained(ws.checkpoint, ws.neutral_artifact("lora"), backend=b, **ws.load_options)
    got = _reward_logits(ws, a, model.rewards[0], None, _ids(ws))
    target = np64(b, model.target.forward(b.asarray(_ids(ws))).logits)
    return [compare(got, want, what=f"fused vs unfused LoRA twin logits ({a})", atol=TOL_LOGITS),
            compare(target, _base_outputs(ws, a)[0], what=f"target logits beside the fused twin ({a})", atol=0.0)]


check("reward_twin_lora_fused", "a LoRA twin as PRTForCausalLM runs it, fused into its own copy of the source: the "
      "unfused twin's logits, and the target untouched", self=_fused_lora)


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
