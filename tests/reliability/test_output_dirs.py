"""Output directories are transactions (prtcore.rundir): inputs are never written into, a previous run is replaced
only with --overwrite and only after the new run's inputs are checked (and comes back when the new run fails or is
killed before its first checkpoint), a resume with other settings is refused, and a lock keeps out a second run.
Every refusal is one line, and every file that existed before is byte for byte the same after."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prtcore.cli.main import main
from prtcore.rundir import RUN_RECORD

from .conftest import BACKENDS, start

ARGS = ["--reward", "linear", "--batch-size", "4", "--iters", "3", "--save-every", "1", "--val-batches", "1",
        "--seed", "0"]


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under `roots` (hidden ones too), by path."""
    out = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")) if Path(root).is_dir() else [Path(root)]:
            if path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def argv(rws, backend, out, *extra, model=None, data=None):
    return ["train", "--backend", backend, "--model", str(model or rws["source"]), "--data", str(data or rws["data"]),
            "--output-dir", str(out), *ARGS, *map(str, extra)]


def prt(args, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(map(str, args)))
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    return code, err


def refused(args, capsys, *fragments) -> str:
    code, err = prt(args, capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture(scope="module")
def finished(rws, tmp_path_factory):
    """A finished run per backend, to copy."""
    runs = {}
    for backend in BACKENDS:
        out = tmp_path_factory.mktemp("finished") / backend
        code = subprocess.run([str(Path(sys.executable).with_name("prt")), *argv(rws, backend, out)],
                              env={**os.environ, "PRT_QUIET": "1"}, capture_output=True, text=True)
        assert code.returncode == 0, code.stderr
        runs[backend] = out
    return runs


def copy_run(finished, backend, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished[backend], out)
    return out


# ------------------------------------------------------------------------------------------------ inputs
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_output_that_is_inside_or_holds_an_input_is_refused(rws, backend, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PRT_QUIET", "1")
    before = snapshot(rws["source"], rws["data"])
    full_fine_tune = ["train", "--backend", backend, "--method", "sft", "--fine-tune-type", "full", "--model",
                      rws["source"], "--data", rws["data"], "--output-dir", rws["source"], "--iters", "1"]
    refused(full_fine_tune, capsys, "is or lies inside the input --model")
    refused(argv(rws, backend, rws["source"] / "sub"), capsys, "is or lies inside the input --model")
    refused(argv(rws, backend, rws["data"]), capsys, "is or lies inside the input --data")
    refused(argv(rws, backend, rws["source"].parent), capsys, "holds the input")
    link = tmp_path / "link-to-model"
    link.symlink_to(rws["source"])
    refused(argv(rws, backend, link), capsys, "is or lies inside the input --model")
    assert snapshot(rws["source"], rws["data"]) == before
    assert not list(rws["source"].parent.glob(".*prt-lock"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_directory_prt_did_not_write_as_a_run_is_refused(rws, finished, backend, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PRT_QUIET", "1")
    model_copy = tmp_path / "a-model"
    shutil.copytree(rws["source"], model_copy)
    artifact = tmp_path / "an-artifact"  # a reward artifact on its own (best/ of a run), not a run
    shutil.copytree(finished[backend] / "best", artifact)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("precious")
    before = snapshot(tmp_path)
    for target in (model_copy, artifact, notes):
        for flags in ((), ("--overwrite",), ("--resume",)):
            refused(argv(rws, backend, target, *flags), capsys, "holds files prt did not write as a training run")
    assert snapshot(tmp_path) == before
    hidden_only = tmp_path / "hidden-only"
    hidden_only.mkdir()
    (hidden_only / ".gitkeep").write_text("")
    code, err = prt(argv(rws, backend, hidden_only), capsys)
    assert code == 0, err  # an empty directory, as far as a user can see
    assert (hidden_only / ".gitkeep").exists() and (hidden_only / RUN_RECORD).exists()


# ------------------------------------------------------------------------------------------------ previous runs
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_previous_run_is_kept_unless_resume_or_overwrite_and_until_the_inputs_check(rws, finished, backend, tmp_path,
                                                                                     capsys, monkeypatch):
    monkeypatch.setenv("PRT_QUIET", "1")
    out = copy_run(finished, backend, tmp_path)
    without_checkpoint = tmp_path / "artifact-no-checkpoint"
    shutil.copytree(out, without_checkpoint)
    shutil.rmtree(without_checkpoint / "checkpoint")
    before = snapshot(tmp_path)
    refused(argv(rws, backend, out), capsys, "holds the checkpoint of a previous run (step 3)", "--overwrite")
    refused(argv(rws, backend, without_checkpoint), capsys, "holds a previous run", "--resume", "--overwrite")
    refused(argv(rws, backend, out, "--overwrite", data=tmp_path / "no-data"), capsys, "no-data")
    refused(argv(rws, backend, out, "--overwrite", model=tmp_path / "no-model"), capsys, "no-model")
    refused(argv(rws, backend, out, "--overwrite", "--resume"), capsys, "choose one")
    refused(argv(rws, backend, out, "--resume", "--learning-rate", "0.5", "--reward", "transformer"), capsys,
            "training.learning_rate", "reward.kind 'linear' → 'transformer'")
    assert snapshot(tmp_path) == before
    assert prt(argv(rws, backend, out, "--resume"), capsys)[0] == 0  # the same settings: resumes (finished: no step)
    assert json.loads((out / "prt_config.json").read_text())["training"] == \
        json.loads((finished[backend] / "prt_config.json").read_text())["training"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_run_of_an_earlier_release_resumes_only_with_its_reward_settings(rws, finished, backend, tmp_path, capsys,
                                                                         monkeypatch):
    """Without prt_run.json, the reward settings its artifact records are checked."""
    monkeypatch.setenv("PRT_QUIET", "1")
    out = copy_run(finished, backend, tmp_path)
    (out / RUN_RECORD).unlink()
    before = snapshot(out)
    refused(argv(rws, backend, out, "--resume", "--reward", "transformer"), capsys, "reward.kind 'linear' → 'transformer'")
    assert snapshot(out) == before
    assert prt(argv(rws, backend, out, "--resume"), capsys)[0] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_overwrite_replaces_the_whole_previous_run(rws, finished, backend, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PRT_QUIET", "1")
    out = copy_run(finished, backend, tmp_path)
    (out / "from-the-old-run.txt").write_text("old")
    assert prt(argv(rws, backend, out, "--overwrite", "--seed", "1", "--iters", "2"), capsys)[0] == 0
    assert not (out / "from-the-old-run.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in finished[backend].iterdir())
    assert json.loads((out / RUN_RECORD).read_text())["training"]["seed"] == 1
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no lock, no copy set aside


@pytest.mark.parametrize("backend", BACKENDS)
def test_overwrite_that_fails_before_its_first_checkpoint_brings_the_previous_run_back(rws, finished, backend,
                                                                                      tmp_path, monkeypatch):
    from prtcore import RewardConfig, TrainingConfig
    from prtcore.plugins import get_backend
    from prtcore.training import train_reward

    out = copy_run(finished, backend, tmp_path)
    before = snapshot(out)
    engine = get_backend(backend)

    def fails(*args, **kwargs):
        assert not out.exists() or not (out / "checkpoint").exists()  # the old run is set aside by now
        raise KeyboardInterrupt

    monkeypatch.setattr(type(engine), "train", fails)
    with pytest.raises(KeyboardInterrupt):
        train_reward(rws["source"], rws["data"], out, RewardConfig(kind="linear"), TrainingConfig(iters=2, batch_size=4),
                     backend=engine, overwrite=True)
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_kill_during_overwrite_before_the_first_checkpoint_loses_nothing(rws, finished, backend, tmp_path, capsys,
                                                                          monkeypatch):
    """SIGKILL while the replaced run is set aside: the next run into the directory puts it back."""
    monkeypatch.setenv("PRT_QUIET", "1")
    out = copy_run(finished, backend, tmp_path)
    before = snapshot(out)
    proc = start(argv(rws, backend, out, "--overwrite", "--iters", "400", "--save-every", "1000"), tmp_path / "log")
    aside = None
    deadline = time.monotonic() + 60
    while aside is None:
        assert proc.poll() is None, (tmp_path / "log").read_text()
        assert time.monotonic() < deadline
        aside = next(iter(tmp_path.glob(".run.replaced-*")), None)
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    KILLS[backend] = KILLS.get(backend, 0) + 1
    assert (tmp_path / ".run.prt-lock").exists()  # the killed run's, stale
    refused(argv(rws, backend, out), capsys, "holds the checkpoint of a previous run (step 3)")
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


KILLS: dict[str, int] = {}


# ------------------------------------------------------------------------------------------------ concurrency
def test_a_second_run_into_a_directory_in_use_is_refused(rws, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PRT_QUIET", "1")
    backend = BACKENDS[-1]
    out = tmp_path / "out"
    first = start(argv(rws, backend, out, "--iters", "60", "--save-every", "1000"), tmp_path / "first.log")
    deadline = time.monotonic() + 60
    while not (tmp_path / ".out.prt-lock").exists():
        assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()
        time.sleep(0.01)
    err = refused(argv(rws, backend, out), capsys, "another training run is writing here", f"pid {first.pid}")
    assert first.wait(timeout=120) == 0, (tmp_path / "first.log").read_text()
    steps = [json.loads(line)["iteration"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "train_loss" in line]
    assert steps == sorted(set(steps)) and steps[-1] == 60, err  # one run's log, not two interleaved
    assert not (tmp_path / ".out.prt-lock").exists()


@pytest.mark.parametrize("content", ["dead", "garbage"])
def test_a_stale_lock_is_taken_over(rws, tmp_path, capsys, monkeypatch, content):
    monkeypatch.setenv("PRT_QUIET", "1")
    lock = tmp_path / ".out.prt-lock"
    if content == "dead":
        gone = subprocess.Popen(["true"])
        gone.wait()
        import socket

        lock.write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(), "started": time.time()}))
    else:
        lock.write_text("{")
        old = time.time() - 60
        os.utime(lock, (old, old))
    assert prt(argv(rws, BACKENDS[-1], tmp_path / "out", "--iters", "1"), capsys)[0] == 0
    assert not lock.exists()


def test_a_live_lock_of_another_process_is_respected(rws, tmp_path, capsys, monkeypatch):
    import socket

    monkeypatch.setenv("PRT_QUIET", "1")
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock = tmp_path / ".out.prt-lock"
        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": time.time()}))
        refused(argv(rws, BACKENDS[-1], tmp_path / "out", "--iters", "1"), capsys, f"pid {holder.pid}")
        assert lock.exists() and not (tmp_path / "out").exists()
    finally:
        holder.kill()
        holder.wait()
