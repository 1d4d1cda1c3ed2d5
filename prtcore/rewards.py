"""The backend-neutral definition of the `linear` and `transformer` reward kinds.

Every backend implements exactly this computation on tensors with exactly these names and shapes (PyTorch's
(out, in) layout for linear weights), so one artifact means the same reward everywhere. The NumPy version in
prtcore.testing.reference is the executable specification.

linear:       logits = hidden @ head.weightᵀ                                     head.weight (V, H), zero-init
transformer:  x = hidden @ proj_in.weightᵀ
              per block i:  x += o_proj(attention(rms_norm(x, norm1)))   causal, ALiBi, scale 1/sqrt(head_dim)
                            x += down_proj(silu(gate_proj(h)) * up_proj(h)),  h = rms_norm(x, norm2)
              logits = rms_norm(x, norm_out) @ head.weightᵀ                      head.weight zero-init
              rms_norm(x, w) = x / sqrt(mean(x², -1) + eps) * w
              ALiBi: score(i, j) += slope_h · (j − i) for key j ≤ query i (absolute positions, cache included)
Other weights start as N(0, 0.02²), norms as ones.
"""

from __future__ import annotations

import math

import numpy as np

from .config import RewardConfig


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


def reward_tensor_shapes(config: RewardConfig, hidden_size: int, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in reward.safetensors for a linear or transformer reward."""
    if config.kind == "linear":
        return {"head.weight": (vocab_size, hidden_size)}
    if config.kind != "transformer":
        raise ValueError(f"reward kind {config.kind!r} is stored as a model or adapter, not as reward tensors")
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


def check_reward_tensors(tensors: dict, config: RewardConfig, hidden_size: int | None, vocab_size: int | None,
                         where: str) -> None:
    """Raise ArtifactError naming the first missing, unexpected or mis-shaped tensor (a size None: any)."""
    from .artifacts import shape_fits
    from .errors import ArtifactError

    expected = reward_tensor_shapes(config, hidden_size, vocab_size)
    for name, shape in expected.items():
        if name not in tensors:
            raise ArtifactError(f"{where}: tensor {name!r} is missing")
        if not shape_fits(tuple(tensors[name].shape), shape):
            raise ArtifactError(f"{where}: tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {shape}")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ArtifactError(f"{where}: unexpected tensor {extra[0]!r}")


def count_reward_parameters(config: RewardConfig, hidden_size: int, vocab_size: int) -> int:
    return sum(math.prod(s) for s in reward_tensor_shapes(config, hidden_size, vocab_size).values())


def lora_targets(model_config: dict) -> dict[str, tuple[int, int]]:
    """(in, out) features of every linear in one block of a llama-style decoder, by module path.

    Used to count LoRA parameters without materialising weights.
    """
    h = model_config["hidden_size"]
    heads = model_config["num_attention_heads"]
    kv = model_config.get("num_key_value_heads") or heads
    head_dim = model_config.get("head_dim") or h // heads
    inter = model_config["intermediate_size"]
    return {
        "self_attn.q_proj": (h, heads * head_dim),
        "self_attn.k_proj": (h, kv * head_dim),
        "self_attn.v_proj": (h, kv * head_dim),
        "self_attn.o_proj": (heads * head_dim, h),
        "mlp.gate_proj": (h, inter),
        "mlp.up_proj": (h, inter),
        "mlp.down_proj": (inter, h),
    }


def count_lora_parameters(config: RewardConfig, model_config: dict) -> int:
    """Trainable parameters of a LoRA twin: rank × (in + out) per targeted linear per adapted layer."""
    lora = config.lora
    layers = model_config["num_hidden_layers"] if lora.num_layers == -1 else min(lora.num_layers, model_config["num_hidden_layers"])
    targets = lora_targets(model_config)
    keys = lora.keys or tuple(targets)
    per_layer = 0
    for key in keys:
        match = [t for t in targets if t == key or t.endswith("." + key)]
        for t in match:
            fan_in, fan_out = targets[t]
            per_layer += lora.rank * (fan_in + fan_out)
    return layers * per_layer
