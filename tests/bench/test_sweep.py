"""`prt bench --sweep --small`: PRT's training step against LoRA's over vocabulary sizes and sequence lengths, the
threads each backend ran with, and the bench tokenizer filled up to the vocabulary asked for (no timing is
asserted)."""

from __future__ import annotations

import json

import pytest

from prtcore.apps.bench.sweep import SWEEPS
from prtcore.benchmarking.models import _fill_vocabulary
from prtcore.cli.main import main
from prtcore.plugins import installed_backend_names
from prtcore.testing.checkpoints import make_tokenizer

BACKENDS = [b for b in ("mlx", "torch") if b in installed_backend_names()]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    if not BACKENDS:
        pytest.skip("needs the mlx or torch backend")
    root = tmp_path_factory.mktemp("bench_sweep")
    out = root / "sweep.json"
    code = main(["bench", "--small", "--sweep", "--quiet", "--output", str(out), "--workdir", str(root / "work"),
                 "--backend", ",".join(BACKENDS)])
    assert code == 0
    return json.loads(out.read_text())


def test_every_point_measures_prt_against_lora(result):
    grid = SWEEPS["small"]
    assert [(p["vocab"], p["seq"]) for p in result["points"]] == [(v, t) for v in grid["vocabs"] for t in grid["seqs"]]
    for point in result["points"]:
        assert set(point["backends"]) == set(BACKENDS)
        for name, train in point["backends"].items():
            steps, ratios = train["steps"], train["ratios"]
            for config in ("lora", "prt.linear", "prt.transformer", "prt.twin", "forward"):
                assert steps[config]["s_per_step"] > 0 and steps[config]["cpu_s_per_step"] > 0, (name, config)
            for config in ("prt.linear", "prt.transformer", "prt.twin"):
                assert steps[config]["peak_bytes"] is not None, (name, config)
                assert ratios[config]["cpu_over_lora"] > 0 and ratios[config]["memory_over_lora"] > 0
            assert ratios["twin_limit"] > 1.0 and ratios["cpu_twin_limit"] > 1.0


def test_the_threads_are_recorded(result):
    for point in result["points"]:
        threads = point["backends"]
        if "torch" in threads:
            assert threads["torch"]["threads"]["torch.get_num_threads()"] == 1  # the small preset's one thread
        if "mlx" in threads:
            assert threads["mlx"]["threads"]["blas"] in ("OpenBLAS", "the wheel's BLAS")
    table = result["table"]
    for point in result["points"]:
        for name in BACKENDS:
            assert f"{name}: vocabulary {point['vocab']}, {point['seq']} positions" in table
    assert "threads: " in table and "CPU/LoRA" in table and "mem/LoRA" in table


def test_bad_sweep_values_are_refused(capsys):
    assert main(["bench", "--small", "--sweep", "--sweep-vocabs", "512,abc"]) != 0
    err = capsys.readouterr().err
    assert "--sweep-vocabs '512,abc': must be comma-separated integers" in err
    assert main(["bench", "--small", "--sweep", "--sweep-seqs", "0"]) != 0
    assert "--sweep-seqs '0': must be integers > 1" in capsys.readouterr().err


def test_the_bench_tokenizer_is_filled_to_the_vocabulary(tmp_path):
    from transformers import AutoTokenizer

    path = make_tokenizer(tmp_path / "tok", "a tiny corpus, far too small for six hundred tokens", vocab_size=600,
                          chat_template=None)
    assert len(AutoTokenizer.from_pretrained(str(path))) < 600
    _fill_vocabulary(path / "tokenizer.json", 600)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    assert len(tokenizer) == 600
    assert tokenizer.decode(tokenizer("a tiny corpus")["input_ids"]) == "a tiny corpus"
