"""The quick start's main job, `prt demo`, end to end on each installed backend (real subprocesses)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prtcore.plugins import installed_backend_names

PRT = str(Path(sys.executable).with_name("prt"))


@pytest.mark.parametrize("backend", installed_backend_names())
def test_demo_reward_trained_on_source_lowers_nll_on_another_target(backend, tmp_path):
    run = subprocess.run([PRT, "demo", "--backend", backend, "--out",
                          str(tmp_path / "demo"), "--iters", "30", "--json"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    rows = {r["base"]: r for r in result["results"]}
    for base in ("source", "target"):
        assert rows[base]["prt_nll"] < rows[base]["base_nll"] - 1.0
    assert (tmp_path / "demo" / "reward" / "prt_config.json").exists()
    assert (tmp_path / "demo" / "reward" / "loss_curve.png").exists()


def test_cli_errors_are_one_line(tmp_path):
    run = subprocess.run([PRT, "generate", "--model", str(tmp_path / "missing"),
                          "--compose", "base", "--prompt", "hi", "--backend", installed_backend_names()[0]],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1 and "missing" in run.stderr


def test_prt_plugins_lists_builtins():
    run = subprocess.run([PRT, "plugins"], capture_output=True, text=True, timeout=120)
    names = {p["name"] for p in json.loads(run.stdout)}
    assert {"mlx", "torch", "eagle2"} <= names
