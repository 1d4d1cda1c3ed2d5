"""The blocks a LoRA twin shares with its source, computed once per training step.

A LoRA twin adapts the source's own model in place (prt_mlx.twin), and its LoRA layers sit in the last blocks.
The blocks before the first adapted one compute the same states for the source's pass and the twin's (the same
frozen weights, the same tokens): the source's pass records the state after them, and the twin's pass starts from
it, its earlier blocks skipped. The trunk's block list is shadowed by an instance attribute for one call (as
`prt_mlx.base.forward_with_hidden` shadows the trunk), so the parameter tree is untouched.
"""

from __future__ import annotations

import contextlib

import mlx.core as mx
import mlx.nn as nn

from prtcore.errors import BackendError

from .base import trunk_owner


class _StandIn:
    """A block replaced for one call by `fn`; its attributes (attention type, layer index) and its class (trunks
    choose a block's mask with isinstance) are the block's."""

    __class__ = property(lambda self: type(self._block))

    def __init__(self, block: nn.Module, fn):
        self._block, self._fn = block, fn

    def __call__(self, x, *args, **kwargs):
        return self._fn(x, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._block, name)


class SharedBlocks:
    """The first `count` blocks of `trunk`, shared by the source's pass (`recording`) and the twin's (`replaying`)."""

    def __init__(self, trunk: nn.Module, count: int):
        self.trunk, self.count, self.state = trunk, count, None

    @contextlib.contextmanager
    def _shadowed(self, last, *, skip: bool):
        """The block list with the last shared block replaced by `last`, and the ones before it skipped if `skip`."""
        blocks, n = self.trunk["layers"], self.count
        first = [_StandIn(b, lambda x, *args, **kwargs: x) for b in blocks[:n - 1]] if skip else blocks[:n - 1]
        object.__setattr__(self.trunk, "layers", [*first, _StandIn(blocks[n - 1], last), *blocks[n:]])
        try:
            yield
        finally:
            object.__delattr__(self.trunk, "layers")

    def recording(self):
        """Within: the model's pass records the state after the shared blocks."""
        block, calls = self.trunk["layers"][self.count - 1], []

        def record(x, *args, **kwargs):
            out = block(x, *args, **kwargs)
            calls.append(1)
            # not shared: a block with other outputs than one array, a trunk running its blocks more than once
            self.state = out if isinstance(out, mx.array) and len(calls) == 1 else None
            return out

        return self._shadowed(record, skip=False)

    def replaying(self):
        """Within: the model's pass starts from the recorded state (a full pass where none was recorded)."""
        state = self.state
        if state is None:
            return contextlib.nullcontext()
        return self._shadowed(lambda x, *args, **kwargs: state, skip=True)


def shared_blocks(reward, source) -> SharedBlocks | None:
    """The blocks a LoRA twin sharing `source`'s model leaves unadapted before its first LoRA layer, or None (no
    such block, another reward kind, a model without a `layers` list in its trunk)."""
    if not getattr(reward, "shared", False) or getattr(reward, "module", None) is not source.model:
        return None
    try:
        trunk = trunk_owner(source.model)["model"]
    except BackendError:  # no trunk to shadow blocks in: full passes
        return None
    blocks = trunk.get("layers") if isinstance(trunk, nn.Module) else None
    if not isinstance(blocks, list):
        return None
    adapted = {id(m) for m in reward.lora_layers}
    for i, block in enumerate(blocks):
        if any(id(m) in adapted for _, m in block.named_modules()):
            return SharedBlocks(trunk, i) if i > 0 else None
    return None
