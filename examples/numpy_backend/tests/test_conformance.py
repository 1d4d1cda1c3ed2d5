"""The whole conformance suite for this plugin, as a plugin author runs it (after `pip install -e .`):

    pytest tests/

`ConformanceTests` checks the array namespace, the loss, composers and sampler on the backend's arrays, and
every check of `prt conformance` against NumPy, itself and each other installed backend on a tiny llama.
"""

import pytest

import prtcore
from prtcore.testing.suite import ConformanceTests


class TestNumpyBackend(ConformanceTests):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls):
        return prtcore.get_backend("numpy")
