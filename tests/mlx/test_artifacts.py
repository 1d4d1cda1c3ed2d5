"""Reward artifacts: round trips, PEFT and transformers read what mlx writes, mlx-lm adapters serve as twins."""

from __future__ import annotations

import json
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_testutil import IDS, perturb, reward_config
from prtcore import PRTForCausalLM, RewardArtifact, RewardConfig, TokenizerMismatchError
from prtcore import adapters
from prtcore.artifacts import ArtifactWriter, reward_meta

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def reward_logits(reward, source, ids=IDS):
    hidden = source.forward(mx.array(ids), hidden=True).hidden if reward.reads_source_hidden else None
    return np.array(reward.forward(mx.array(ids), source_hidden=hidden))


def trained(backend, ckpts, name, **overrides):
    source = backend.load_base(ckpts["source"])
    return source, perturb(backend.create_reward(reward_config(name, **overrides), source, seed=1), seed=3)


@pytest.mark.parametrize("name", ["linear", "transformer", "lora", "lora_zero_head", "full"])
def test_round_trip(backend, ckpts, tmp_path, name):
    source, reward = trained(backend, ckpts, name)
    want = reward_logits(reward, source)
    reward.save(tmp_path / "r", source=source, vocab_size=reward.shared_vocab, extra={"note": "x"})
    artifact = RewardArtifact.open(tmp_path / "r")
    assert artifact.meta["note"] == "x" and artifact.vocab_size == 384 and artifact.has_tokenizer
    fresh = backend.load_base(ckpts["source"])
    loaded = backend.load_reward(artifact, fresh)
    np.testing.assert_allclose(reward_logits(loaded, fresh), want, atol=1e-5)
    assert loaded.parameter_count() == reward.parameter_count()


@pytest.mark.parametrize("name", ["lora", "lora_zero_head"])
def test_lora_twin_loads_in_peft(backend, ckpts, tmp_path, name):
    from peft import PeftModel

    source, reward = trained(backend, ckpts, name)
    reward.save(tmp_path / "r", source=source, vocab_size=reward.shared_vocab)
    config = json.loads((tmp_path / "r" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["lora_alpha"] == reward.config.lora.scale * reward.config.lora.rank
    assert config["layers_to_transform"] == list(range(2 - reward.config.lora.num_layers, 2))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(ckpts["source"]), dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(hf, str(tmp_path / "r")).eval()
    with torch.no_grad():
        want = peft_model(torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(reward_logits(reward, source), want, atol=1e-4)


@pytest.mark.parametrize("init", ["copy", "zero_head"])
def test_full_twin_is_a_transformers_checkpoint(backend, ckpts, tmp_path, init):
    source, reward = trained(backend, ckpts, "full", init=init)
    reward.save(tmp_path / "r", source=source, vocab_size=reward.shared_vocab)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "r"), dtype=torch.float32).eval()
    with torch.no_grad():
        want = hf(torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(reward_logits(reward, source), want, atol=1e-4)


def test_mixture_of_experts_full_twin_is_a_transformers_checkpoint(backend, ckpts, tmp_path):
    from safetensors import safe_open

    from prtcore.testing.checkpoints import make_tiny_checkpoint

    made = make_tiny_checkpoint(tmp_path / "moe", "qwen3_moe", tokenizer_dir=ckpts["tok"], seed=0)
    source = backend.load_base(made)
    reward = perturb(backend.create_reward(reward_config("full"), source, seed=1), seed=3)
    reward.save(tmp_path / "r", source=source, vocab_size=reward.shared_vocab)
    with safe_open(str(tmp_path / "r" / "model.safetensors"), "np") as f:
        names = set(f.keys())
    assert "model.layers.0.mlp.experts.3.down_proj.weight" in names and not any(".switch_mlp." in n for n in names)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "r"), dtype=torch.float32).eval()
    with torch.no_grad():
        want = hf(torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(reward_logits(reward, source), want, atol=1e-4)
    loaded = backend.load_reward(RewardArtifact.open(tmp_path / "r"), backend.load_base(made))  # stacked again
    np.testing.assert_allclose(reward_logits(loaded, source), want, atol=1e-4)


def test_per_expert_names_are_transformers():
    from prt_mlx.twin import per_expert

    stacked = mx.arange(24).reshape(2, 3, 4)
    out = per_expert({"model.layers.1.block_sparse_moe.switch_mlp.down_proj.weight": stacked,  # mixtral
                      "model.layers.0.mlp.switch_mlp.up_proj.weight": stacked, "model.norm.weight": stacked[0, 0]})
    assert sorted(out) == ["model.layers.0.mlp.experts.0.up_proj.weight", "model.layers.0.mlp.experts.1.up_proj.weight",
                           "model.layers.1.block_sparse_moe.experts.0.w2.weight",
                           "model.layers.1.block_sparse_moe.experts.1.w2.weight", "model.norm.weight"]
    assert np.array_equal(np.array(out["model.layers.1.block_sparse_moe.experts.1.w2.weight"]), np.array(stacked[1]))


def write_mlx_lm_adapter(path, source_dir, *, rank=4, scale=10.0, num_layers=2, keys=None):
    """An adapter as `mlx_lm lora` writes it, made with mlx-lm's own functions; returns mlx-lm's logits with it."""
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    from prt_mlx.base import normalize_config, read_config

    model, _ = load(str(source_dir), model_config=normalize_config(read_config(source_dir)))
    model.freeze()
    params = {"rank": rank, "scale": scale, "dropout": 0.0}
    if keys:
        params["keys"] = keys
    linear_to_lora_layers(model, num_layers, params)
    key = mx.random.key(9)
    updates = []
    for name, value in tree_flatten(model.trainable_parameters()):
        key, sub = mx.random.split(key)
        updates.append((name, 0.1 * mx.random.normal(value.shape, key=sub)))
    model.load_weights(updates, strict=False)
    path.mkdir(parents=True)
    mx.save_safetensors(str(path / "adapters.safetensors"), dict(tree_flatten(model.trainable_parameters())))
    config = {"fine_tune_type": "lora", "num_layers": num_layers, "lora_parameters": params, "model": str(source_dir),
              "iters": 10, "batch_size": 4, "learning_rate": 1e-5}
    (path / "adapter_config.json").write_text(json.dumps(config, indent=4))
    loaded, _ = load(str(source_dir), model_config=normalize_config(read_config(source_dir)), adapter_path=str(path))
    return np.array(loaded(mx.array(IDS)))


@pytest.mark.parametrize("keys", [None, ["self_attn.q_proj", "mlp.down_proj"]])
def test_mlx_lm_adapter_serves_as_twin(backend, ckpts, tmp_path, keys):
    want = write_mlx_lm_adapter(tmp_path / "adapter", ckpts["source"], keys=keys)
    assert adapters.detect_layout(tmp_path / "adapter") == "mlx_lm"
    source = backend.load_base(ckpts["source"])
    reward = backend.reward_from_adapter(tmp_path / "adapter", source)
    assert reward.config.lora.rank == 4 and reward.config.lora.scale == 10.0
    np.testing.assert_allclose(reward_logits(reward, source), want, atol=1e-5)
    # its portable artifact (PEFT layout) gives the same reward
    reward.save(tmp_path / "r", source=source, vocab_size=reward.shared_vocab)
    assert adapters.detect_layout(tmp_path / "r") == "peft"
    fresh = backend.load_base(ckpts["source"])
    np.testing.assert_allclose(reward_logits(backend.load_reward(RewardArtifact.open(tmp_path / "r"), fresh), fresh),
                               want, atol=1e-5)


def test_artifact_holding_mlx_lm_layout(backend, ckpts, tmp_path):
    """A reward artifact may keep the adapter in mlx-lm's layout (prt_config.json next to mlx-lm's files)."""
    want = write_mlx_lm_adapter(tmp_path / "adapter", ckpts["source"])
    source = backend.load_base(ckpts["source"])
    config = RewardConfig(kind="twin", fine_tune_type="lora", lora={"rank": 4, "scale": 10.0, "num_layers": 2})
    with ArtifactWriter(tmp_path / "r") as writer:
        for name in ("adapters.safetensors", "adapter_config.json"):
            (writer.dir / name).write_bytes((tmp_path / "adapter" / name).read_bytes())
        writer.copy_tokenizer(ckpts["source"])
        writer.commit(reward_meta(config, source=source, tokenizer=source.tokenizer, vocab_size=384, output_size=384,
                                  weights=["adapters.safetensors"], backend="mlx-lm"))
    reward = backend.load_reward(RewardArtifact.open(tmp_path / "r"), source)
    np.testing.assert_allclose(reward_logits(reward, source), want, atol=1e-5)


def test_adapter_conversions_round_trip(ckpts, tmp_path):
    write_mlx_lm_adapter(tmp_path / "mlx", ckpts["source"], scale=6.0)
    adapters.convert(tmp_path / "mlx", tmp_path / "peft", "peft", num_hidden_layers=2, base_model_name_or_path="base")
    adapters.convert(tmp_path / "peft", tmp_path / "back", "mlx_lm", num_hidden_layers=2)
    _, original, lora = adapters.read_adapter(tmp_path / "mlx")
    layout, peft_tensors, peft_lora = adapters.read_adapter(tmp_path / "peft", num_hidden_layers=2)
    _, back, back_lora = adapters.read_adapter(tmp_path / "back")
    assert layout == "peft" and lora.scale == peft_lora.scale == back_lora.scale == 6.0
    assert peft_lora.num_layers == -1 and peft_lora.rank == 4  # all 2 of 2 layers
    for name, value in original.items():
        np.testing.assert_array_equal(back[name], value)
        np.testing.assert_array_equal(peft_tensors[name], value)
    peft_config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert peft_config["lora_alpha"] == 24.0 and peft_config["base_model_name_or_path"] == "base"
    assert sorted(peft_config["target_modules"]) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    raw = adapters.mlx_to_peft_tensors(original)
    a = "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"
    assert raw[a].shape == original["model.layers.1.self_attn.q_proj.lora_a"].T.shape


def test_adapters_module_imports_no_framework():
    code = "import sys, prtcore.adapters; bad = [m for m in ('mlx', 'torch') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_lora_twins_on_one_source(backend, ckpts):
    source = backend.load_base(ckpts["source"])
    base_logits = np.array(source.forward(mx.array(IDS)).logits)
    first = perturb(backend.create_reward(reward_config("lora"), source, seed=1), seed=4)
    second = perturb(backend.create_reward(reward_config("lora"), source, seed=2), seed=5)
    assert first.shared and not second.shared
    assert not np.allclose(reward_logits(first, source), reward_logits(second, source), atol=1e-3)
    np.testing.assert_array_equal(np.array(source.forward(mx.array(IDS)).logits), base_logits)


def test_transfer_refuses_another_tokenizer(backend, ckpts, tmp_path):
    source, reward = trained(backend, ckpts, "linear")
    reward.save(tmp_path / "r", source=source, vocab_size=reward.shared_vocab)
    with pytest.raises(TokenizerMismatchError, match="differ"):
        PRTForCausalLM.from_pretrained(ckpts["alien"], tmp_path / "r", backend="mlx")
