"""What every reward kind stored as tensors shares: the names and shapes of reward.safetensors, their check, and
parameter counts, each asking the kind's definition (prtcore.kinds; the built-in ones in prtcore.kinds.linear,
.transformer and .twin).

Every backend implements a kind's computation on tensors with exactly the names and shapes `reward_tensor_shapes`
gives (PyTorch's (out, in) layout for linear weights), so one artifact means the same reward everywhere. The NumPy
forward of each kind (`RewardKind.reference`, also reachable as prtcore.testing.reference.reward_logits) is the
executable specification.

`alibi_slopes`, `lora_targets` and `count_lora_parameters` are the transformer's and the twin's, importable from
here as before.
"""

from __future__ import annotations

import math

from .errors import ArtifactError
from .kinds.transformer import alibi_slopes  # noqa: F401  (re-exported)
from .kinds.twin import count_lora_parameters, lora_targets  # noqa: F401  (re-exported)
from .plugins import reward_kind


def reward_tensor_shapes(config, hidden_size: int, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in reward.safetensors for a reward of `config` (a RewardConfig) whose kind
    is stored as tensors."""
    kind = reward_kind(config.kind)
    if kind.tensor_shapes is None:
        raise ValueError(f"reward kind {config.kind!r} is stored as a model or adapter, not as reward tensors")
    return kind.tensor_shapes(config, hidden_size, vocab_size)


def shape_fits(shape, expected) -> bool:
    """`shape` matches `expected`, where a None size matches any."""
    return len(shape) == len(expected) and all(e is None or e == s for s, e in zip(shape, expected))


def check_reward_tensors(tensors: dict, config, hidden_size: int | None, vocab_size: int | None,
                         where: str) -> None:
    """Raise ArtifactError naming the first missing, unexpected or mis-shaped tensor (a size None: any)."""
    expected = reward_tensor_shapes(config, hidden_size, vocab_size)
    for name, shape in expected.items():
        if name not in tensors:
            raise ArtifactError(f"{where}: tensor {name!r} is missing")
        if not shape_fits(tuple(tensors[name].shape), shape):
            raise ArtifactError(f"{where}: tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {shape}")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ArtifactError(f"{where}: unexpected tensor {extra[0]!r}")


def count_reward_parameters(config, hidden_size: int, vocab_size: int) -> int:
    return sum(math.prod(s) for s in reward_tensor_shapes(config, hidden_size, vocab_size).values())
