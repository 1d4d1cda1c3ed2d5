"""Each installed backend against the NumPy reference (prtcore.testing.suite)."""

import pytest

from prtcore.plugins import get_backend, installed_backend_names
from prtcore.testing.suite import ConformanceTests


class TestInstalledBackends(ConformanceTests):
    @pytest.fixture(scope="class", params=installed_backend_names())
    @classmethod
    def backend(cls, request):
        return get_backend(request.param)
