"""`prt bench --eval-batches --small`: tokens/s of `prt eval`'s greedy decoding at batch 1, 8 and 32 for PRT and the
target alone on every installed backend, as JSON and a table (no timing is asserted)."""

from __future__ import annotations

import json

import pytest

from prtcore.benchmarking.eval_throughput import BATCHES
from prtcore.cli.main import main
from prtcore.plugins import installed_backend_names

BACKENDS = [b for b in ("mlx", "torch") if b in installed_backend_names()]
pytestmark = pytest.mark.skipif(not BACKENDS, reason="needs the mlx or torch backend")


def test_eval_batches_reports_every_backend_batch_and_model(tmp_path, capsys):
    out = tmp_path / "eval_batches.json"
    code = main(["bench", "--eval-batches", "--small", "--quiet", "--max-tokens", "3", "--output", str(out),
                 "--workdir", str(tmp_path / "work"), "--backend", ",".join(BACKENDS)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["batches"] == list(BATCHES) == [1, 8, 32] and result["prompts"] == 32
    assert set(result["results"]) == set(BACKENDS)
    for rows in result["results"].values():
        assert list(rows) == [str(b) for b in BATCHES]
        for row in rows.values():
            for label in ("target", "prt"):
                assert row[label]["tokens_per_s"] > 0 and 0 < row[label]["tokens"] <= 32 * 3
    table = capsys.readouterr().out
    assert table.count("\n| ") == len(BACKENDS) * len(BATCHES)  # one row per backend and batch
    assert "| PRT / target |" in table
