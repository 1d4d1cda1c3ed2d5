"""NumPy reference implementations: the executable specification every backend is checked against.

Written for clarity in float64, independent of prtcore.arrays, so that a bug in the shared namespace code
cannot hide in both the implementation and its reference. The reward forwards are each kind's own
(`RewardKind.reference`, prtcore.kinds); `reward_logits` finds the one of a config's kind.
"""

from __future__ import annotations

import numpy as np

from ..config import RewardConfig
from ..kinds.linear import reference as _linear_reference
from ..kinds.transformer import reference as transformer_reward  # noqa: F401  (importable from here as before)
from ..kinds.transformer import rms_norm, silu  # noqa: F401  (importable from here as before)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def prt_loss(base_logits, reward_logits, targets, mask=None, *, lam=1.0, entropy_coeff=0.0):
    """Direct evaluation of the PRT loss, one token at a time."""
    base = np.asarray(base_logits, dtype=np.float64).reshape(-1, np.shape(base_logits)[-1])
    reward = np.asarray(reward_logits, dtype=np.float64).reshape(base.shape)
    targets = np.asarray(targets).reshape(-1)
    mask = np.ones(len(targets)) if mask is None else np.asarray(mask, dtype=np.float64).reshape(-1)
    nll = ent = hits = 0.0
    count = mask.sum()
    for row in range(len(targets)):
        if not mask[row]:
            continue
        v = log_softmax(base[row]) + reward[row] / lam
        logp = log_softmax(v)
        nll -= logp[targets[row]]
        rho = np.exp(log_softmax(reward[row]))
        nz = rho > 0
        ent -= np.sum(rho[nz] * np.log(rho[nz]))
        hits += float(np.argmax(logp) == targets[row])
    denom = count if count else 1.0
    loss = nll / denom - entropy_coeff * ent / denom
    return loss, {"ntokens": count, "nll": nll / denom, "entropy": ent / denom, "accuracy": hits / denom}


def linear_reward(tensors: dict, hidden) -> np.ndarray:
    return _linear_reference(tensors, hidden)


def reward_logits(tensors: dict, hidden, config: RewardConfig) -> np.ndarray:
    """Reward logits (B, T, V), float64, of a reward stored as tensors: its kind's NumPy forward."""
    kind = config.reward_kind
    if kind.reference is None:
        raise ValueError(f"no NumPy reference for reward kind {config.kind!r} (stored as a {kind.stored_as}: "
                         "a base model or adapter)")
    return np.asarray(kind.reference(tensors, hidden, config), dtype=np.float64)


def random_reward_tensors(config: RewardConfig, hidden_size: int, vocab_size: int, seed: int = 0, scale=0.1):
    """Random (non-zero) reward tensors of the right names and shapes, for equivalence checks (norm weights near
    one: names ending in norm1.weight, norm2.weight or norm.weight, and norm_out.weight)."""
    from ..rewards import reward_tensor_shapes

    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in reward_tensor_shapes(config, hidden_size, vocab_size).items():
        if name.endswith(("norm1.weight", "norm2.weight", "norm.weight")) or name == "norm_out.weight":
            out[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
    return out
