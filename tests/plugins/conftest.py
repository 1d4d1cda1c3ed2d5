"""Example plugins from outside the package (each directory here is one, as a third party would ship it)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def register_example(monkeypatch):
    """`register_example(package, name)`: registers `package.plugin` (as its entry point would) in prtcore's plugin
    manager, rebuilt from scratch before and after the test; returns prtcore.plugins."""
    import prtcore.plugins as plugins

    for var in ("PRT_LOAD_PLUGINS", "PRT_TRACE_PLUGINS", "PRT_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.syspath_prepend(str(HERE))
    plugins.reset()

    def register(package: str, name: str):
        plugins.plugin_manager().register(importlib.import_module(f"{package}.plugin"), name=name)
        return plugins

    yield register
    plugins.reset()
