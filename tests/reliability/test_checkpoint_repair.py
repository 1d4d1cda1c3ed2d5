"""What a kill can leave behind, laid out by hand: resume picks the last complete checkpoint in both layouts."""

from __future__ import annotations

import json

import numpy as np

from prtcore.artifacts import save_numpy_tensors
from prtcore.training import checkpoint_step, repair_checkpoint, trainer_checkpoints


def _mlx_checkpoint(path, step):
    path.mkdir(parents=True)
    save_numpy_tensors(path / "weights.safetensors", {"w": np.full(3, step, np.float32)})
    save_numpy_tensors(path / "optimizer.safetensors", {"m": np.zeros(3, np.float32)})
    (path / "state.json").write_text(json.dumps({"iteration": step}))


def _trainer_checkpoint(path, step, *, upto="trainer_state.json"):
    path.mkdir(parents=True)
    files = ["adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"]
    for name in files[: files.index(upto) + 1]:
        if name.endswith(".safetensors"):
            save_numpy_tensors(path / name, {"w": np.full(3, step, np.float32)})
        elif name.endswith(".json"):
            (path / name).write_text(json.dumps({"global_step": step}))
        else:
            (path / name).write_bytes(b"PK\x03\x04")


def test_mlx_kill_between_the_two_renames_of_a_replacement(tmp_path):
    _mlx_checkpoint(tmp_path / ".checkpoint.old-4242", 6)  # `checkpoint` moved aside, the new one not yet in place
    _mlx_checkpoint(tmp_path / ".checkpoint.abc.partial", 7)
    assert checkpoint_step(tmp_path) == 6
    repair_checkpoint(tmp_path)
    assert checkpoint_step(tmp_path) == 6 and (tmp_path / "checkpoint" / "state.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_mlx_stale_copies_are_dropped_and_the_checkpoint_kept(tmp_path):
    _mlx_checkpoint(tmp_path / "checkpoint", 8)
    _mlx_checkpoint(tmp_path / ".checkpoint.old-1", 7)  # killed before the old copy was removed
    repair_checkpoint(tmp_path)
    assert checkpoint_step(tmp_path) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_torch_half_written_trainer_checkpoints_are_skipped_and_removed(tmp_path):
    root = tmp_path / "checkpoint"
    _trainer_checkpoint(root / "checkpoint-4", 4)
    _trainer_checkpoint(root / "checkpoint-5", 5, upto="rng_state.pth")  # killed before trainer_state.json
    _trainer_checkpoint(root / "checkpoint-6", 6, upto="optimizer.pt")
    (root / "checkpoint-7").mkdir()
    _trainer_checkpoint(root / "checkpoint-8", 8)
    (root / "checkpoint-8" / "trainer_state.json").write_text('{"global_st')  # torn
    assert [p.name for p in trainer_checkpoints(root)] == ["checkpoint-4"]
    assert checkpoint_step(tmp_path) == 4
    repair_checkpoint(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-4"]


def test_torch_truncated_weights_make_a_checkpoint_incomplete(tmp_path):
    root = tmp_path / "checkpoint"
    _trainer_checkpoint(root / "checkpoint-2", 2)
    _trainer_checkpoint(root / "checkpoint-3", 3)
    weights = root / "checkpoint-3" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])
    assert checkpoint_step(tmp_path) == 2


def test_a_set_aside_checkpoint_removed_while_listed_is_skipped(tmp_path, monkeypatch):
    """A reader (`checkpoint_step`, resume) racing a running job: a `.checkpoint.old-*` directory that the job removes
    between the listing and its stat is left out, not a FileNotFoundError."""
    import pathlib

    _mlx_checkpoint(tmp_path / ".checkpoint.old-1", 4)
    vanished = tmp_path / ".checkpoint.old-2"
    listed = pathlib.Path.glob

    def glob(self, pattern):
        yield from listed(self, pattern)
        if pattern.startswith(".checkpoint.old-"):
            yield vanished  # listed, then gone

    monkeypatch.setattr(pathlib.Path, "glob", glob)
    assert checkpoint_step(tmp_path) == 4
