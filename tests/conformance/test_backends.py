"""Each backend against the NumPy reference (prtcore.testing.suite), and the example plugin through the same
`ConformanceTests` class a third-party plugin subclasses.

The family checks for every backend and CI family run in test_families.py; `TestExamplePlugin` shows (and
tests) the route a plugin author takes: one class, one `backend` fixture, every check.
"""

import pytest

from conformance_options import EXAMPLE_BACKEND, backend_names
from prtcore.plugins import get_backend
from prtcore.testing.suite import ConformanceTests, DecodingConformance, MathConformance, RewardConformance


class TestInstalledBackends(MathConformance, RewardConformance, DecodingConformance):
    @pytest.fixture(scope="class", params=backend_names())
    @classmethod
    def backend(cls, request, example_plugin):
        return get_backend(request.param)


class TestExamplePlugin(ConformanceTests):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, example_plugin):
        return get_backend(EXAMPLE_BACKEND)
