"""Helpers of the conformance tests (a module of its own name, so that it cannot clash with other conftests):
the families, models and backends chosen, and the example plugin registered in-process when not installed."""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path

from prtcore.testing.runner import CI_FAMILIES

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "numpy_backend"
EXAMPLE_BACKEND = "numpy"
EXAMPLE_PLUGIN = "prtcore-conformance-example"


def families(config) -> list[str]:
    chosen = config.getoption("family", default=None) or []
    models = config.getoption("model", default=None) or []
    return list(chosen) or ([] if models else list(CI_FAMILIES))


def models(config) -> list[str]:
    return list(config.getoption("model", default=None) or [])


def example_installed() -> bool:
    from prtcore.plugins import installed_backend_names

    return EXAMPLE_BACKEND in installed_backend_names()


def backend_names() -> list[str]:
    """The backends the suite compares: the installed ones, and the example plugin (installed or not)."""
    from prtcore.plugins import installed_backend_names

    names = list(installed_backend_names())
    if EXAMPLE_BACKEND not in names and (EXAMPLE_DIR / "prt_numpy" / "plugin.py").is_file():
        names.append(EXAMPLE_BACKEND)
    return names


@contextlib.contextmanager
def example_registered():
    """The example plugin registered in-process (a no-op when it is pip-installed), undone afterwards."""
    from prtcore import plugins

    if example_installed() or not EXAMPLE_DIR.is_dir():
        yield
        return
    sys.path.insert(0, str(EXAMPLE_DIR))
    module = importlib.import_module("prt_numpy.plugin")
    pm = plugins.plugin_manager()
    pm.register(module, name=EXAMPLE_PLUGIN)
    plugins.backends.cache_clear()
    try:
        yield
    finally:
        if pm.is_registered(module):
            pm.unregister(module)
        plugins.backends.cache_clear()
        plugins._backend_instance.cache_clear()
        sys.path.remove(str(EXAMPLE_DIR))
