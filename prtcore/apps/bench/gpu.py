"""The one-shot GPU check, runnable from a bare checkout (prtcore need not be installed):

    PYTHONUNBUFFERED=1 python3 -m prtcore.apps.bench.gpu --output $OUT/gpu.json 2>&1 | tee $OUT/gpu.log

It is `prt bench --gpu-check`: a TinyLlama-1.1B-shaped random target and a ~0.25B source in bfloat16 on the
CUDA device; tokens/s of the target alone through transformers' `generate` (eager), PRT through prtcore's eager
loop, its pipelined loop and static caches + one CUDA graph per step, EFT eager and graphed; then training steps
of each reward kind against peft LoRA. Extra arguments go to `prt bench` (e.g. `--repeats 1`). The last lines
printed are a summary of the figures the issue asks for. The torch backend measures itself
(`backend.benchmark`, prt_torch.bench) and reports the CUDA device it ran on.
"""

from __future__ import annotations

import importlib
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the checkout: pyproject.toml, prtcore/, plugins/


def checkout_entry_points(pyproject: Path) -> dict[str, str]:
    """{plugin name: module} of the `[project.entry-points.prtcore]` table of a pyproject.toml."""
    out, inside = {}, False
    for line in pyproject.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("["):
            inside = line == "[project.entry-points.prtcore]"
        elif inside and (m := re.fullmatch(r'([\w.-]+)\s*=\s*["\']([\w.:]+)["\']', line)):
            out[m.group(1)] = m.group(2)
    return out


def _register_plugins() -> None:
    """Without an installed distribution there are no entry points: put the checkout and its plugins/ folder on
    the path and register the plugins its pyproject.toml declares (those whose modules import) with prtcore's
    plugin manager, as an installed distribution's entry points would be."""
    for path in (ROOT, ROOT / "plugins"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    from prtcore import plugins

    manager = plugins.plugin_manager()
    for name, module in checkout_entry_points(ROOT / "pyproject.toml").items():
        if manager.get_plugin(name) is not None or manager.is_blocked(name):
            continue
        try:
            manager.register(importlib.import_module(module.partition(":")[0]), name=name)
        except ImportError:  # a plugin whose own dependencies are missing here
            continue
    plugins.backends.cache_clear()
    plugins.model_families.cache_clear()


def summary(result: dict) -> str:
    res = result["backends"].get("torch", {})
    gen, train = res.get("generation", {}), res.get("training", {})
    paths = gen.get("paths", {})

    def rate(name):
        entry = paths.get(name) or {}
        value = entry.get("tokens_per_s")
        return "-" if value is None else f"{value:.1f}"

    lines = [f"GPU CHECK on {(res.get('cuda') or {}).get('device', 'no GPU')} ({gen.get('dtype')}):",
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

    from prtcore.cli.main import main as prt_main

    argv = list(sys.argv[1:] if argv is None else argv)
    output = None
    if "--output" in argv:
        output = argv[argv.index("--output") + 1]
    else:
        output = "gpu-check.json"
        argv += ["--output", output]
    check = ["--backend", "torch"] if "--preset" in argv else ["--gpu-check"]  # another preset, e.g. gpu-1b
    code = prt_main(["bench", *check, *argv])
    if code == 0 and Path(output).is_file():
        result = json.loads(Path(output).read_text())
        cuda = result["backends"].get("torch", {}).get("cuda") or {}
        print(f"torch {result.get('environment', {}).get('torch')}, cuda {cuda.get('version')}, "
              f"device {cuda.get('device', 'no GPU')}", flush=True)
        print(summary(result))
    print(f"gpu check: {time.perf_counter() - tic:.0f} s in all", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
