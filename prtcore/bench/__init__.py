"""`prt bench`: PRT's cost measured side by side with its two models alone, EFT, and plain LoRA fine-tuning.

    from prtcore.bench import preset, run
    result = run(preset("small"), backends=("mlx", "torch"))
    print(result["table"])

Random models of configurable shape are built in memory (prtcore.bench.models); nothing is downloaded. See
docs/performance.md for what each path and ratio means.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from .config import PRESETS, BenchConfig, ModelShape, preset
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
    from .. import plugins

    workdir = Path(workdir) if workdir else default_workdir()
    workdir.mkdir(parents=True, exist_ok=True)
    log = log or (lambda message: None)
    result = {"config": _config_dict(config), "backends": {}, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for name in backends:
        plugins.get_backend(name)  # a clear error when the backend is not installed
        if name == "mlx":
            from . import mlx_bench as module
        elif name == "torch":
            from . import torch_bench as module
        else:
            from ..errors import ConfigError

            raise ConfigError(f"prt bench measures the mlx and torch backends, not {name!r}")
        tic = time.perf_counter()
        res = module.run(config, workdir, log)
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
