"""build_measured(isolated=...): each configuration's peak resident memory is measured in a fork of the same state,
so it does not depend on what was measured before it; a configuration that fails in the fork is left out."""

import os
import sys

import numpy as np
import pytest

from prtcore.benchmarking.memory import HostPeak, PeakMeter
from prtcore.benchmarking.timing import build_measured, forked

pytestmark = pytest.mark.skipif(not (sys.platform.startswith("linux") and HostPeak.available),
                                reason="peak resident memory through /proc (Linux)")
MB = 1 << 20


def _builder(megabytes: int, cache: list):
    """A configuration whose step touches `megabytes` of fresh memory the first time and reuses it afterwards (as
    a library's cache would: the second configuration to run finds it filled)."""

    def build():
        def step():
            if not cache:
                cache.append(np.ones(megabytes * MB // 8))

        return step, {"size": megabytes}

    return build


def _measured(order, isolated):
    cache = []
    builders = {name: _builder(64, cache) for name in order}
    _, memory, _ = build_measured(builders, PeakMeter, lambda line: None, isolated=isolated)
    return memory


def test_without_isolation_the_first_configuration_pays_for_a_shared_cache():
    memory = _measured(["a", "b"], isolated=None)
    assert memory["a"] > 60 * MB > memory["b"]


def test_isolated_configurations_each_pay_for_their_own_memory_in_any_order():
    pid_in_child = []
    memory = _measured(["a", "b"], isolated=lambda: pid_in_child.append(os.getpid()))
    assert 60 * MB < memory["a"] < 80 * MB and 60 * MB < memory["b"] < 80 * MB
    assert not pid_in_child  # the setup ran in the children, not here


def test_a_configuration_failing_in_its_fork_is_left_out_and_named():
    def broken():
        raise ValueError("no such model")

    lines = []
    steps, memory, _ = build_measured({"ok": _builder(8, []), "broken": broken}, PeakMeter, lines.append,
                                      isolated=lambda: None)
    assert set(steps) == set(memory) == {"ok"}
    assert any("broken failed: ValueError: no such model" in line for line in lines)


def test_forked_reports_a_child_that_dies():
    assert forked(lambda: os._exit(3)) == "the measuring process ended with exit code 3"
    assert forked(lambda: 7 * 6) == 42
