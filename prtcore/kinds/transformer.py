"""The `transformer` reward kind (PRT2): a small causal transformer over the frozen source's last hidden states.

    x = hidden @ proj_in.weightᵀ
    per block i:  x += o_proj(attention(rms_norm(x, norm1)))   causal, ALiBi, scale 1/sqrt(head_dim)
                  x += down_proj(silu(gate_proj(h)) * up_proj(h)),  h = rms_norm(x, norm2)
    logits = rms_norm(x, norm_out) @ head.weightᵀ                      head.weight zero-init
    rms_norm(x, w) = x / sqrt(mean(x², -1) + eps) * w
    ALiBi: score(i, j) += slope_h · (j − i) for key j ≤ query i (absolute positions, cache included)

Other weights start as N(0, 0.02²), norms as ones. Settings: RewardConfig's d_model, num_layers, num_heads, ffn_dim
and norm_eps (d_model divisible by num_heads).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError
from . import RewardKind

FIELDS = ("d_model", "num_layers", "num_heads", "ffn_dim", "norm_eps")


def alibi_slopes(num_heads: int) -> np.ndarray:
    """Per-head ALiBi slopes (Press et al.): geometric from 2^(-8/n); non-powers of two interleave."""

    def power_of_two(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_two(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: num_heads - closest]
    return np.asarray(slopes, dtype=np.float32)


def validate(config) -> None:
    if config.d_model % config.num_heads:
        raise ConfigError(f"RewardConfig.d_model={config.d_model}: must be divisible by num_heads={config.num_heads}")


def tensor_shapes(config, hidden_size: int, vocab_size: int) -> dict[str, tuple[int, ...]]:
    d, f = config.d_model, config.ffn_dim
    shapes = {"proj_in.weight": (d, hidden_size)}
    for i in range(config.num_layers):
        p = f"blocks.{i}."
        shapes.update({
            p + "norm1.weight": (d,),
            p + "attn.q_proj.weight": (d, d),
            p + "attn.k_proj.weight": (d, d),
            p + "attn.v_proj.weight": (d, d),
            p + "attn.o_proj.weight": (d, d),
            p + "norm2.weight": (d,),
            p + "mlp.gate_proj.weight": (f, d),
            p + "mlp.up_proj.weight": (f, d),
            p + "mlp.down_proj.weight": (d, f),
        })
    shapes["norm_out.weight"] = (d,)
    shapes["head.weight"] = (vocab_size, d)
    return shapes


def _log_softmax(x):
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def rms_norm(x, weight, eps):
    x = np.asarray(x, dtype=np.float64)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x):
    return x / (1.0 + np.exp(-x))


def reference(tensors: dict, hidden, config) -> np.ndarray:
    """Reward logits (B, T, V), float64, of the transformer reward for source hidden states (B, T, H)."""
    w = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
    x = np.asarray(hidden, dtype=np.float64) @ w["proj_in.weight"].T
    B, T, d = x.shape
    nh, hd = config.num_heads, config.d_model // config.num_heads
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
        with np.errstate(divide="ignore"):
            probs = np.exp(_log_softmax(scores))
        attn = (probs @ v).transpose(0, 2, 1, 3).reshape(B, T, d)
        x = x + attn @ w[p + "attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "norm2.weight"], config.norm_eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["norm_out.weight"], config.norm_eps)
    return x @ w["head.weight"].T


TRANSFORMER = RewardKind(
    name="transformer",
    description="a small causal transformer over the frozen source model's last hidden states",
    fields=FIELDS,
    validate=validate,
    tensor_shapes=tensor_shapes,
    reference=reference,
)
