"""`prt eval --batch-size`: answers decoded in left-padded batches are those of one at a time (greedy), for the
target alone, PRT and EFT, on every installed backend; a bad size is one line before any model loads."""

from __future__ import annotations

import json

from conftest import BACKENDS

from prtcore.cli.main import main


def evaluate(capsys, ws, backend, reward, output, *extra) -> dict:
    code = main([str(a) for a in ["eval", "--backend", backend, "--model", ws["target"], "--reward", reward, "--ft",
                                  ws["target"], "--source", ws["source"], "--data", ws["data"], "--split", "valid",
                                  "--max-tokens", "6", "--output", output, *extra]])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    return json.loads(output.read_text())


def test_batched_eval_answers_equal_one_at_a_time(capsys, ws, backend, tmp_path):
    from prtcore.config import RewardConfig
    from prtcore.plugins import get_backend

    b = get_backend(backend)
    source = b.load_base(ws["source"])
    reward = tmp_path / "twin"
    b.create_reward(RewardConfig(kind="twin", fine_tune_type="full"), source).save(reward, source=source,
                                                                                   vocab_size=source.vocab_size)
    one = evaluate(capsys, ws, backend, reward, tmp_path / "one.json", "--batch-size", "1")
    many = evaluate(capsys, ws, backend, reward, tmp_path / "many.json", "--batch-size", "3")
    assert set(one["results"]) == {"base", "prt", "eft"}
    assert one["generations"] == many["generations"] and len(many["generations"]) == 8
    for name, scores in many["results"].items():
        assert scores["batch_size"] == 3 and "batch_fallback" not in scores
        assert {k: v for k, v in scores.items() if k != "batch_size"} == \
            {k: v for k, v in one["results"][name].items() if k != "batch_size"}
    outputs = {g["outputs"]["eft"] for g in many["generations"]}
    assert len(outputs) > 1  # the answers differ from row to row: the comparison is not between empty strings


def test_a_bad_batch_size_is_one_line(capsys, ws, tmp_path):
    code = main(["eval", "--backend", BACKENDS[0], "--model", str(tmp_path / "not-loaded"), "--data", str(ws["data"]),
                 "--batch-size", "0"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and lines == ["prt eval: error: --batch-size 0: must be >= 1"], lines
