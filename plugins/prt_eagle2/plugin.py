"""Registers the Eagle2 model family and its pre-load patch for remote code on machines without flash-attn."""

import json
from pathlib import Path

import prtcore
from prtcore.plugins import ModelFamily

MODEL_TYPES = ("eagle_chat", "eagle_2_5_vl")


@prtcore.hookimpl
def register_model_families(register):
    register(ModelFamily(
        name="eagle2",
        model_types=MODEL_TYPES,
        loaders={"torch": "prt_eagle2.torch_lm:load_torch", "mlx": "prt_eagle2.mlx_lm:load_mlx"},
        description="NVIDIA Eagle2 vision-language models (SigLIP + pixel shuffle + MLP + Qwen2)",
    ))


def _model_type(path) -> str | None:
    try:
        return json.loads((Path(path) / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


@prtcore.hookimpl
def before_model_load(path, backend, options):
    """For torch loads of Eagle2 remote code (trust_remote_code=True) without flash-attn: `no_flash_attn`.

    Also sets `attn_implementation` (sdpa unless eager was asked for) and, on MPS without bfloat16, float16.
    """
    if backend != "torch" or not options.get("trust_remote_code") or _model_type(path) not in MODEL_TYPES:
        return None
    from .patch import FLASH_PACKAGE, installed, mps_bf16_supported, mps_safe_dtype, no_flash_attn, PatchReport

    if installed(FLASH_PACKAGE):
        return None
    report = PatchReport(str(path))
    attn = "eager" if options.get("attn_implementation") == "eager" else "sdpa"
    if options.get("attn_implementation") != attn:
        report.options.append(f"attn_implementation {options.get('attn_implementation')} -> {attn}")
        options["attn_implementation"] = attn
    device = str(options.get("device") or _default_device_type())
    safe = mps_safe_dtype(options.get("dtype"), device.split(":")[0], device.startswith("mps") and mps_bf16_supported())
    if safe != options.get("dtype"):
        report.options.append(f"dtype {options.get('dtype')} -> {safe} (MPS without bfloat16)")
        options["dtype"] = safe
    return no_flash_attn(attn, path=str(path), report=report)


def _default_device_type() -> str:
    from prt_torch.base import default_device

    return default_device().type
