"""The PRT training objective (Algorithm 1), written once against an array namespace.

    v    = log_softmax(base_logits) + reward_logits / λ
    loss = mean over masked tokens of  −log softmax(v)[target]   −   α · mean entropy of softmax(reward_logits)

Only the reward receives gradients; callers pass the base logits without gradient (stop_gradient / no_grad).
"""

from __future__ import annotations

import numpy

from .arrays import namespace
from .errors import ConfigError


def compose_logits(base_logits, reward_logits, lam=1.0, *, xp=numpy):
    """Unnormalised PRT logits v = log_softmax(base) + reward/λ."""
    ops = namespace(xp)
    return ops.log_softmax(base_logits) + reward_logits / lam


def _entropy(logits, ops):
    logp = ops.log_softmax(logits)
    p = ops.exp(logp)
    # p·log p is 0 where p is 0, also where log p is −inf.
    plogp = ops.where(p > 0, p * ops.where(p > 0, logp, ops.full_like(logp, 0.0)), ops.full_like(p, 0.0))
    return -ops.sum(plogp, axis=-1)


def check_prt_loss_args(base_logits, reward_logits, lam, entropy_coeff, *,
                        align_hint: str = " (prtcore.sampling.align_vocab)") -> None:
    """Refuse a λ that is not > 0 (nan included), a negative entropy coefficient, or logits of different shapes."""
    if not lam > 0:  # also refuses nan
        raise ConfigError(f"prt_loss: lam={lam!r} must be > 0")
    if not entropy_coeff >= 0:
        raise ConfigError(f"prt_loss: entropy_coeff={entropy_coeff!r} must be >= 0")
    if tuple(base_logits.shape) != tuple(reward_logits.shape):
        raise ConfigError(
            f"prt_loss: base logits {tuple(base_logits.shape)} and reward logits {tuple(reward_logits.shape)} "
            f"differ in shape; align both to the shared vocabulary first{align_hint}"
        )


def prt_loss(base_logits, reward_logits, targets, mask=None, *, lam=1.0, entropy_coeff=0.0, xp=numpy):
    """PRT loss over `(..., V)` logits and `(...)` integer targets.

    `mask` (same shape as targets, 0/1 or bool) selects the tokens that count; None counts every token.
    Returns `(loss, metrics)`; metrics holds arrays `ntokens`, `accuracy` and `entropy` (the mean entropy of
    softmax(reward) over the masked tokens), in the namespace's array type.
    """
    check_prt_loss_args(base_logits, reward_logits, lam, entropy_coeff)
    ops = namespace(xp)
    logp = ops.log_softmax(compose_logits(base_logits, reward_logits, lam, xp=ops))
    target_logp = ops.squeeze(ops.take_along_axis(logp, targets[..., None], axis=-1), -1)
    if mask is None:
        weights = ops.full_like(target_logp, 1.0)
    else:
        weights = ops.astype_float32(mask)
    ntokens = ops.sum(weights)
    denom = ops.where(ntokens > 0, ntokens, ops.full_like(ntokens, 1.0))
    # Masked positions are excluded with `where`, so a −inf there cannot turn the sum into nan.
    selected = weights > 0
    nll = ops.sum(ops.where(selected, -target_logp, ops.full_like(target_logp, 0.0))) / denom
    entropy = ops.sum(ops.where(selected, _entropy(reward_logits, ops), ops.full_like(target_logp, 0.0))) / denom
    hits = ops.astype_float32(ops.argmax(logp, axis=-1) == targets)
    accuracy = ops.sum(hits * weights) / denom
    loss = nll - entropy_coeff * entropy if entropy_coeff else nll
    return loss, {"ntokens": ntokens, "accuracy": accuracy, "entropy": entropy, "nll": nll}
