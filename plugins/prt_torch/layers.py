"""Where a transformers causal LM keeps its parts: the decoder blocks and the output layer (for LoRA's placement,
prt_torch.rewards; FSDP's sharding of a frozen base, prt_torch.distributed; parameter counts, prt_torch.counting)."""

from __future__ import annotations

from torch import nn

from prtcore.errors import ConfigError


def decoder_layers(model) -> tuple[str, nn.ModuleList]:
    """(name, module list) of the decoder blocks of a transformers causal LM."""
    n = model.config.get_text_config().num_hidden_layers
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if not found:
        raise ConfigError(f"cannot find the {n} decoder layers of {type(model).__name__} to place LoRA adapters")
    return min(found, key=lambda item: (not item[0].endswith("layers"), len(item[0])))


def head_name(model) -> str:
    head = model.get_output_embeddings()
    return next(name for name, m in model.named_modules() if m is head)
