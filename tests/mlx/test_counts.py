"""Dry-run parameter counts from config.json alone (no weights are materialised)."""

from __future__ import annotations

import json
import resource

import pytest

from mlx_testutil import reward_config
from prtcore import RewardConfig

TINYLLAMA = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "num_hidden_layers": 22,
    "num_attention_heads": 32, "num_key_value_heads": 4, "intermediate_size": 5632, "vocab_size": 32000,
    "rms_norm_eps": 1e-5, "max_position_embeddings": 2048, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
}
TINYLLAMA_TOTAL = 1_100_048_384


@pytest.fixture(scope="module")
def tinyllama_dir(tmp_path_factory, ckpts):
    path = tmp_path_factory.mktemp("tinyllama-config")
    (path / "config.json").write_text(json.dumps(TINYLLAMA))
    for item in ckpts["tok"].iterdir():
        (path / item.name).write_bytes(item.read_bytes())
    return path


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("config,trainable,total", [
    (RewardConfig(kind="twin", fine_tune_type="lora", lora={"rank": 8, "num_layers": 8}), 2_293_760, TINYLLAMA_TOTAL + 2_293_760),
    (RewardConfig(kind="linear"), 65_536_000, TINYLLAMA_TOTAL + 65_536_000),
    (RewardConfig(kind="transformer", d_model=512, num_layers=2, ffn_dim=2048), 25_823_744, TINYLLAMA_TOTAL + 25_823_744),
    (RewardConfig(kind="twin", fine_tune_type="full"), TINYLLAMA_TOTAL, 2 * TINYLLAMA_TOTAL),
])
def test_tinyllama_counts_from_config_only(backend, ckpts, tinyllama_dir, config, trainable, total):
    backend.count_parameters(ckpts["source"], config)  # imports done, so that the memory check sees the count alone
    before = peak_rss_mb()
    counts = backend.count_parameters(tinyllama_dir, config)
    assert counts["trainable"] == trainable and counts["total"] == total
    bytes_per = 2 if config.fine_tune_type == "full" and config.kind == "twin" else 4  # full twin: the source's bf16
    assert counts["artifact_bytes"] == bytes_per * trainable
    assert peak_rss_mb() - before < 50  # the weights of 1.1B parameters would take GBs


@pytest.mark.parametrize("name,overrides", [
    ("linear", {}), ("transformer", {}), ("lora", {}), ("lora_zero_head", {}), ("full", {}),
    ("lora", {"lora": {"rank": 3, "num_layers": -1, "keys": ["self_attn.o_proj", "up_proj"]}}),
    ("full", {"init": "zero_head"}),
])
def test_counts_equal_created_rewards(backend, ckpts, name, overrides):
    source = backend.load_base(ckpts["source"])
    config = reward_config(name, **overrides)
    reward = backend.create_reward(config, source)
    counts = backend.count_parameters(ckpts["source"], config)
    trainable, reward_total = reward.parameter_count()
    assert counts["trainable"] == trainable
    if config.kind == "twin" and config.fine_tune_type == "lora":  # the twin is the source plus its adapters
        assert counts["total"] == reward_total
    else:  # the frozen source and the reward are separate
        from mlx.utils import tree_flatten

        source_total = sum(v.size for _, v in tree_flatten(source.model.parameters()))
        assert counts["total"] == source_total + trainable
