"""Tiny random models for the performance paths' tests (built in memory by the backends' benchmarks, prt_mlx.bench and prt_torch.bench)."""

from __future__ import annotations

import pytest

from bench_testutil import SMALL
from prtcore.benchmarking.models import bench_tokenizer


@pytest.fixture(scope="session")
def bench_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="session")
def tokenizer_dir(bench_dir):
    return bench_tokenizer(bench_dir, SMALL.vocab)
