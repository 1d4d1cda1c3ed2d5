"""`prt bench`: PRT's cost measured side by side with its two models alone, EFT, and plain LoRA fine-tuning.

    from prtcore.apps.bench import preset, run
    result = run(preset("small"), backends=("mlx", "torch"))
    print(result["table"])

Each backend measures itself (`backend.benchmark(config, ...)`, capability "bench": prt_mlx.bench, prt_torch.bench,
built from prtcore.benchmarking); this application picks the settings (presets), runs every backend asked for, and
adds the ratios and the table. Random models of configurable shape are built in memory; nothing is downloaded.
See docs/performance.md for what each path and ratio means.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from ...benchmarking.config import BenchConfig, ModelShape
from .config import PRESETS, preset
from .report import generation_ratios, table, training_ratios

__all__ = ["BenchConfig", "ModelShape", "PRESETS", "preset", "run", "default_workdir"]


def default_workdir() -> Path:
    """Where tokenizers are cached: $PRT_BENCH_DIR, else a folder in the system's temporary directory."""
    return Path(os.environ.get("PRT_BENCH_DIR") or Path(tempfile.gettempdir()) / "prtcore-bench")


def _versions(backends) -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    for name in ("numpy", "torch", "transformers", "peft", "mlx", "mlx_lm"):
        module = sys.modules.get(name)
        if module is None:
            try:
                from importlib.metadata import version

                out[name] = version(name.replace("_", "-"))
            except Exception:  # not installed
                continue
        else:
            out[name] = getattr(module, "__version__", None)
    return out


def run(config: BenchConfig, backends=("mlx", "torch"), *, workdir=None, log=None) -> dict:
    """Measure every backend in `backends`; returns the JSON-ready result with a "table" string."""
    from ...errors import BackendError
    from ...plugins import get_backend

    workdir = Path(workdir) if workdir else default_workdir()
    workdir.mkdir(parents=True, exist_ok=True)
    log = log or (lambda message: None)
    result = {"config": _config_dict(config), "backends": {}, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    measured = {name: get_backend(name) for name in backends}  # a clear error when a backend is not installed
    for name, backend in measured.items():
        if "bench" not in backend.capabilities:  # before anything runs
            raise BackendError(f"backend {name!r} cannot benchmark (it lacks capability 'bench')")
    for name, backend in measured.items():
        tic = time.perf_counter()
        res = backend.benchmark(config, workdir=workdir, log=log)
        res["seconds"] = time.perf_counter() - tic
        if "generation" in res:
            res["generation"]["ratios"] = generation_ratios(res["generation"])
        if "training" in res:
            res["training"]["ratios"] = training_ratios(res["training"])
        result["backends"][name] = res
    result["environment"] = _versions(backends)
    result["table"] = table(result)
    return result


def _config_dict(config: BenchConfig) -> dict:
    import attrs

    out = attrs.asdict(config)
    out["target"]["parameters"] = config.target.parameters(config.vocab)
    out["source"]["parameters"] = config.source.parameters(config.vocab)
    out["source"]["compute_over_target"] = config.source.decode_flops(config.vocab) / config.target.decode_flops(config.vocab)
    return out
