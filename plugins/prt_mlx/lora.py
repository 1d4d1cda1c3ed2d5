"""LoRA on mlx-lm models with mlx-lm's own layers, seeded, plus a zero-initialised output layer for twins."""

from __future__ import annotations

import contextlib

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from prtcore.config import LoRAConfig
from prtcore.errors import ArtifactError, ConfigError

_LINEAR_TYPES = (nn.Linear, nn.QuantizedLinear)


def block_linear_paths(block: nn.Module) -> list[str]:
    """Paths of the linear layers inside one block (what LoRA `keys` refer to)."""
    return [p for p, m in block.named_modules() if isinstance(m, _LINEAR_TYPES) or hasattr(m, "to_lora")]


def resolve_keys(model: nn.Module, keys) -> list[str] | None:
    """Keys given as in-block paths ("self_attn.q_proj") or short names ("q_proj") → in-block paths."""
    if keys is None:
        return None
    paths = block_linear_paths(model.layers[-1])
    out = []
    for key in keys:
        found = [p for p in paths if p == key or p.endswith("." + key)]
        if not found:
            raise ConfigError(f"LoRAConfig.keys: {key!r} matches no linear layer of a block (have: {', '.join(paths)})")
        out.extend(p for p in found if p not in out)
    return out


def num_adapted_layers(model: nn.Module, lora: LoRAConfig) -> int:
    n = len(model.layers)
    return n if lora.num_layers == -1 else min(lora.num_layers, n)


def apply_lora(model: nn.Module, lora: LoRAConfig, *, seed: int = 0) -> list[nn.Module]:
    """Replace the targeted linears of the last `num_layers` blocks with mlx-lm LoRA layers; returns them.

    `lora_a` is drawn U(±1/sqrt(in)) from `seed` (mlx-lm's init, with an explicit key), `lora_b` is zero.
    """
    from mlx_lm.tuner.utils import linear_to_lora_layers

    settings = {"rank": lora.rank, "scale": lora.scale, "dropout": lora.dropout, "keys": resolve_keys(model, lora.keys)}
    linear_to_lora_layers(model, num_adapted_layers(model, lora), settings)
    layers = lora_layers(model)
    key = mx.random.key(seed)
    for layer in layers:
        key, sub = mx.random.split(key)
        bound = 1.0 / np.sqrt(layer.lora_a.shape[0])
        layer.lora_a = mx.random.uniform(-bound, bound, layer.lora_a.shape, key=sub)
    return layers


def lora_layers(model: nn.Module) -> list[nn.Module]:
    return [m for _, m in model.named_modules() if "lora_a" in m and "lora_b" in m]


def adapter_tensors(model: nn.Module) -> dict[str, mx.array]:
    """lora_a / lora_b tensors by mlx-lm name (model.layers.{i}.….lora_a)."""
    return {k: v for k, v in tree_flatten(model.parameters()) if k.rsplit(".", 1)[-1] in ("lora_a", "lora_b")}


def load_adapter_tensors(model: nn.Module, tensors: dict, where: str) -> None:
    """Set adapter tensors (mlx-lm names), checking every name and shape first."""
    params = dict(tree_flatten(model.parameters()))
    for name, value in tensors.items():
        if name not in params:
            raise ArtifactError(f"{where}: tensor {name!r} is not a parameter of the adapted model")
        if tuple(params[name].shape) != tuple(np.shape(value)):
            raise ArtifactError(f"{where}: tensor {name!r} has shape {tuple(np.shape(value))}, expected {tuple(params[name].shape)}")
    model.load_weights([(k, mx.array(np.asarray(v, dtype=np.float32))) for k, v in tensors.items()], strict=False)


# ------------------------------------------------------------------------------------------------ output layer
HEAD = "prt_head"  # where a twin's own zero-initialised output layer lives inside the model


def add_zero_head(model: nn.Module, vocab_size: int, hidden_size: int) -> nn.Linear:
    head = nn.Linear(hidden_size, vocab_size, bias=False)
    head.weight = mx.zeros((vocab_size, hidden_size))
    setattr(model, HEAD, head)
    return head


@contextlib.contextmanager
def head_swapped(model: nn.Module, head: nn.Module | None):
    """Run the model's own head logic with `head` as its output layer (untied) for the duration."""
    if head is None:
        yield
        return
    args = getattr(model, "args", None)
    tied = getattr(args, "tie_word_embeddings", False)
    object.__setattr__(model, "lm_head", head)
    if tied:
        args.tie_word_embeddings = False
    try:
        yield
    finally:
        object.__delattr__(model, "lm_head")
        if tied:
            args.tie_word_embeddings = True


def check_head_swappable(model: nn.Module, head: nn.Module, model_type: str) -> None:
    """Refuse init "zero_head" for model classes that never read a separate output layer (e.g. gemma2)."""
    with head_swapped(model, head):
        out = model(mx.array([[0]]))
    if mx.any(out != 0).item():
        raise ConfigError(f"init='zero_head': mlx-lm's {model_type!r} model has no separate output layer to replace; use init='copy'")
