"""Data-parallel training under `torchrun` or `accelerate launch` (DDP; FSDP when accelerate's config asks for it).

`--batch-size` is the global batch: accelerate splits every batch among the processes (`split_batches`), so a run
on N processes makes the optimiser steps of one process on the same data. The launcher's environment says how
many processes there are; only rank 0 writes artifacts and logs (prtcore.reporting.is_main_process).

Under FSDP the Trainer shards what it trains; `shard_frozen` shards the frozen source too (FSDP2), so that a base
larger than one GPU's memory fits: a forward pass gathers one decoder block at a time.
"""

from __future__ import annotations

import os

from prtcore.config import TrainingConfig
from prtcore.errors import TrainingError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def local_rank() -> int | None:
    """The process's index on its node under a launcher (its GPU), else None."""
    value = os.environ.get("LOCAL_RANK", "")
    return int(value) if value.isdigit() else None


def fsdp_requested() -> bool:
    """`accelerate launch --use_fsdp` (or an accelerate config with FSDP) started this process."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")


def shard_frozen(model) -> None:
    """FSDP2 over a frozen transformers model: every decoder block, then the rest (embeddings, final norm, head),
    sharded among the ranks. Calling the model gathers each block's weights for its forward and frees them after."""
    from torch.distributed.fsdp import fully_shard

    from .layers import decoder_layers

    _, layers = decoder_layers(model)
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)


def trainer_overrides(config: TrainingConfig, device, n_train: int) -> dict:
    """TrainingArguments that make N processes train like one: split global batches, drop an epoch's remainder
    (as prtcore.data does, so that no process pads its share), and gloo on CPU."""
    world = world_size()
    if config.batch_size % world:
        raise TrainingError(f"--batch-size {config.batch_size}: the global batch must divide evenly among the {world} "
                            "processes of the launch")
    out = {"accelerator_config": {"split_batches": True}, "dataloader_drop_last": n_train >= config.batch_size,
           "ddp_find_unused_parameters": False}  # every trainable parameter of a reward takes part in its forward
    if getattr(device, "type", "cpu") == "cpu":
        out["use_cpu"] = True  # else accelerate leaves a CPU launch undistributed
    return out
