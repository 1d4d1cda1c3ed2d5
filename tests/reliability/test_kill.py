"""Training survives SIGKILL at random moments: `prt train` (a LoRA twin reward on a tiny model, a checkpoint
every step) is killed again and again, some kills landing while a checkpoint is being written, and resumed each
time. After every kill the checkpoint a resume would read is complete and loadable; the final weights equal
those of an uninterrupted run."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from prtcore.artifacts import check_safetensors
from prtcore.training import checkpoint_step, trainer_checkpoints

from .conftest import BACKENDS, start

ITERS = {"mlx": 40, "torch": 24}  # room for a step or more of progress before each kill
ARGS = ["--reward", "twin", "--lora-r", "4", "--num-layers", "2", "--batch-size", "4",
        "--learning-rate", "1e-2", "--save-every", "1", "--steps-per-eval", "3", "--val-batches", "1",
        "--steps-per-report", "1", "--seed", "3"]
KILLS = {"mlx": 10, "torch": 8}  # 18 in all; test_output_dirs kills 2 more
PROCESS_DEADLINE = 60  # seconds a single subprocess may take
STATS: dict = {}


def command(rws, backend, out, *extra):
    return ["train", "--backend", backend, "--model", rws["source"], "--data", rws["data"], "--output-dir", out,
            "--iters", ITERS[backend], *ARGS, *extra]


def writing(out: Path, backend: str) -> bool:
    """A checkpoint write is under way (its staging directory, or a Trainer checkpoint not yet complete)."""
    if backend == "mlx":
        return any(out.glob(".checkpoint.*.partial"))
    return any(p.is_dir() and not (p / "trainer_state.json").exists() for p in (out / "checkpoint").glob("checkpoint-*"))


def assert_checkpoint_readable(out: Path, backend: str) -> int | None:
    """The checkpoint a resume would read is whole: every file parses and every tensor loads. Returns its step."""
    root = out / "checkpoint"
    if backend == "mlx":
        candidates = [root] if root.exists() else sorted(out.glob(".checkpoint.old-*"))
        if not candidates:
            return None
        ckpt = candidates[-1]
        state = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
        for name in ("weights.safetensors", "optimizer.safetensors"):
            check_safetensors(ckpt / name)
            assert load_file(str(ckpt / name)), name
        return int(state["iteration"])
    import torch
    from transformers.trainer_pt_utils import safe_globals

    done = trainer_checkpoints(root)
    if not done:
        return None
    ckpt = done[-1]
    json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    assert load_file(str(ckpt / "adapter_model.safetensors"))
    with safe_globals():
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
            torch.load(ckpt / name, weights_only=True)
    return int(ckpt.name.rsplit("-", 1)[-1])


def recorded(out: Path) -> dict:
    """What a run records of itself: the training info of its artifacts, and its metrics (times aside)."""
    def info(path):
        meta = json.loads((path / "prt_config.json").read_text(encoding="utf-8"))
        return {k: v for k, v in meta.items() if k in ("training", "data")}

    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    kept = ("iteration", "train_loss", "val_loss", "trained_tokens", "learning_rate")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return {"final": info(out), "best": info(out / "best"), "metrics": [{k: r.get(k) for k in kept} for r in metrics],
            "summary": {k: summary[k] for k in ("steps", "best_val_loss", "best_val_step", "final_train_loss")}}


def wait(proc, what):
    try:
        return proc.wait(timeout=PROCESS_DEADLINE)
    except Exception:
        proc.kill()
        proc.wait()
        pytest.fail(f"{what}: no exit within {PROCESS_DEADLINE} s")


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_at_random_moments_loses_nothing(rws, backend, tmp_path):
    rng = random.Random(1234 + len(backend))
    ref_out, out = tmp_path / "reference", tmp_path / "killed"
    reference = start(command(rws, backend, ref_out), tmp_path / "reference.log")  # runs alongside the kills
    kills, during_write, steps = 0, 0, []
    log = tmp_path / "killed.log"
    while kills < KILLS[backend]:
        before = checkpoint_step(out) or 0
        if before >= ITERS[backend] - 1:
            break
        proc = start(command(rws, backend, out, *(["--resume"] if kills else [])), log)
        deadline = time.monotonic() + PROCESS_DEADLINE
        aim_at_write = kills % 2 == 1  # every other kill waits for a checkpoint write to be under way
        delay = rng.uniform(0.0, 0.4)
        while True:  # wait until this run has checkpointed at least one more step, then strike
            assert proc.poll() is None, f"{backend}: the run ended before it was killed:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{backend}: no progress within {PROCESS_DEADLINE} s"
            progressed = (checkpoint_step(out) or 0) > before
            if progressed and (not aim_at_write or writing(out, backend) or time.monotonic() > deadline - 10):
                break
            time.sleep(0.001 if aim_at_write else 0.01)
        if not aim_at_write:
            time.sleep(delay)
        in_write = writing(out, backend)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        kills += 1
        during_write += in_write
        steps.append(assert_checkpoint_readable(out, backend))
        assert steps[-1] is not None and steps[-1] > before - 1
    final = start(command(rws, backend, out, "--resume"), log)
    assert wait(final, "resumed run") == 0, log.read_text()[-3000:]
    assert wait(reference, "reference run") == 0, (tmp_path / "reference.log").read_text()[-3000:]
    for artifact in ("", "best"):
        want = load_file(str(ref_out / artifact / "adapter_model.safetensors"))
        got = load_file(str(out / artifact / "adapter_model.safetensors"))
        assert want.keys() == got.keys()
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=0, atol=0 if backend == "mlx" else 1e-6,
                                       err_msg=f"{artifact or 'final'}: {name}")
    assert recorded(out) == recorded(ref_out)
    STATS[backend] = {"kills": kills, "during_write": during_write, "checkpoint_steps": steps}
    print(f"\n{backend}: {kills} SIGKILLs ({during_write} during a checkpoint write) at steps {steps}; final weights equal")
    assert kills == KILLS[backend]
