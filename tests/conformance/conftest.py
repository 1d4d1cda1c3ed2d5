"""Options and fixtures of the conformance suite.

    pytest tests/conformance                      # the CI families (prtcore.testing.runner.CI_FAMILIES)
    pytest tests/conformance --family cohere --family glm4
    pytest tests/conformance --model models/my-llama

Backends: every installed one, plus the example plugin examples/numpy_backend. When that is not pip-installed
(`pip install -e examples/numpy_backend`), it is registered in-process for the duration of each conformance
module only, so other test directories never see it.
"""

from __future__ import annotations

import sys

import pytest

from conformance_options import example_registered


def pytest_addoption(parser):
    group = parser.getgroup("prtcore conformance")
    group.addoption("--family", action="append", default=[], metavar="NAME",
                    help="model family (model_type) for the conformance suite; repeatable (default: the CI families)")
    group.addoption("--model", action="append", default=[], metavar="PATH",
                    help="a local checkpoint for the conformance suite; repeatable")


@pytest.fixture(scope="module")
def example_plugin():
    with example_registered():
        yield


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models: one torch thread is fastest, and stays fast when other processes load the CPU."""
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch
        except ImportError:
            yield
            return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
