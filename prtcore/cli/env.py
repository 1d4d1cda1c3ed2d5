"""`prt env`: what to paste into a bug report. prtcore's version, Python and the platform, the versions of the
packages prtcore runs on, which backends load, the devices, the BLAS in use, and the environment variables that
change prtcore's behaviour; plain text, or JSON with --json.

Every probe runs on its own: a failure is reported as that probe's value ("error: ..."), never raised.
"""

from __future__ import annotations

import json
import os
import platform
import sys

PACKAGES = ("numpy", "mlx", "mlx-lm", "mlx-vlm", "torch", "transformers", "peft", "accelerate", "tokenizers",
            "safetensors", "huggingface_hub", "pluggy", "attrs")
ENV_VARS = ("PRT_BACKEND", "PRT_LOAD_PLUGINS", "PRT_TRACE_PLUGINS", "HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE",
            "CUDA_VISIBLE_DEVICES", "PYTORCH_ENABLE_MPS_FALLBACK", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "PRT_TORCH_THREADS", "LD_PRELOAD")
NOT_INSTALLED = "not installed"


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args) -> int:
    report = collect()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render(report), end="")
    return 0


# ---------------------------------------------------------------------------------------------- probes
def _error(e: BaseException) -> str:
    from .main import one_line

    text = one_line(e).strip()
    if len(text) > 300:
        text = text[:297] + "..."
    return f"error: {type(e).__name__}: {text}" if text else f"error: {type(e).__name__}"


def probe(fn, *args):
    """fn(*args), or its failure as one line of text."""
    try:
        return fn(*args)
    except BaseException as e:  # noqa: BLE001 (SystemExit from a broken import, too): reported, never raised
        if isinstance(e, KeyboardInterrupt):
            raise
        return _error(e)


def collect() -> dict:
    """The report as a dict of sections (what --json prints)."""
    return {
        "prtcore": probe(_prtcore),
        "python": probe(_python),
        "platform": probe(_platform),
        "packages": {name: probe(_version, name) for name in PACKAGES},
        "backends": probe(_backends),
        "devices": {"torch": probe(_torch_device), "mlx": probe(_mlx_device)},
        "blas": {"numpy": probe(_numpy_blas), "torch": probe(_torch_blas), "mlx": probe(_mlx_blas),
                 "threadpoolctl": probe(_threadpools), "loaded": probe(_loaded_blas)},
        "environment": {name: os.environ.get(name) for name in ENV_VARS},
    }


def _prtcore() -> dict:
    import prtcore

    return {"version": prtcore.__version__, "location": os.path.dirname(prtcore.__file__)}


def _python() -> dict:
    return {"version": platform.python_version(), "implementation": platform.python_implementation(),
            "executable": sys.executable}


def _platform() -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()}


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _backends() -> dict:
    from .. import plugins

    specs = plugins.backends()
    default = probe(plugins.default_backend_name)
    if default not in specs and not str(default).startswith("error:"):
        default = f"{default} (not a registered backend)"
    out: dict = {"default": default}
    for name, spec in specs.items():
        def load(name=name):
            plugins.get_backend(name)
            return "ok"

        out[name] = {"status": probe(load), "plugin": spec.plugin}
    return out


def _torch_device() -> dict | str:
    if not _installed("torch"):
        return NOT_INSTALLED
    import torch

    out: dict = {"cuda_build": torch.version.cuda, "cuda": torch.cuda.is_available()}
    if out["cuda"]:
        count = torch.cuda.device_count()
        out["devices"] = [probe(torch.cuda.get_device_name, i) for i in range(count)]
    mps = getattr(torch.backends, "mps", None)
    out["mps"] = bool(mps is not None and mps.is_available())
    out["default"] = "cuda" if out["cuda"] else "mps" if out["mps"] else "cpu"
    out["threads"] = torch.get_num_threads()
    chooser = sys.modules.get("prt_torch.threads")  # the torch backend sets them when it loads on the CPU
    if chooser is not None:
        out["threads_set_by"] = chooser.reason()
    return out


def _mlx_device() -> dict | str:
    if not _installed("mlx"):
        return NOT_INSTALLED
    import mlx.core as mx

    out: dict = {"default": str(mx.default_device())}
    for api in ("metal", "cuda"):
        module = getattr(mx, api, None)
        if module is not None and hasattr(module, "is_available"):
            out[api] = probe(lambda m=module: bool(m.is_available()))
    if out.get("metal") is True and hasattr(mx, "device_info"):
        info = probe(mx.device_info)
        if isinstance(info, dict):
            out["device_name"] = info.get("device_name")
    return out


def _numpy_blas() -> str:
    import numpy as np

    config = np.show_config(mode="dicts")
    deps = config.get("Build Dependencies", {}) if isinstance(config, dict) else {}
    parts = []
    for kind in ("blas", "lapack"):
        entry = deps.get(kind) or {}
        if entry:
            parts.append(f"{kind}: {entry.get('name', '?')} {entry.get('version', '')}".rstrip())
    return ", ".join(parts) or "not reported"


def _torch_blas() -> str:
    if not _installed("torch"):
        return NOT_INSTALLED
    import torch

    found = []
    for line in torch.__config__.show().splitlines():
        for item in line.replace("Build settings:", "").split(","):
            item = item.strip(" -")
            if item.startswith(("BLAS_INFO=", "LAPACK_INFO=")):
                found.append(item)
    return ", ".join(found) or "not reported"


# Where Linux distributions install OpenBLAS (Debian/Ubuntu's pthread build first).
OPENBLAS_PATHS = ("/usr/lib/{arch}-linux-gnu/openblas-pthread/libopenblas.so.0",
                  "/usr/lib/{arch}-linux-gnu/libopenblas.so.0", "/usr/lib64/libopenblas.so.0", "/usr/lib/libopenblas.so.0")


def installed_openblas() -> list[str]:
    """The OpenBLAS libraries of OPENBLAS_PATHS present on this machine, in that order."""
    paths = (path.format(arch=platform.machine()) for path in OPENBLAS_PATHS)
    return [path for path in paths if os.path.exists(path)]


def _mlx_blas() -> str:
    """What mlx's CPU matrix products call. On Linux the mlx[cpu] wheel ships a reference BLAS, about 60x slower than
    OpenBLAS on a float32 product (docs/performance.md), which a preloaded OpenBLAS replaces."""
    if not _installed("mlx"):
        return NOT_INSTALLED
    if sys.platform == "darwin":
        return "Accelerate"
    import mlx.core  # noqa: F401  (loads the BLAS it links)

    from prtcore.benchmarking.threads import loaded_openblas_threads

    threads = loaded_openblas_threads()
    if threads is not None:
        return f"OpenBLAS, preloaded (threads: {threads})"
    found = installed_openblas()
    advice = f"preload OpenBLAS: LD_PRELOAD={found[0]}" if found else "install OpenBLAS and preload it (LD_PRELOAD)"
    return f"the wheel's reference BLAS: slow matrix products on the CPU; {advice}"


def _threadpools() -> list[str] | str:
    if not _installed("threadpoolctl"):
        return NOT_INSTALLED
    from threadpoolctl import threadpool_info

    return [f"{p.get('internal_api')} {p.get('version') or ''} ({p.get('num_threads')} threads, "
            f"{os.path.basename(p.get('filepath') or '?')})".replace("  ", " ") for p in threadpool_info()]


def _loaded_blas() -> list[str] | str:
    """The BLAS libraries mapped into this process (Linux: /proc/self/maps), e.g. one LD_PRELOAD adds."""
    maps = "/proc/self/maps"
    if not os.path.exists(maps):
        return "not available on this platform"
    names = set()
    with open(maps, encoding="utf-8", errors="replace") as f:
        for line in f:
            path = line.rsplit(" ", 1)[-1].strip()
            base = os.path.basename(path).lower()
            if path.startswith("/") and any(k in base for k in ("blas", "mkl_", "libmkl", "lapack", "accelerate")):
                names.add(os.path.basename(path))
    return sorted(names)


# ---------------------------------------------------------------------------------------------- text
def _flat(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_flat(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(_flat(v) for v in value) or "none"
    return str(value)


def render(report: dict) -> str:
    """The report as plain text: one section per key, one aligned `name  value` line per entry."""
    lines = []
    head = report.get("prtcore")
    lines.append(f"prtcore {head.get('version')} ({head.get('location')})" if isinstance(head, dict)
                 else f"prtcore: {head}")
    py, plat = report.get("python"), report.get("platform")
    lines.append(f"Python {py.get('version')} ({py.get('implementation')}, {py.get('executable')})"
                 if isinstance(py, dict) else f"Python: {py}")
    lines.append(f"Platform {plat.get('platform')} ({plat.get('machine')}, {plat.get('cpus')} CPUs)"
                 if isinstance(plat, dict) else f"Platform: {plat}")
    for section in ("packages", "backends", "devices", "blas", "environment"):
        body = report.get(section)
        lines.append("")
        lines.append(section)
        if not isinstance(body, dict):
            lines.append(f"  {_flat(body)}")
            continue
        width = max((len(str(k)) for k in body), default=0)
        for name, value in body.items():
            text = "(not set)" if section == "environment" and value is None else _flat(value)
            lines.append(f"  {str(name).ljust(width)}  {text}")
    return "\n".join(lines) + "\n"
