"""Helpers of the multi-process tests (a module of its own name, so that it cannot clash with other conftests):
launch commands run as real subprocesses, and readers of what a run left behind.

Each launch starts 2 processes on this machine (torch over gloo via torchrun / accelerate launch, mlx over its ring
backend via mlx.launch), each with one intra-op thread; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent
TIMEOUT = 240
NAMES = ["Avalon", "Corvia", "Mira", "Dunmere", "Brightwater", "Elara"]


def env() -> dict:
    out = {k: v for k, v in os.environ.items()
           if not k.startswith(("PRT_", "MLX_", "ACCELERATE_")) and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    out.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
               PRT_QUIET="1")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(command: list, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=TIMEOUT, env=env())
    if check:
        assert done.returncode == 0, f"{' '.join(map(str, command))} failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return done


def train_args(backend: str, ws: dict, out: Path, *extra) -> list:
    """`prt train` arguments shared by every run: a linear reward, global batch 4, two micro-batches per update."""
    return ["train", "--backend", backend, "--model", ws["source"], "--data", ws["data"], "--output-dir", out,
            "--reward", "linear", "--iters", 4, "--batch-size", 4, "--grad-accumulation-steps", 2,
            "--learning-rate", 1e-2, "--steps-per-eval", 2, "--steps-per-report", 1, "--save-every", 2, "--seed", 0,
            *extra]


def prt(*args) -> list:
    return [BIN / "prt", *args]


def torchrun(*args) -> list:
    return [BIN / "torchrun", "--nproc-per-node", 2, "--master-addr", "127.0.0.1", "--master-port", free_port(),
            BIN / "prt", *args]


def accelerate_launch(*launch_flags) -> list:
    """`accelerate launch` of 2 local processes with `launch_flags`; append `prt` and its arguments."""
    return [BIN / "accelerate", "launch", "--num_processes", 2, "--num_machines", 1, "--main_process_port", free_port(),
            "--dynamo_backend", "no", *launch_flags]


def mlx_launch(*args) -> list:
    return [BIN / "mlx.launch", "--backend", "ring", "-n", 2, "--", BIN / "prt", *args]


def train_single_and_launched(backend: str, ws: dict, launch, name: str) -> dict:
    """`prt train` on `backend` in one process and under `launch` (`torchrun`, `mlx_launch`) on the same global
    batches: the output directories ("single", `name`) under ws root/backend, and the launches' stdout
    ("single_out", "<name>_out")."""
    root = ws["root"] / backend
    single = run(prt(*train_args(backend, ws, root / "single")))
    launched = run(launch(*train_args(backend, ws, root / name)))
    return {"single": root / "single", name: root / name, "single_out": single.stdout, f"{name}_out": launched.stdout}


def reward_tensors(path) -> dict[str, np.ndarray]:
    from prtcore import RewardArtifact

    return {k: np.asarray(v) for k, v in RewardArtifact.open(path).tensors().items()}


def adam_moments(path) -> tuple[np.ndarray, np.ndarray]:
    """(first, second) Adam moments of the linear reward's head in a run's final checkpoint (either backend)."""
    checkpoint = Path(path) / "checkpoint"
    if (checkpoint / "optimizer.safetensors").exists():  # mlx
        from safetensors.numpy import load_file

        state = load_file(checkpoint / "optimizer.safetensors")
        return state["head.weight.m"], state["head.weight.v"]
    import torch

    last = max(checkpoint.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1]))
    (state,) = torch.load(last / "optimizer.pt", weights_only=True)["state"].values()
    return state["exp_avg"].numpy(), state["exp_avg_sq"].numpy()


def assert_same_training(single, multi, lr: float = 1e-2, updates: int = 2) -> None:
    """`multi` made the updates of `single`. The gradients: Adam's moments (sums of the gradients and of their
    squares) equal to float tolerance. The weights: equal to float tolerance wherever the gradient is not within
    float noise of zero; there Adam's step g/(√v + ε) turns a 1e-7 difference of g into a visible one, bounded by
    the step size lr."""
    (m1, v1), (m2, v2) = adam_moments(single), adam_moments(multi)
    # float32 sums: their error is relative to the scale of the terms, not of each result
    np.testing.assert_allclose(m2, m1, rtol=1e-5, atol=1e-6 * np.abs(m1).max())
    np.testing.assert_allclose(v2, v1, rtol=1e-5, atol=1e-6 * np.abs(v1).max())
    w1, w2 = reward_tensors(single)["head.weight"], reward_tensors(multi)["head.weight"]
    assert np.abs(w1).max() > 1e-3  # it trained
    clear = np.abs(m1) > 1e-3 * np.abs(m1).max()
    assert clear.mean() > 0.75, clear.mean()  # most of the matrix is compared exactly
    np.testing.assert_allclose(w2[clear], w1[clear], rtol=1e-5, atol=1e-6)
    assert np.abs(w2 - w1).max() <= 2 * lr * updates


def metrics(path) -> list[dict]:
    return [json.loads(line) for line in (Path(path) / "metrics.jsonl").read_text().splitlines()]


def assert_same_metrics(single, multi) -> None:
    """`multi` logged each iteration of `single` once (only rank 0 logs), with the losses (to float tolerance) and
    token counts of the whole global batch."""
    one, two = metrics(single), metrics(multi)
    iterations = [r["iteration"] for r in one], [r["iteration"] for r in two]
    assert iterations[1] == iterations[0], iterations
    for a, b in zip(one, two):
        for key in ("train_loss", "val_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), (key, a, b)
        if "trained_tokens" in a:
            assert b["trained_tokens"] == a["trained_tokens"]


def summaries(stdout: str) -> list[dict]:
    """The JSON objects a launch printed (`prt train`: one summary per process that printed one)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (start := stdout.find("{", at)) != -1:
        obj, at = decoder.raw_decode(stdout, start)
        found.append(obj)
    return found


def artifact_files(path) -> list[str]:
    """The files a run left in `path` and in `path/best`, and the hidden ones (a staging directory left behind)."""
    path = Path(path)
    return sorted([p.name for p in path.iterdir()] + [f"best/{p.name}" for p in (path / "best").iterdir()])
