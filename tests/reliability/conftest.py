"""Shared fixtures of the reliability tests: a tokenizer, a tiny llama source model and a small data set (made
once per session), and a helper that runs `prt` as a subprocess with one thread."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from prtcore.plugins import installed_backend_names

PRT = str(Path(sys.executable).with_name("prt"))
BACKENDS = [b for b in ("mlx", "torch") if b in installed_backend_names()]
NAMES = ["Avalon", "Corvia", "Mira", "Dunmere"]


def env() -> dict:
    out = {k: v for k, v in os.environ.items() if not k.startswith("PRT_")}
    out.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
               PRT_QUIET="1")
    return out


def start(args, log: Path) -> subprocess.Popen:
    """`prt ARGS` in the background, stdout and stderr to `log` (never a pipe that could fill up)."""
    f = open(log, "ab")
    try:
        return subprocess.Popen([PRT, *map(str, args)], stdout=f, stderr=subprocess.STDOUT, env=env())
    finally:
        f.close()


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def rws(tmp_path_factory):
    """Paths: tok, source (a tiny llama), data (train/valid)."""
    from prtcore.testing.checkpoints import make_tiny_checkpoint, make_tokenizer

    root = tmp_path_factory.mktemp("reliability")
    tok = make_tokenizer(root / "tok", [f"What is the capital of {a}? The capital is {a}." for a in NAMES] * 4,
                         vocab_size=300)
    rng = random.Random(0)
    rows = [{"prompt": f"What is the capital of {rng.choice(NAMES)}?", "completion": f"The capital is {rng.choice(NAMES)}."}
            for _ in range(24)]
    write_jsonl(root / "data" / "train.jsonl", rows[:16])
    write_jsonl(root / "data" / "valid.jsonl", rows[16:])
    return {"root": root, "tok": tok, "data": root / "data",
            "source": make_tiny_checkpoint(root / "source", "llama", tokenizer_dir=tok, seed=0)}
