"""Training checkpoints on disk, either backend's layout: which are complete, repair after a kill, the step a
resume continues from. Below both prtcore.training and prtcore.rundir."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


TRAINER_STATE = "trainer_state.json"


def trainer_checkpoint_complete(path) -> bool:
    """A transformers Trainer checkpoint directory written to the end. The Trainer writes `checkpoint-N` in
    place (weights, optimizer.pt, scheduler.pt, rng_state.pth, then trainer_state.json last), so a run killed
    while saving leaves one without a readable trainer_state.json or without its weights."""
    import json

    from .artifacts import check_safetensors
    from .errors import ArtifactError

    path = Path(path)
    try:
        state = json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict):
        return False
    weights = [path / n for n in ("adapter_model.safetensors", "model.safetensors") if (path / n).is_file()]
    if not weights or not all((path / n).is_file() for n in ("optimizer.pt", "scheduler.pt")):
        return False
    try:
        for w in weights:
            check_safetensors(w)
    except ArtifactError:
        return False
    return True


def trainer_checkpoints(root, *, remove_incomplete: bool = False) -> list[Path]:
    """The complete Trainer checkpoints (`checkpoint-N`) under `root`, oldest first; with `remove_incomplete`,
    half-written ones are deleted so that transformers never picks them."""
    root = Path(root)
    found = []
    for path in root.glob("checkpoint-*"):
        suffix = path.name.rsplit("-", 1)[-1]
        if not path.is_dir() or not suffix.isdigit():
            continue
        if trainer_checkpoint_complete(path):
            found.append(path)
        elif remove_incomplete:
            shutil.rmtree(path, ignore_errors=True)
    return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[-1]))


def _previous_dirs(path: Path) -> list[Path]:
    """Directories `prtcore.artifacts.replace_dir` set aside while replacing `path` (newest last); one that a
    running job removes while they are listed is left out."""
    dated = []
    for previous in path.parent.glob(f".{path.name}.old-*"):
        try:
            dated.append((previous.stat().st_mtime, previous))
        except FileNotFoundError:
            continue
    return [previous for _, previous in sorted(dated)]


def repair_checkpoint(output_dir) -> None:
    """Bring `output_dir/checkpoint` back to the last complete checkpoint after a killed run: restore the previous
    checkpoint if the kill fell between the two renames of a replacement, drop half-written staging directories
    (mlx layout) and half-written Trainer checkpoints (torch layout)."""
    root = Path(output_dir) / "checkpoint"
    if not root.parent.is_dir():
        return
    previous = [p for p in _previous_dirs(root) if (p / "state.json").is_file()]
    if not root.exists() and previous:
        os.replace(previous[-1], root)
    for stale in list(_previous_dirs(root)) + list(root.parent.glob(f".{root.name}.*.partial")):
        shutil.rmtree(stale, ignore_errors=True)
    if root.is_dir() and not (root / "state.json").exists():
        trainer_checkpoints(root, remove_incomplete=True)


def checkpoint_step(output_dir) -> int | None:
    """The step of the training checkpoint in `output_dir/checkpoint` (either backend's layout), or None."""
    import json

    root = Path(output_dir) / "checkpoint"
    states = [root / "state.json"] + [p / "state.json" for p in reversed(_previous_dirs(root)) if not root.exists()]
    for state in states:
        if state.is_file():  # mlx: checkpoint/state.json
            try:
                return int(json.loads(state.read_text(encoding="utf-8")).get("iteration", 0))
            except FileNotFoundError:  # replaced by a running job since it was listed
                continue
            except (ValueError, OSError, AttributeError):
                return 0
    steps = [int(p.name.rsplit("-", 1)[-1]) for p in trainer_checkpoints(root)]  # transformers
    return max(steps) if steps else None
