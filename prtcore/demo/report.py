"""The demo's outputs: a markdown table, JSON and a bar chart."""

from __future__ import annotations

import json
from pathlib import Path


def markdown(result: dict) -> str:
    head = (f"backend {result['backend']}, seed {result['seed']}: {result['questions']['A']} held-out questions about A "
            f"(known to both bases), {result['questions']['B']} about B (known to the new base only)\n\n")
    lines = ["| method | models per token | exact match A | exact match B | right capital A | right capital B "
             "| ms per token | weights MB |", "|---|---|---|---|---|---|---|---|"]
    for r in result["results"]:
        lines.append(f"| {r['method']} | {r['models_per_token']} | {r['A']:.2f} | {r['B']:.2f} | {r['A_capital']:.2f} | "
                     f"{r['B_capital']:.2f} | {r['ms_per_token']:.2f} | {r['weights_mb']:.2f} |")
    return head + "\n".join(lines) + "\n"


def chart(result: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = [r["method"] for r in result["results"]]
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.bar([i - 0.2 for i in x], [r["A"] for r in result["results"]], width=0.4, label="questions about A")
    ax.bar([i + 0.2 for i in x], [r["B"] for r in result["results"]], width=0.4, label="questions about B")
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("exact match")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"prt demo ({result['backend']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(result: dict, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "demo.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (directory / "demo.md").write_text(markdown(result), encoding="utf-8")
    chart(result, directory / "demo.png")
