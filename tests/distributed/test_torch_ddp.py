"""torch: `prt train` under torchrun and accelerate launch (2 processes over gloo) equals one process."""

from __future__ import annotations

import numpy as np
import pytest

from dist_testutil import (accelerate_launch, artifact_files, assert_same_metrics, assert_same_training, metrics, prt,
                           reward_tensors, run, summaries, torchrun, train_args, train_single_and_launched)

pytest.importorskip("torch")
pytest.importorskip("accelerate")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(ws):
    """One process, and 2 under torchrun, on the same global batches (and the launches' stdout)."""
    return train_single_and_launched("torch", ws, torchrun, "ddp")


def test_two_processes_train_the_reward_of_one(runs):
    assert_same_training(runs["single"], runs["ddp"], updates=4)  # torch's --iters counts optimiser steps


def test_logged_metrics_cover_the_whole_global_batch(runs):
    assert_same_metrics(runs["single"], runs["ddp"])


def test_only_rank_zero_writes(runs):
    assert artifact_files(runs["ddp"]) == artifact_files(runs["single"])
    assert len(summaries(runs["ddp_out"])) == 1 and len(summaries(runs["single_out"])) == 1


def test_mixed_precision_under_accelerate_launch(ws, runs):
    """bf16 autocast (accelerate launch --mixed_precision bf16) changes the numbers, not what is learnt."""
    out = ws["root"] / "torch" / "bf16"
    run(accelerate_launch("--cpu", "--mixed_precision", "bf16") + prt(*train_args("torch", ws, out)))
    fp32, bf16 = reward_tensors(runs["ddp"])["head.weight"], reward_tensors(out)["head.weight"]
    assert not np.allclose(bf16, fp32, rtol=1e-5, atol=1e-6)  # autocast took effect
    # bf16 rounding only: Adam turns a few near-zero gradients of other sign into lr-sized steps, so compare overall
    assert np.linalg.norm(bf16 - fp32) < 0.02 * np.linalg.norm(fp32)
    val = [[r["val_loss"] for r in metrics(path) if "val_loss" in r] for path in (out, runs["ddp"])]
    np.testing.assert_allclose(val[0], val[1], rtol=1e-2)


def test_a_resumed_launch_continues_the_run(ws, runs):
    """Stopped after 2 steps and resumed under torchrun: rank 0 repairs, every rank reads the checkpoint."""
    out = ws["root"] / "torch" / "resumed"
    run(torchrun(*train_args("torch", ws, out, "--iters", 2)))  # the last --iters counts
    run(torchrun(*train_args("torch", ws, out, "--resume")))
    assert [r["iteration"] for r in metrics(out)] == [r["iteration"] for r in metrics(runs["ddp"])]
    assert_same_training(runs["ddp"], out, updates=4)


def test_a_global_batch_that_does_not_split_evenly_is_refused(monkeypatch):
    from prt_torch.distributed import trainer_overrides

    from prtcore import TrainingConfig
    from prtcore.errors import TrainingError

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TrainingError, match="--batch-size 3: the global batch must divide evenly among the 2"):
        trainer_overrides(TrainingConfig(batch_size=3), None, 16)
    assert trainer_overrides(TrainingConfig(batch_size=4), None, 16)["accelerator_config"] == {"split_batches": True}
