"""Dry-run parameter counts on the meta device (a TinyLlama-shaped config.json, no weights anywhere)."""

import json

import pytest

from prtcore import RewardConfig
from prtcore.rewards import count_lora_parameters, count_reward_parameters

TINYLLAMA = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "num_hidden_layers": 22,
    "num_attention_heads": 32, "num_key_value_heads": 4, "intermediate_size": 5632, "vocab_size": 32000,
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
}
TINYLLAMA_TOTAL = 1_100_048_384


@pytest.fixture(scope="module")
def tinyllama_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("tinyllama")
    (path / "config.json").write_text(json.dumps(TINYLLAMA))
    return path


@pytest.mark.parametrize("config,trainable", [
    (RewardConfig(kind="twin"), 2_293_760),
    (RewardConfig(kind="linear"), 65_536_000),
    (RewardConfig(kind="transformer", d_model=512, num_layers=2, ffn_dim=2048), 25_823_744),
])
def test_tinyllama_dry_run(backend, tinyllama_config, config, trainable):
    counts = backend.count_parameters(tinyllama_config, config)
    assert counts == {"trainable": trainable, "total": TINYLLAMA_TOTAL + trainable, "artifact_bytes": 4 * trainable}
    assert not list(tinyllama_config.glob("*.safetensors"))


def test_tinyllama_full_twin(backend, tinyllama_config):
    counts = backend.count_parameters(tinyllama_config, RewardConfig(kind="twin", fine_tune_type="full"), dtype_bytes=2)
    assert counts == {"trainable": TINYLLAMA_TOTAL, "total": 2 * TINYLLAMA_TOTAL, "artifact_bytes": 2 * TINYLLAMA_TOTAL}
    zero = backend.count_parameters(tinyllama_config, RewardConfig(kind="twin", init="zero_head"))
    assert zero["trainable"] == 2_293_760 + 32000 * 2048


@pytest.mark.parametrize("config", [
    RewardConfig(kind="twin", lora={"rank": 4, "num_layers": 1}),
    RewardConfig(kind="twin", lora={"rank": 2, "keys": ["self_attn.q_proj", "mlp.down_proj"]}),
    RewardConfig(kind="twin", init="zero_head"),
    RewardConfig(kind="twin", fine_tune_type="full"),
    RewardConfig(kind="linear"),
    RewardConfig(kind="transformer", d_model=32, num_layers=1, num_heads=4, ffn_dim=48),
])
def test_dry_run_equals_the_built_reward(backend, source_dir, config):
    source = backend.load_base(source_dir)
    counts = backend.count_parameters(source_dir, config)
    reward = backend.create_reward(config, source)
    trainable, _ = reward.parameter_count()
    assert counts["trainable"] == trainable
    if config.kind == "twin" and config.fine_tune_type == "lora" and config.init == "copy":
        assert trainable == count_lora_parameters(config, source.config)
    if config.kind != "twin":
        assert trainable == count_reward_parameters(config, source.hidden_size, source.vocab_size)
    source_total = sum(p.numel() for n, p in source.model.named_parameters() if "lora_" not in n and "modules_to_save" not in n)
    assert counts["total"] == source_total + trainable
