"""torch FSDP on 2 CPU processes: what works here (FSDP2 sharding of the frozen source) and what accelerate refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from dist_testutil import BIN, accelerate_launch, free_port, prt, run, summaries, train_args

pytest.importorskip("torch")
pytest.importorskip("accelerate")
pytestmark = pytest.mark.slow


def test_rewards_train_alike_on_a_sharded_and_a_whole_source(ws):
    worker = Path(__file__).with_name("fsdp_worker.py")
    done = run([BIN / "torchrun", "--nproc-per-node", 2, "--master-addr", "127.0.0.1", "--master-port", free_port(),
                worker, ws["source"], ws["data"]])
    ranks = summaries(done.stdout)  # one JSON object per rank
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    for r in ranks:
        assert r["held"] == pytest.approx(0.5, abs=0.02)  # each rank keeps half of the frozen weights
        assert r["logits"] < 1e-5 and r["hidden"] < 1e-5
        assert r["trained"] > 1e-3 and r["reward"] < 1e-6


def test_accelerate_fsdp_on_cpu_is_refused_in_one_line(ws):
    """accelerate 1.x turns FSDP on only for GPU-like devices; on CPU it would silently fall back to DDP."""
    out = ws["root"] / "fsdp"
    done = run(accelerate_launch("--use_fsdp", "--fsdp_version", 2, "--mixed_precision", "no")
               + prt(*train_args("torch", ws, out)), check=False)
    assert done.returncode != 0
    errors = {line for line in done.stderr.splitlines() if line.startswith("prt train: error:")}
    assert errors == {"prt train: error: FSDP was asked for (accelerate launch --use_fsdp), but accelerate enables it "
                      "only on GPUs and other accelerators and this run is MULTI_CPU; launch without --use_fsdp to "
                      "train with DDP"}
    assert not (out / "prt_config.json").exists()
