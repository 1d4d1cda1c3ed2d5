"""Guards: a non-finite loss or gradient stops the run naming the step and keeps the last good checkpoint; an
unwritable output directory or a full disk is reported before any model loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from prtcore.cli.main import main
from prtcore.errors import TrainingError
from prtcore.rundir import preflight as preflight_output_dir
from prtcore.training import checkpoint_step, trainer_checkpoints

from .conftest import BACKENDS


def train_argv(rws, backend, out, *extra):
    return ["train", "--backend", backend, "--model", str(rws["source"]), "--data", str(rws["data"]), "--output-dir",
            str(out), "--reward", "twin", "--lora-r", "4", "--num-layers", "2", "--batch-size", "4", "--seed", "0",
            "--steps-per-eval", "1000", "--val-batches", "1", *map(str, extra)]


def checkpoint_tensors(out: Path, backend: str) -> dict:
    if backend == "mlx":
        return load_file(str(out / "checkpoint" / "weights.safetensors"))
    return load_file(str(trainer_checkpoints(out / "checkpoint")[-1] / "adapter_model.safetensors"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_learning_rate_stops_naming_the_step_and_keeps_the_last_good_checkpoint(rws, backend, tmp_path, capsys,
                                                                                       monkeypatch):
    monkeypatch.setenv("PRT_QUIET", "1")
    out = tmp_path / "out"
    code = main(train_argv(rws, backend, out, "--iters", "8", "--save-every", "1", "--learning-rate", "1e30"))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "not finite" in err or "the loss is" in err, err
    step = int(err.split("step ", 1)[1].split(":", 1)[0])
    assert 1 <= step <= 8
    saved = checkpoint_step(out)
    assert saved is not None and saved < step  # the failing step never reached a checkpoint
    for name, tensor in checkpoint_tensors(out, backend).items():
        assert np.isfinite(tensor).all(), name
    assert not (out / "prt_config.json").exists()  # no final artifact from a failed run


def test_output_path_under_a_regular_file_is_refused_before_loading(rws, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(TrainingError, match="not writable|not a directory"):
        preflight_output_dir(blocker / "out")
    with pytest.raises(TrainingError, match="not a directory"):
        preflight_output_dir(blocker)
    # through the CLI: the model path does not exist, so reaching it would be a different error
    argv = train_argv(rws, BACKENDS[0], blocker / "out", "--iters", "1")
    argv[argv.index("--model") + 1] = str(tmp_path / "no-such-model")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not writable" in err and "no-such-model" not in err, err


def test_full_disk_is_refused_before_loading(rws, tmp_path, capsys, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1 << 20))
    with pytest.raises(TrainingError, match="1 MiB free"):
        preflight_output_dir(tmp_path / "out")
    argv = train_argv(rws, BACKENDS[0], tmp_path / "out2", "--iters", "1")
    argv[argv.index("--model") + 1] = str(tmp_path / "no-such-model")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "MiB free" in err and len(err.splitlines()) == 1, err
