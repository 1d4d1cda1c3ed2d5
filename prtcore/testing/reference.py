"""NumPy reference implementations: the executable specification every backend is checked against.

Written for clarity in float64, independent of prtcore.arrays, so that a bug in the shared namespace code
cannot hide in both the implementation and its reference.
"""

from __future__ import annotations

import numpy as np

from ..config import RewardConfig
from ..rewards import alibi_slopes


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


def rms_norm(x, weight, eps):
    x = np.asarray(x, dtype=np.float64)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x):
    return x / (1.0 + np.exp(-x))


def linear_reward(tensors: dict, hidden) -> np.ndarray:
    return np.asarray(hidden, dtype=np.float64) @ np.asarray(tensors["head.weight"], dtype=np.float64).T


def transformer_reward(tensors: dict, hidden, config: RewardConfig) -> np.ndarray:
    """Reward logits (B, T, V) of the transformer reward for source hidden states (B, T, H)."""
    w = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
    x = np.asarray(hidden, dtype=np.float64) @ w["proj_in.weight"].T
    B, T, d = x.shape
    nh, hd = config.num_heads, config.head_dim
    slopes = alibi_slopes(nh).astype(np.float64)
    pos = np.arange(T)
    distance = pos[None, :] - pos[:, None]  # j - i
    bias = slopes[:, None, None] * distance[None]  # (nh, T, T)
    causal = np.where(distance > 0, -np.inf, 0.0)
    for i in range(config.num_layers):
        p = f"blocks.{i}."
        h = rms_norm(x, w[p + "norm1.weight"], config.norm_eps)

        def heads(m):
            return (h @ w[p + f"attn.{m}_proj.weight"].T).reshape(B, T, nh, hd).transpose(0, 2, 1, 3)

        q, k, v = heads("q"), heads("k"), heads("v")
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd) + bias[None] + causal
        probs = np.exp(log_softmax(scores))
        attn = (probs @ v).transpose(0, 2, 1, 3).reshape(B, T, d)
        x = x + attn @ w[p + "attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "norm2.weight"], config.norm_eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["norm_out.weight"], config.norm_eps)
    return x @ w["head.weight"].T


def reward_logits(tensors: dict, hidden, config: RewardConfig) -> np.ndarray:
    if config.kind == "linear":
        return linear_reward(tensors, hidden)
    if config.kind == "transformer":
        return transformer_reward(tensors, hidden, config)
    raise ValueError(f"no NumPy reference for reward kind {config.kind!r} (twin rewards are base models)")


def random_reward_tensors(config: RewardConfig, hidden_size: int, vocab_size: int, seed: int = 0, scale=0.1):
    """Random (non-zero) reward tensors of the right names and shapes, for equivalence checks."""
    from ..rewards import reward_tensor_shapes

    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in reward_tensor_shapes(config, hidden_size, vocab_size).items():
        if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm_out.weight":
            out[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
    return out
