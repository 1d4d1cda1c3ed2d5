"""The demo's report over seeds: means, standard deviations and every seed's figures, as JSON, markdown and a chart."""

import json
import statistics

import pytest

from prtcore.apps.demo.report import markdown, summarize, write_report

METHODS = ("new base alone", "PRT twin on new base", "PRT linear on new base", "EFT on new base")


def run(seed: int, a: list[float]) -> dict:
    """One seed's figures: method i gets exact match a[i] on A and B = A / 2, and i + 1 ms per token."""
    results = [{"method": m, "models_per_token": 1 + (i > 0) + (m.startswith("EFT")), "A": a[i], "B": a[i] / 2,
                "A_capital": 1.0, "B_capital": 1.0, "ms_per_token": float(i + 1) * (1 + seed / 10), "peak_mb": 2.0,
                "memory_measure": "peak RSS"} for i, m in enumerate(METHODS)]
    for row in results[1:3]:  # the PRT methods: margins at the first answer token
        row["margins"] = {s: {"reward_margin": 14.0 + seed, "base_gap": 12.0, "left": 2.0 + seed} for s in "AB"}
    return {"seed": seed, "entities": {"A": 24, "B": 24}, "questions": {"A": 10, "B": 24}, "results": results,
            "mflop_per_token": {"new base": 0.5},
            "linear_probe": {"cosine": 0.95, "train_accuracy": 1.0, "held_out_accuracy": 0.5 + seed / 100}}


RUNS = [run(0, [0.0, 0.9, 0.0, 0.5]), run(1, [0.0, 1.0, 0.0, 0.7]), run(2, [0.0, 0.8, 0.0, 0.6])]


def test_summary_holds_mean_std_and_every_seed():
    result = summarize("torch", RUNS, seconds=1.0)
    assert result["seeds"] == [0, 1, 2] and result["runs"] == RUNS
    prt = next(r for r in result["results"] if r["method"] == "PRT twin on new base")
    assert prt["per_seed"]["A"] == [0.9, 1.0, 0.8]
    assert prt["A"] == pytest.approx(0.9) and prt["A_std"] == pytest.approx(statistics.stdev([0.9, 1.0, 0.8]), abs=1e-4)
    assert prt["B"] == pytest.approx(0.45) and prt["models_per_token"] == 2
    assert prt["margins"]["B"] == {"reward_margin": 15.0, "base_gap": 12.0, "left": 3.0}  # the mean over seeds


def test_markdown_gives_mean_and_std_for_several_seeds_and_plain_figures_for_one():
    several = markdown(summarize("torch", RUNS, seconds=1.0))
    assert "mean ± standard deviation over seeds 0, 1, 2" in several
    assert "| PRT twin on new base | 0.90 ± 0.10 | 0.45 ± 0.05 |" in several
    one = markdown(summarize("torch", RUNS[:1], seconds=1.0))
    assert "seed 0:" in one and "±" not in one.split("Cost")[0]
    # the cost table names what dominates: the new base alone's arithmetic against its time per token
    assert "0.50 MFLOP per token in 1.00 ms (0.50 GFLOP/s)" in one
    assert "| PRT twin on new base | 14.0 | 12.0 | 2.0 | 14.0 | 12.0 | 2.0 |" in one
    assert "| PRT twin on new base | 15.0 | 12.0 | 3.0 |" in several and "| EFT on new base | 5" not in several
    # a linear reward in the table comes with the measured reason it cannot learn the format
    assert "(cosine 0.95 on held-out questions)" in one and "gets 0.50 on held-out ones" in one
    assert "gets 0.51 on held-out ones" in several  # the mean over the seeds' probes


def test_report_files_hold_every_seed(tmp_path):
    result = summarize("torch", RUNS, seconds=1.0)
    written = write_report(result, tmp_path)
    assert tmp_path / "demo.json" in written and tmp_path / "demo.md" in written
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert [r["seed"] for r in saved["runs"]] == [0, 1, 2]
    assert saved["results"][1]["per_seed"]["ms_per_token"] == [2.0, 2.2, 2.4]


def test_a_base_that_did_not_learn_its_facts_is_named_in_the_report_and_log():
    stalled = run(1, [0.0, 0.9, 0.0, 0.5])
    stalled["results"][0].update(A_capital=0.2, B_capital=0.08)  # the new base alone: pretraining stalled
    result = summarize("mlx", [RUNS[0], stalled], seconds=1.0)
    assert result["warnings"] == [
        "seed 1: the new base did not learn its facts in pretraining (right capital, new base alone: A 0.20, B 0.08), "
        "so this seed's rows on the new base do not measure the methods; run other seeds (--seed, --seeds)"]
    assert markdown(result).count("**Warning:** seed 1: the new base") == 1
    assert summarize("mlx", RUNS, seconds=1.0)["warnings"] == []
    assert "Warning" not in markdown(summarize("mlx", RUNS, seconds=1.0))
