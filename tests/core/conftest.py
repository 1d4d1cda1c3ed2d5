"""Shared fixtures of the prtcore core tests (pure NumPy, no backend framework needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_plugins(monkeypatch):
    """Plugin registries rebuilt from scratch for the test and again afterwards (no leaked state)."""
    import prtcore.plugins as plugins

    for var in ("PRT_LOAD_PLUGINS", "PRT_TRACE_PLUGINS", "PRT_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    plugins.reset()
    yield plugins
    plugins.reset()


def run_python(code: str, *, env_extra: dict | None = None, pythonpath: list[str] | None = None, timeout=60):
    """Run `code` in a fresh interpreter of this venv; returns the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRT_")}
    paths = [str(p) for p in (pythonpath or [])] + [str(REPO_ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=str(REPO_ROOT))
