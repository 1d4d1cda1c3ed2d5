"""The one-shot GPU check, runnable from a bare checkout (prtcore need not be installed):

    PYTHONUNBUFFERED=1 python3 -m prtcore.bench.gpu --output $OUT/gpu.json 2>&1 | tee $OUT/gpu.log

It is `prt bench --gpu-check`: a TinyLlama-1.1B-shaped random target and a ~0.25B source in bfloat16 on the
CUDA device; tokens/s of the target alone through transformers' `generate` (eager), PRT through prtcore's eager
loop, its pipelined loop and static caches + one CUDA graph per step, EFT eager and graphed; then training steps
of each reward kind against peft LoRA. Extra arguments go to `prt bench` (e.g. `--repeats 1`). The last lines
printed are a summary of the figures the issue asks for.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def _register_plugins() -> None:
    """Make the torch backend known without an installed distribution (no entry points): import it from
    the checkout's plugins/ folder and register it with prtcore's plugin manager."""
    root = Path(__file__).resolve().parents[2]
    for path in (root, root / "plugins"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    from prtcore import plugins

    if "torch" in plugins.installed_backend_names():
        return
    import prt_torch.plugin

    plugins.plugin_manager().register(prt_torch.plugin, name="torch")
    plugins.backends.cache_clear()


def summary(result: dict) -> str:
    res = result["backends"].get("torch", {})
    gen, train = res.get("generation", {}), res.get("training", {})
    paths = gen.get("paths", {})

    def rate(name):
        entry = paths.get(name) or {}
        value = entry.get("tokens_per_s")
        return "-" if value is None else f"{value:.1f}"

    lines = [f"GPU CHECK on {result.get('environment', {}).get('gpu', '?')} ({gen.get('dtype')}):",
             f"  tokens/s  target eager generate {rate('target.native')} | reward eager generate {rate('reward.native')} | "
             f"target graphed {rate('target.static')} | reward graphed {rate('reward.static')}",
             f"  tokens/s  PRT eager loop {rate('prt.loop')} | PRT pipelined {rate('prt.pipelined')} | "
             f"PRT graphed {rate('prt.static')} | EFT eager {rate('eft.loop')} | EFT graphed {rate('eft.static')}"]
    r = gen.get("ratios", {})
    static = (r.get("prt_paths") or {}).get("static", {})
    if static:
        lines.append(f"  PRT graphed / target eager generate: {static.get('speed_over_target_native') or 0:.2f}x (goal >= 3); "
                     f"PRT graphed time / (target graphed + reward graphed): {static.get('over_same_path_sum') or 0:.3f}; "
                     f"PRT graphed / EFT graphed speed: {static.get('speed_over_eft_same_path') or 0:.2f}x")
    lines.append(f"  PRT tokens identical on every path: {r.get('prt_tokens_identical')} "
                 f"(common prefix with the eager loop: {r.get('prt_tokens_agreement')})")
    for name, entry in (train.get("ratios") or {}).items():
        if isinstance(entry, dict):
            lines.append(f"  train {name}: step/LoRA {entry.get('step_over_lora') or 0:.3f}, "
                         f"memory/LoRA {entry.get('memory_over_lora') or 0:.3f}")
    if (train.get("ratios") or {}).get("twin_limit"):
        lines.append(f"  LoRA twin limit: {train['ratios']['twin_limit']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    tic = time.perf_counter()
    _register_plugins()
    import json

    import torch

    from prtcore.cli.main import main as prt_main

    argv = list(sys.argv[1:] if argv is None else argv)
    output = None
    if "--output" in argv:
        output = argv[argv.index("--output") + 1]
    else:
        output = "gpu-check.json"
        argv += ["--output", output]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"torch {torch.__version__}, cuda {torch.version.cuda}, device {gpu}", flush=True)
    code = prt_main(["bench", "--gpu-check", *argv])
    if code == 0 and Path(output).is_file():
        result = json.loads(Path(output).read_text())
        result.setdefault("environment", {})["gpu"] = gpu
        Path(output).write_text(json.dumps(result, indent=1) + "\n")
        print(summary(result))
    print(f"gpu check: {time.perf_counter() - tic:.0f} s in all", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
