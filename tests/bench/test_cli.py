"""`prt bench --small` on every installed backend: the table, the JSON document, and identical PRT greedy tokens
on every generation path (no timing is asserted)."""

from __future__ import annotations

import json

import pytest

from prtcore.cli.main import main
from prtcore.plugins import installed_backend_names

BACKENDS = [b for b in ("mlx", "torch") if b in installed_backend_names()]
pytestmark = pytest.mark.skipif(not BACKENDS, reason="needs the mlx or torch backend")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_cli")
    out = root / "bench.json"
    code = main(["bench", "--small", "--quiet", "--output", str(out), "--workdir", str(root / "work"),
                 "--backend", ",".join(BACKENDS)])
    assert code == 0
    return json.loads(out.read_text())


def test_json_structure(result):
    assert set(result["backends"]) == set(BACKENDS)
    assert result["config"]["target"]["parameters"] > result["config"]["source"]["parameters"]
    for name, res in result["backends"].items():
        gen = res["generation"]
        paths = gen["paths"]
        for required in ("target.native", "reward.native", "target.loop", "reward.loop", "prt.loop", "eft.loop",
                         "prt.processor"):
            assert required in paths, (name, required)
        for path, entry in paths.items():
            assert entry["s_per_token"] > 0 and entry["tokens_per_s"] > 0, (name, path)
            assert len(entry["tokens"]) == gen["max_tokens"], (name, path)
        fast = {"mlx": ["prt.async", "eft.async"], "torch": ["prt.static", "eft.static", "target.static"]}[name]
        assert all(p in paths for p in fast)
        ratios = gen["ratios"]
        for key in ("prt_over_two_models", "prt_speed_over_eft", "prt_speed_over_target_native"):
            assert ratios[key] > 0, (name, key)
        assert set(ratios["prt_paths"]) >= {"loop", "processor"}
        train = res["training"]
        for config in ("lora", "prt.linear", "prt.transformer", "prt.twin", "forward"):
            assert train["steps"][config]["s_per_step"] > 0, (name, config)
        for config in ("lora", "prt.linear", "prt.twin"):
            assert train["steps"][config]["peak_bytes"] is not None
        assert train["ratios"]["prt.twin"]["step_over_lora"] > 0
        assert train["ratios"]["twin_limit"] > 1.0


def test_prt_greedy_tokens_identical_on_every_path(result):
    """Eager loop, asynchronous (mlx) / static-cache (torch; CUDA graphs on a GPU) paths and the logits processor
    in the backend's own generate: the same greedy tokens."""
    for name, res in result["backends"].items():
        paths = res["generation"]["paths"]
        prt = {k: v["tokens"] for k, v in paths.items() if k.startswith("prt.")}
        assert len(prt) >= 3
        reference = prt["prt.loop"]
        for path, tokens in prt.items():
            assert tokens == reference, (name, path)
        assert res["generation"]["ratios"]["prt_tokens_identical"] is True
        eft = {k: v["tokens"] for k, v in paths.items() if k.startswith("eft.")}
        assert all(t == eft["eft.loop"] for t in eft.values()), name
        # each model alone, through the backend's own generate and through prtcore's loop
        assert paths["target.native"]["tokens"] == paths["target.loop"]["tokens"], name
        assert paths["reward.native"]["tokens"] == paths["reward.loop"]["tokens"], name


def test_table(result):
    table = result["table"]
    for name in BACKENDS:
        assert f"{name}: generation" in table and f"{name}: training step" in table
    assert "PRT / (target + reward)" in table and "time/LoRA" in table
