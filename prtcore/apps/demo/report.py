"""The demo's outputs: markdown tables (accuracy, then cost), JSON and a bar chart."""

from __future__ import annotations

import json
from pathlib import Path


def speed_relative_to_new_base(result: dict) -> dict[str, float]:
    """Tokens per second of each method over the new base alone's (1.0 = as fast as one forward per token)."""
    ms = {r["method"]: r["ms_per_token"] for r in result["results"]}
    reference = ms.get("new base alone")
    return {name: round(reference / value, 2) if reference and value else None for name, value in ms.items()}


def markdown(result: dict) -> str:
    head = (f"backend {result['backend']}, seed {result['seed']}: {result['questions']['A']} held-out questions about A "
            f"(known to both bases), {result['questions']['B']} about B (known to the new base only)\n\n")
    accuracy = ["| method | exact match A | exact match B | right capital A | right capital B |", "|---|---|---|---|---|"]
    for r in result["results"]:
        accuracy.append(f"| {r['method']} | {r['A']:.2f} | {r['B']:.2f} | {r['A_capital']:.2f} | {r['B_capital']:.2f} |")
    speed = speed_relative_to_new_base(result)
    measure = result["results"][0]["memory_measure"] if result["results"] else ""
    cost = ["| method | models per token | ms per token | speed vs new base alone | peak MB |", "|---|---|---|---|---|"]
    for r in result["results"]:
        relative = "" if speed[r["method"]] is None else f"{speed[r['method']]:.2f}x"
        cost.append(f"| {r['method']} | {r['models_per_token']} | {r['ms_per_token']:.2f} | {relative} | {r['peak_mb']:.2f} |")
    return (head + "\n".join(accuracy) + f"\n\nCost per generated token (peak memory: {measure}, loading included)\n\n"
            + "\n".join(cost) + "\n")


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
    acc.bar([i - 0.2 for i in x], [r["A"] for r in rows], width=0.4, label="questions about A (both bases know)")
    acc.bar([i + 0.2 for i in x], [r["B"] for r in rows], width=0.4, label="questions about B (new base knows)")
    acc.set_ylabel("exact match")
    acc.set_ylim(0, 1.05)
    acc.legend(fontsize=8)
    cost.bar(x, [r["ms_per_token"] for r in rows], color="gray")
    cost.set_ylabel("ms per generated token")
    for ax in (acc, cost):
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    fig.suptitle(f"prt demo ({result['backend']}, seed {result['seed']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(result: dict, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "demo.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (directory / "demo.md").write_text(markdown(result), encoding="utf-8")
    chart(result, directory / "demo.png")
