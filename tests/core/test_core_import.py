"""`import prtcore` stays framework-free."""

from __future__ import annotations

import json

from .conftest import run_python

FRAMEWORKS = ("mlx", "mlx.core", "mlx_lm", "mlx_vlm", "torch", "transformers", "peft", "accelerate")


def _imported(code: str):
    out = run_python(code + f"\nimport sys, json\nprint(json.dumps([m for m in {FRAMEWORKS!r} if m in sys.modules]))")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_prtcore_imports_no_framework():
    assert _imported("import prtcore") == []


def test_plugin_discovery_and_core_api_import_no_framework():
    code = """
import numpy as np
import prtcore
import prtcore.plugins as p
p.backends(); p.model_families(); p.describe_plugins()
prtcore.prt_loss(np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), np.zeros((1, 2), int))
prtcore.PRTComposer()(np.zeros((1, 3)), np.zeros((1, 3)))
prtcore.Sampler(temperature=1.0).filtered(np.zeros((1, 3)))
prtcore.to_numpy([1.0, 2.0])
"""
    assert _imported(code) == []
