"""The definition of the "mlp" reward kind: shapes, the NumPy reference forward (its executable specification), and
where its backend implementations live."""

from __future__ import annotations

import numpy as np

from prtcore.errors import ConfigError
from prtcore.kinds import RewardKind

MAX_WIDTH = 1 << 16


def validate(config) -> None:
    if config.d_model > MAX_WIDTH:
        raise ConfigError(f"RewardConfig.d_model={config.d_model}: an mlp reward is at most {MAX_WIDTH} wide")


def tensor_shapes(config, hidden_size: int, vocab_size: int) -> dict[str, tuple[int, ...]]:
    d = config.d_model
    return {"fc.weight": (d, hidden_size), "fc.bias": (d,), "head.weight": (vocab_size, d)}


def reference(tensors: dict, hidden, config) -> np.ndarray:
    """Reward logits (B, T, V), float64, for source hidden states (B, T, H)."""
    w = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
    x = np.asarray(hidden, dtype=np.float64) @ w["fc.weight"].T + w["fc.bias"]
    return (x / (1.0 + np.exp(-x))) @ w["head.weight"].T


MLP = RewardKind(
    name="mlp",
    description="a two-layer MLP (SiLU) over the frozen source model's last hidden states",
    fields=("d_model",),
    validate=validate,
    tensor_shapes=tensor_shapes,
    reference=reference,
    implementations={"mlx": "prt_kind_example.mlx_mlp:MLP", "torch": "prt_kind_example.torch_mlp:MLP"},
)
