"""Backend-neutral entry point for training a reward: load, check, then hand over to the backend's loop.

    summary = train_reward("models/base", "data/", "rewards/task", RewardConfig(kind="twin"),
                           TrainingConfig(iters=200), backend="mlx")

The output directory receives the reward artifact (the final weights), `best/` (the artifact with the best
validation loss), `checkpoint/` (weights, optimiser state, step and RNG for `resume=True`), metrics.jsonl,
loss_curve.png and summary.json.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .config import RewardConfig, TrainingConfig
from .data import batches_per_epoch, load_dataset
from .errors import TrainingError

MIN_FREE_BYTES = 64 * 2**20


def preflight_output_dir(output_dir: Path, needed_bytes: int = 0) -> None:
    """Refuse an output directory that cannot be written, or a disk without room, before training starts."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise TrainingError(f"{output_dir}: output path exists and is not a directory")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".prt-write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise TrainingError(f"{output_dir}: output directory is not writable ({e.strerror})") from None
    free = shutil.disk_usage(output_dir).free
    needed = max(MIN_FREE_BYTES, 3 * needed_bytes)  # final artifact, best artifact, checkpoint
    if free < needed:
        raise TrainingError(f"{output_dir}: only {free / 2**20:.0f} MiB free on disk, training needs about {needed / 2**20:.0f} MiB")


def resolve_iters(config: TrainingConfig, n_train: int) -> int:
    if config.iters is not None:
        return config.iters
    epochs = config.epochs or 1
    return epochs * batches_per_epoch(n_train, config.batch_size)


def train_reward(model, data_dir, output_dir, reward: RewardConfig, training: TrainingConfig, *,
                 backend=None, resume: bool = False, quantize: int | None = None, reporter=None, **load_options) -> dict:
    """Train a reward for base `model` on `data_dir`; returns the run summary."""
    from .plugins import get_backend
    from .reporting import TrainingReporter

    backend = get_backend(backend) if not hasattr(backend, "load_base") else backend
    output_dir = Path(output_dir)
    preflight_output_dir(output_dir)
    if quantize:
        load_options["quantize"] = quantize
    source = backend.load_base(model, **load_options)
    data = load_dataset(data_dir, source.tokenizer, max_seq_length=training.max_seq_length,
                        mask_prompt=training.mask_prompt)
    iters = resolve_iters(training, len(data["train"]))
    reward_model = backend.create_reward(reward, source, seed=training.seed)
    if reporter is None:
        reporter = TrainingReporter(output_dir, total_steps=iters, quiet=bool(os.environ.get("PRT_QUIET")), resume=resume)
    return backend.train(source, reward_model, data, training, output_dir, iters=iters, resume=resume, reporter=reporter)
