"""`prt env`: the bug-report block, as text and as JSON; a failing probe is a value, never a crash."""

from __future__ import annotations

import json

import pytest

import prtcore
from prtcore.cli import env as env_cli
from prtcore.cli.main import main
from prtcore.plugins import installed_backend_names

LOADABLE = [b for b in ("torch", "mlx") if b in installed_backend_names()]  # both, on this project's machine
SECTIONS = {"prtcore", "python", "platform", "packages", "backends", "devices", "blas", "environment"}


def run_env(capsys, *args) -> tuple[int, str]:
    code = main(["env", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "error" not in err
    return code, out


def test_json_report(capsys, monkeypatch):
    monkeypatch.setenv("PRT_BACKEND", "torch")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libopenblas.so.0")
    code, out = run_env(capsys, "--json")
    report = json.loads(out)
    assert code == 0 and set(report) == SECTIONS
    assert report["prtcore"]["version"] == prtcore.__version__
    assert set(report["packages"]) == set(env_cli.PACKAGES)
    assert all(isinstance(v, str) and v for v in report["packages"].values())
    assert report["python"]["version"].count(".") == 2
    for backend in LOADABLE:
        assert report["backends"][backend]["status"] == "ok"
        assert report["packages"][backend] != env_cli.NOT_INSTALLED
    assert report["backends"]["default"] == "torch"
    if "torch" in LOADABLE:
        assert report["devices"]["torch"]["default"] in ("cpu", "cuda", "mps")
        assert "BLAS_INFO=" in report["blas"]["torch"]
    if "mlx" in LOADABLE:
        assert "default" in report["devices"]["mlx"]
    assert set(report["blas"]) == {"numpy", "torch", "mlx", "threadpoolctl", "loaded"}
    assert set(report["environment"]) >= {"PRT_BACKEND", "PRT_LOAD_PLUGINS", "HF_HUB_OFFLINE", "HF_HOME",
                                          "CUDA_VISIBLE_DEVICES", "PYTORCH_ENABLE_MPS_FALLBACK", "LD_PRELOAD"}
    assert report["environment"]["LD_PRELOAD"] == "/usr/lib/libopenblas.so.0"


def test_text_report(capsys, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    code, out = run_env(capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"prtcore {prtcore.__version__} ")
    assert lines[1].startswith("Python ") and lines[2].startswith("Platform ")
    for section in ("packages", "backends", "devices", "blas", "environment"):
        assert section in lines
    for backend in LOADABLE:
        assert any(line.split()[:3] == [backend, "status:", "ok,"] for line in lines), out
    assert any(line.split(None, 1) == ["HF_HUB_OFFLINE", "(not set)"] for line in lines)
    assert not out.lstrip().startswith("{")


def test_failing_probes_are_reported_not_raised(capsys, monkeypatch):
    def broken():
        raise RuntimeError("probe\nexploded")

    monkeypatch.setattr(env_cli, "_torch_device", broken)
    monkeypatch.setattr(env_cli, "_numpy_blas", lambda: (_ for _ in ()).throw(SystemExit(3)))
    monkeypatch.setattr(env_cli, "_version", lambda name: 1 / 0 if name == "peft" else "1.0")
    monkeypatch.setenv("PRT_BACKEND", "nosuch")
    code, out = run_env(capsys, "--json")
    report = json.loads(out)
    assert code == 0
    assert report["devices"]["torch"] == "error: RuntimeError: probe\\nexploded"
    assert report["blas"]["numpy"] == "error: SystemExit: 3"
    assert report["packages"]["peft"].startswith("error: ZeroDivisionError")
    assert report["backends"]["default"] == "nosuch (not a registered backend)"
    code, text = run_env(capsys)
    assert code == 0 and "error: RuntimeError" in text


def test_a_backend_that_fails_to_load_is_one_line(capsys, monkeypatch):
    if "mlx" not in LOADABLE:
        pytest.skip("mlx is not installed")
    from prtcore import plugins

    real = plugins.get_backend

    def get_backend(name=None):
        if name == "mlx":
            raise ImportError("libmlx.so: cannot open shared object file")
        return real(name)

    monkeypatch.setattr(plugins, "get_backend", get_backend)
    code, out = run_env(capsys, "--json")
    backends = json.loads(out)["backends"]
    assert code == 0 and all(backends[b]["status"] == "ok" for b in LOADABLE if b != "mlx")
    assert backends["mlx"]["status"] == "error: ImportError: libmlx.so: cannot open shared object file"


def test_versions():
    assert env_cli._version("numpy")[0].isdigit()
    assert env_cli._version("surely-not-a-package-prt") == env_cli.NOT_INSTALLED


@pytest.mark.skipif("mlx" not in LOADABLE or not env_cli.sys.platform.startswith("linux"), reason="mlx on Linux")
def test_mlx_blas_names_the_slow_reference_blas_and_a_preloaded_openblas():
    """The mlx[cpu] wheel's reference BLAS is named with the advice to preload OpenBLAS, and a preloaded one is seen."""
    import os
    import subprocess
    import sys

    def mlx_blas(**env):
        out = subprocess.run([sys.executable, "-m", "prtcore.cli.main", "env", "--json"], capture_output=True,
                             text=True, env={**os.environ, **env}, check=True).stdout
        return json.loads(out)["blas"]["mlx"]

    text = mlx_blas(LD_PRELOAD="")
    assert text.startswith("the wheel's reference BLAS: slow matrix products on the CPU; ")
    found = env_cli.installed_openblas()
    if not found:
        assert text.endswith("install OpenBLAS and preload it (LD_PRELOAD)")
        pytest.skip("no OpenBLAS installed here to preload")
    assert text.endswith(f"preload OpenBLAS: LD_PRELOAD={found[0]}")
    assert mlx_blas(LD_PRELOAD=found[0], OPENBLAS_NUM_THREADS="1") == "OpenBLAS, preloaded (threads: 1)"
