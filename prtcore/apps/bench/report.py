"""Ratios, the terminal table and the JSON document of a `prt bench` run."""

from __future__ import annotations

from ...benchmarking.threads import describe
from ...benchmarking.timing import ratio

PRT_PATHS = ("loop", "pipelined", "async", "static", "processor")


def _t(paths: dict, name: str):
    entry = paths.get(name)
    return None if entry is None else entry.get("s_per_token")


def _best(paths: dict, prefix: str):
    found = [(v["s_per_token"], k) for k, v in paths.items() if k.startswith(prefix + ".") and v.get("s_per_token")]
    return min(found) if found else (None, None)


def generation_ratios(gen: dict) -> dict:
    """PRT's time per token over the sum of its two models', PRT's speed over EFT's, and the gains of the fast paths."""
    paths = gen["paths"]
    out: dict = {}
    native_sum = None
    if _t(paths, "target.native") and _t(paths, "reward.native"):
        native_sum = _t(paths, "target.native") + _t(paths, "reward.native")
    per_path = {}
    for kind in PRT_PATHS:
        prt = _t(paths, f"prt.{kind}")
        if prt is None:
            continue
        same = [_t(paths, f"target.{kind}"), _t(paths, f"reward.{kind}")]
        entry = {"over_same_path_sum": ratio(prt, same[0] + same[1]) if None not in same else None,
                 "over_native_sum": ratio(prt, native_sum),
                 "speed_over_target_native": ratio(_t(paths, "target.native"), prt)}
        eft = _t(paths, f"eft.{kind}")
        entry["speed_over_eft_same_path"] = ratio(eft, prt)
        per_path[kind] = entry
    out["prt_paths"] = per_path
    best_prt, best_name = _best(paths, "prt")
    best_target, target_name = _best(paths, "target")
    best_reward, reward_name = _best(paths, "reward")
    best_eft, eft_name = _best(paths, "eft")
    out["best"] = {"prt": best_name, "target": target_name, "reward": reward_name, "eft": eft_name}
    # 1.0: PRT costs exactly its two forward passes run one after the other (each model's fastest path)
    out["prt_over_two_models"] = ratio(best_prt, (best_target or 0) + (best_reward or 0)) if best_reward else None
    out["prt_speed_over_eft"] = ratio(best_eft, best_prt)
    out["prt_speed_over_target_native"] = ratio(_t(paths, "target.native"), best_prt)
    loop = _t(paths, "prt.loop")
    for kind in ("pipelined", "async", "static"):
        if _t(paths, f"prt.{kind}"):
            out[f"{kind}_gain"] = ratio(loop, _t(paths, f"prt.{kind}"))
    tokens = {k: v["tokens"] for k, v in paths.items() if k.startswith("prt.") and v.get("tokens") is not None}
    reference = tokens.get("prt.loop")
    out["prt_tokens_identical"] = all(t == reference for t in tokens.values())
    out["prt_tokens_agreement"] = {k: _agreement(reference, t) for k, t in tokens.items()}
    eft_tokens = [v["tokens"] for k, v in paths.items() if k.startswith("eft.") and v.get("tokens") is not None]
    out["eft_tokens_identical"] = all(t == eft_tokens[0] for t in eft_tokens) if eft_tokens else None
    return out


def _agreement(a, b) -> int:
    """Length of the common prefix of two token lists."""
    n = 0
    for x, y in zip(a or [], b or []):
        if x != y:
            break
        n += 1
    return n


def training_ratios(train: dict) -> dict:
    """Per PRT configuration its step time (wall clock, and CPU time) and peak memory over LoRA's; the twin's limit
    1 + forward / LoRA step, of each clock (where LoRA adapts every block; an mlx twin adapting only the last ones
    skips the blocks before them in its pass, prt_mlx.prefix, and can go under it)."""
    steps = train["steps"]
    lora = steps.get("lora", {})
    out = {}
    for name, entry in steps.items():
        if not name.startswith("prt."):
            continue
        out[name] = {"step_over_lora": ratio(entry["s_per_step"], lora.get("s_per_step")),
                     "cpu_over_lora": ratio(entry.get("cpu_s_per_step"), lora.get("cpu_s_per_step")),
                     "memory_over_lora": ratio(entry.get("peak_bytes"), lora.get("peak_bytes"))}
    forward = steps.get("forward", {})
    for key, clock in (("twin_limit", "s_per_step"), ("cpu_twin_limit", "cpu_s_per_step")):
        if forward.get(clock) and lora.get(clock):
            # a LoRA twin adds one frozen forward pass of the source to a LoRA step
            out[key] = 1.0 + forward[clock] / lora[clock]
    return out


# ------------------------------------------------------------------------------------------------ table
def _fmt(x, spec=".2f", suffix=""):
    return "-" if x is None else f"{x:{spec}}{suffix}"


def table(result: dict) -> str:
    lines = []
    for backend, res in result["backends"].items():
        gen = res.get("generation")
        if gen:
            lines.append(f"{backend}: generation on {gen['device']} ({gen['dtype']}), reward {gen['reward_kind']}, "
                         f"{gen['max_tokens']} tokens after a {gen['prompt_tokens']}-token prompt")
            lines.append(f"  {'path':<20}{'tokens/s':>10}{'ms/token':>10}")
            for name, entry in gen["paths"].items():
                s = entry.get("s_per_token")
                lines.append(f"  {name:<20}{_fmt(entry.get('tokens_per_s')):>10}{_fmt(s and s * 1e3):>10}"
                             + (f"  failed: {entry['error']}" if entry.get("error") else ""))
            r = gen["ratios"]
            lines.append(f"  PRT / (target + reward), best paths: {_fmt(r['prt_over_two_models'], '.3f')}   "
                         f"PRT speed / EFT speed: {_fmt(r['prt_speed_over_eft'], '.2f')}x   "
                         f"PRT speed / target generate: {_fmt(r['prt_speed_over_target_native'], '.2f')}x")
            for kind, entry in r["prt_paths"].items():
                lines.append(f"    prt.{kind:<10} / (target+reward) same path {_fmt(entry['over_same_path_sum'], '.3f')}, "
                             f"native {_fmt(entry['over_native_sum'], '.3f')};  vs EFT same path "
                             f"{_fmt(entry['speed_over_eft_same_path'], '.2f')}x")
            gains = ", ".join(f"{k.replace('_gain', '')} {v:.2f}x" for k, v in r.items() if k.endswith("_gain") and v)
            if gains:
                lines.append(f"  gain over the eager loop: {gains}")
            lines.append(f"  PRT greedy tokens identical on every path: {r['prt_tokens_identical']}"
                         + ("" if r["prt_tokens_identical"] else f" (common prefix: {r['prt_tokens_agreement']})"))
        train = res.get("training")
        if train:
            lines.append(f"{backend}: training step on {train['device']} ({train['dtype']}); memory: {train['memory_measure']}")
            lines.extend(training_lines(train))
    return "\n".join(lines)


def training_lines(train: dict) -> list[str]:
    """The rows of one training result: wall and CPU time per step, peak memory, their ratios over LoRA."""
    threads = train.get("threads")
    lines = [f"  threads: {describe(threads)}"] if threads is not None else []
    lines.append(f"  {'config':<18}{'ms/step':>10}{'CPU ms':>10}{'peak MB':>10}{'time/LoRA':>11}{'CPU/LoRA':>10}"
                 f"{'mem/LoRA':>10}")
    r = train["ratios"]
    for name, entry in train["steps"].items():
        rr = r.get(name, {})
        mem, step, cpu = entry.get("peak_bytes"), entry.get("s_per_step"), entry.get("cpu_s_per_step")
        lines.append(f"  {name:<18}{_fmt(step and step * 1e3, '.1f'):>10}{_fmt(cpu and cpu * 1e3, '.1f'):>10}"
                     f"{_fmt(mem and mem / 1e6, '.0f'):>10}{_fmt(rr.get('step_over_lora'), '.3f'):>11}"
                     f"{_fmt(rr.get('cpu_over_lora'), '.3f'):>10}{_fmt(rr.get('memory_over_lora'), '.3f'):>10}"
                     + (f"  failed: {entry['error']}" if entry.get("error") else ""))
    if r.get("twin_limit"):
        lines.append(f"  LoRA twin limit, no block shared with the source (1 + forward / LoRA step): "
                     f"{r['twin_limit']:.3f} (CPU time: {_fmt(r.get('cpu_twin_limit'), '.3f')})")
    return lines
