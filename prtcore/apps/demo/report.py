"""The demo's outputs: mean ± standard deviation over seeds as markdown tables (accuracy, then cost), JSON with every
seed's figures, and a bar chart."""

from __future__ import annotations

import statistics
from pathlib import Path

from ...artifacts import write_json_atomic

METRICS = ("A", "B", "A_capital", "B_capital", "ms_per_token", "peak_mb")
# What each base was pretrained to know, read off the rows that show it: the new base alone knows A and B; the old
# base (seen through its LoRA fine-tune, which keeps its facts) knows A. Below LEARNED, pretraining failed.
BASE_FACTS = {"new base alone": ("new base", ("A", "B")), "old base + LoRA": ("old base", ("A",))}
LEARNED = 0.5


def summarize(backend: str, runs: list[dict], *, seconds: float) -> dict:
    """One row per method: each metric's mean, its standard deviation over the seeds (`<metric>_std`, n − 1; 0 for
    one seed) and every seed's value (`per_seed`)."""
    rows = []
    for i, first in enumerate(runs[0]["results"]):
        row = {"method": first["method"], "models_per_token": first["models_per_token"],
               "memory_measure": first["memory_measure"], "per_seed": {}}
        for metric in METRICS:
            values = [run["results"][i][metric] for run in runs]
            row[metric] = round(statistics.fmean(values), 4)
            row[f"{metric}_std"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
            row["per_seed"][metric] = values
        if "margins" in first:  # a PRT method: the margins at the first answer token, averaged over the seeds
            row["margins"] = {split: {key: round(statistics.fmean(run["results"][i]["margins"][split][key]
                                                                 for run in runs), 2)
                                      for key in first["margins"][split]} for split in first["margins"]}
        rows.append(row)
    return {"backend": backend, "seeds": [run["seed"] for run in runs], "entities": runs[0]["entities"],
            "questions": runs[0]["questions"], "results": rows, "runs": runs, "seconds": seconds,
            "warnings": unlearned_bases(runs)}


def unlearned_bases(runs: list[dict]) -> list[str]:
    """One line per seed whose base names the right capital for fewer than half of the facts it was pretrained on:
    its pretraining stalled on that draw, and every method built on that base says nothing about PRT there."""
    lines = []
    for run in runs:
        for row in run["results"]:
            base, splits = BASE_FACTS.get(row["method"], (None, ()))
            missed = [f"{split} {row[split + '_capital']:.2f}" for split in splits if row[split + "_capital"] < LEARNED]
            if missed:
                lines.append(f"seed {run['seed']}: the {base} did not learn its facts in pretraining (right capital, "
                             f"{row['method']}: {', '.join(missed)}), so this seed's rows on the {base} do not measure "
                             f"the methods; run other seeds (--seed, --seeds)")
    return lines


def speed_relative_to_new_base(result: dict) -> dict[str, float]:
    """Tokens per second of each method over the new base alone's (1.0 = as fast as one forward per token)."""
    ms = {r["method"]: r["ms_per_token"] for r in result["results"]}
    reference = ms.get("new base alone")
    return {name: round(reference / value, 2) if reference and value else None for name, value in ms.items()}


def _pm(row: dict, metric: str, digits: int = 2) -> str:
    if len(row["per_seed"][metric]) == 1:
        return f"{row[metric]:.{digits}f}"
    return f"{row[metric]:.{digits}f} ± {row[metric + '_std']:.{digits}f}"


def what_dominates(result: dict) -> str:
    """The new base alone's arithmetic against its time per token: at the demo's size a token's cost is a fixed
    per-model step (dispatch, cache update, composing and sampling), not its multiply-adds."""
    alone = next((r for r in result["results"] if r["method"] == "new base alone"), None)
    mflop = result["runs"][0].get("mflop_per_token", {}).get("new base")
    if alone is None or not mflop or not alone["ms_per_token"]:
        return ""
    gflops = mflop / alone["ms_per_token"]  # MFLOP per ms = GFLOP/s
    return (f"What dominates: the new base alone does {mflop:.2f} MFLOP per token in {alone['ms_per_token']:.2f} ms "
            f"({gflops:.2f} GFLOP/s), far below what this machine multiplies at; at this size a token costs a fixed "
            f"step per model (framework dispatch, KV-cache update, composing and sampling), so the cost follows the "
            f"models per token, not their size (`prt bench` measures realistic sizes).\n")


def linear_note(result: dict) -> str:
    """Why the linear reward fails, with the seeds' measurements (prtcore.apps.demo.linear_probe)."""
    probes = [run["linear_probe"] for run in result["runs"] if "linear_probe" in run]
    if not probes:
        return ""
    mean = {k: statistics.fmean(p[k] for p in probes) for k in probes[0]}
    return (f"\nA linear reward reads only the source's last hidden state, and there the start of an answer and the "
            f"position after `Answer:` look alike: both predict the capital (cosine {mean['cosine']:.2f} on held-out "
            f"questions). The best linear separator of the two, fitted on the training questions "
            f"({mean['train_accuracy']:.2f} right there), gets {mean['held_out_accuracy']:.2f} on held-out ones (0.5 "
            f"is chance): no linear head can ask for `Answer:` at one and not the other, so it cannot learn this "
            f"format (docs/method.md).\n")


def margins_table(result: dict) -> str:
    """Where the style is won or lost: at the first answer token, the reward's margin for ` Answer` over the
    capital, the base's preference for the capital, and what is left (docs/method.md)."""
    rows = [r for r in result["results"] if "margins" in r]
    if not rows:
        return ""
    out = ["\nAt the first answer token (nats, mean over questions and seeds): the reward's margin for ` Answer` over "
           "the capital, the base's preference for the capital, and the margin left (the style wins where it is > 0)\n",
           "| method | reward margin A | base gap A | left A | reward margin B | base gap B | left B |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        a, b = r["margins"]["A"], r["margins"]["B"]
        out.append(f"| {r['method']} | {a['reward_margin']:.1f} | {a['base_gap']:.1f} | {a['left']:.1f} | "
                   f"{b['reward_margin']:.1f} | {b['base_gap']:.1f} | {b['left']:.1f} |")
    return "\n".join(out) + "\n"


def markdown(result: dict) -> str:
    seeds = result["seeds"]
    over = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean ± standard deviation over seeds {', '.join(map(str, seeds))}"
    head = (f"backend {result['backend']}, {over}: {result['questions']['A']} held-out questions about A (known to both "
            f"bases), {result['questions']['B']} about B (known to the new base only)\n\n")
    head += "".join(f"**Warning:** {line}.\n\n" for line in result["warnings"])
    accuracy = ["| method | exact match A | exact match B | right capital A | right capital B |", "|---|---|---|---|---|"]
    for r in result["results"]:
        accuracy.append(f"| {r['method']} | {_pm(r, 'A')} | {_pm(r, 'B')} | {_pm(r, 'A_capital')} | {_pm(r, 'B_capital')} |")
    speed = speed_relative_to_new_base(result)
    measure = result["results"][0]["memory_measure"] if result["results"] else ""
    cost = ["| method | models per token | ms per token | speed vs new base alone | added peak MB |", "|---|---|---|---|---|"]
    for r in result["results"]:
        relative = "" if speed[r["method"]] is None else f"{speed[r['method']]:.2f}x"
        cost.append(f"| {r['method']} | {r['models_per_token']} | {_pm(r, 'ms_per_token')} | {relative} | {_pm(r, 'peak_mb')} |")
    return (head + "\n".join(accuracy) + "\n" + margins_table(result) + linear_note(result) + f"\nCost per decoded token (median of rounds that run every method in turn on the same "
            f"questions, after a warm-up answer; each answer's first token, which reads the prompt, left out; peak "
            f"memory: {measure} above the level before the method loaded, loading included)\n\n" + "\n".join(cost) + "\n\n"
            + what_dominates(result))


def chart(result: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = result["results"]
    names = [r["method"] for r in rows]
    x = list(range(len(names)))
    fig, (acc, cost) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    for offset, split, label in ((-0.2, "A", "questions about A (both bases know)"),
                                 (0.2, "B", "questions about B (new base knows)")):
        acc.bar([i + offset for i in x], [r[split] for r in rows], width=0.4, label=label,
                yerr=[r[f"{split}_std"] for r in rows], capsize=3)
    acc.set_ylabel("exact match")
    acc.set_ylim(0, 1.05)
    acc.legend(fontsize=8)
    cost.bar(x, [r["ms_per_token"] for r in rows], yerr=[r["ms_per_token_std"] for r in rows], capsize=3, color="gray")
    cost.set_ylabel("ms per decoded token")
    for ax in (acc, cost):
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    seeds = result["seeds"]
    fig.suptitle(f"prt demo ({result['backend']}, " + (f"seed {seeds[0]})" if len(seeds) == 1 else
                                                       f"mean ± std over {len(seeds)} seeds)"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(result: dict, directory: Path) -> list[Path]:
    """demo.json, demo.md and (with matplotlib) demo.png in `directory`; returns what it wrote."""
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic(directory / "demo.json", result)
    (directory / "demo.md").write_text(markdown(result), encoding="utf-8")
    picture = chart(result, directory / "demo.png")
    return [directory / "demo.json", directory / "demo.md"] + ([picture] if picture else [])
