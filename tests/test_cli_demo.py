"""The demo pipeline end to end on each backend that trains (a very small world), and the CLI basics."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prtcore.plugins import get_backend, installed_backend_names

PRT = str(Path(sys.executable).with_name("prt"))
TRAINING_BACKENDS = [b for b in installed_backend_names() if "train" in get_backend(b).capabilities]


@pytest.mark.parametrize("backend", TRAINING_BACKENDS)
def test_demo_pipeline_runs_every_method_and_caches(backend, tmp_path):
    from prtcore.apps.demo import DemoSettings, run_demo

    settings = DemoSettings(n_a=6, n_b=6, pretrain_iters=30, task_iters=6, reward_kinds=("twin", "linear"), batch_size=4)
    logs = []
    result = run_demo(tmp_path, backend=backend, settings=settings, log=logs.append)
    methods = {r["method"]: r for r in result["results"]}
    assert set(methods) == {"new base alone", "old base + LoRA", "PRT twin on old base", "PRT twin on new base",
                            "PRT linear on old base", "PRT linear on new base", "EFT on new base",
                            "new base + LoRA (oracle)"}
    assert methods["EFT on new base"]["models_per_token"] == 3
    assert methods["PRT twin on new base"]["models_per_token"] == 2
    assert methods["new base alone"]["models_per_token"] == 1
    for row in result["results"]:
        assert 0.0 <= row["A"] <= row["A_capital"] <= 1.0 and 0.0 <= row["B"] <= row["B_capital"] <= 1.0
    out = tmp_path / backend
    for row in result["results"]:
        assert row["ms_per_token"] > 0 and row["peak_mb"] > 0
    saved = json.loads((out / "demo.json").read_text())
    assert saved["results"] == result["results"] and [run["seed"] for run in saved["runs"]] == [0]
    assert set(saved["runs"][0]["linear_probe"]) == {"cosine", "train_accuracy", "held_out_accuracy"}
    assert (out / "demo.png").exists() and "| method |" in (out / "demo.md").read_text()
    assert any(line.startswith("prt demo: wrote ") and str(out / "demo.json") in line for line in logs)
    # A second run with the same settings reuses every trained step.
    logs.clear()
    run_demo(tmp_path, backend=backend, settings=settings, log=logs.append)
    assert not [line for line in logs if line.startswith("[run]")]


@pytest.mark.parametrize("backend", TRAINING_BACKENDS)
def test_quick_demo_shows_the_reward_carrying_over_to_the_new_base(backend, tmp_path):
    """`prt demo --quick`: on questions about B (facts only the new base read), the reward trained on the old base
    gives exact answers on the new base, where neither the new base alone (wrong format) nor the reward on the old
    base (wrong capital) does; PRT runs two models per token where EFT runs three."""
    run = subprocess.run([PRT, "demo", "--quick", "--backend", backend, "--out", str(tmp_path), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    methods = {r["method"]: r for r in json.loads(run.stdout)["results"]}
    prt_new, prt_old, alone = (methods[m] for m in ("PRT twin on new base", "PRT twin on old base", "new base alone"))
    assert prt_new["B"] > prt_old["B"] and prt_new["B"] > alone["B"]
    assert prt_new["B_capital"] > prt_old["B_capital"]  # the knowledge comes from the new base
    assert prt_old["A"] > alone["A"]  # the reward teaches the format on the base it was trained with
    assert (prt_new["models_per_token"], methods["EFT on new base"]["models_per_token"]) == (2, 3)


@pytest.mark.parametrize("args", [["--seeds", "0"], ["--lambda", "-1"], ["--seed", "4294967295", "--seeds", "2"]])
def test_demo_refuses_bad_settings_before_running(args, tmp_path):
    run = subprocess.run([PRT, "demo", "--out", str(tmp_path / "d"), *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not (tmp_path / "d").exists()


def test_cli_errors_are_one_line(tmp_path):
    run = subprocess.run([PRT, "generate", "--model", str(tmp_path / "missing"), "--compose", "base", "--prompt", "hi",
                          "--backend", TRAINING_BACKENDS[0]], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1 and "missing" in run.stderr


def test_prt_plugins_lists_builtins():
    run = subprocess.run([PRT, "plugins"], capture_output=True, text=True, timeout=120)
    names = {p["name"] for p in json.loads(run.stdout)}
    assert {"mlx", "torch", "eagle2"} <= names
