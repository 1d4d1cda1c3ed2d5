"""mlx: `prt train` under mlx.launch (2 ranks over the ring backend) equals one process."""

from __future__ import annotations

import pytest

from dist_testutil import (artifact_files, assert_same_metrics, assert_same_training, mlx_launch, summaries,
                           train_single_and_launched)

pytest.importorskip("mlx.core")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(ws):
    return train_single_and_launched("mlx", ws, mlx_launch, "ring")


def test_two_ranks_train_the_reward_of_one(runs):
    assert_same_training(runs["single"], runs["ring"])


def test_losses_and_tokens_are_those_of_the_global_batch(runs):
    assert_same_metrics(runs["single"], runs["ring"])


def test_only_rank_zero_writes(runs):
    assert artifact_files(runs["ring"]) == artifact_files(runs["single"])
    assert len(summaries(runs["ring_out"])) == 1


def test_a_batch_smaller_than_the_ranks_is_refused():
    from prt_mlx.distributed import DataParallel

    from prtcore.errors import TrainingError

    dp = DataParallel()
    dp.size = 2
    with pytest.raises(TrainingError, match="--batch-size 1: a global batch needs at least one example for each"):
        dp.check_batch(1, 16)
    dp.check_batch(2, 16)
