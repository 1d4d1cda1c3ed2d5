"""Reward kinds: reference equivalence, caches and padding, initialisation, artifacts (incl. PEFT's layout)."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from prtcore import RewardArtifact, RewardConfig
from prtcore.errors import ArtifactError, ModelLoadError
from prtcore.rewards import count_lora_parameters, reward_tensor_shapes
from prtcore.testing import reference

IDS = [3, 17, 42, 8, 99, 5, 23, 61, 7, 250]
SMALL = dict(d_model=32, num_layers=2, num_heads=4, ffn_dim=48)


def random_reward(backend, source, kind, seed=3):
    config = RewardConfig(kind=kind, **SMALL)
    reward = backend.create_reward(config, source)
    tensors = reference.random_reward_tensors(config, source.hidden_size, source.vocab_size, seed=seed)
    reward.module.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
    return reward, tensors


@pytest.mark.parametrize("kind", ["linear", "transformer"])
def test_created_reward_layout_and_init(backend, source, kind):
    config = RewardConfig(kind=kind, **SMALL)
    reward = backend.create_reward(config, source, seed=1)
    state = reward.module.state_dict()
    shapes = reward_tensor_shapes(config, source.hidden_size, source.vocab_size)
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes
    assert not state["head.weight"].any()
    for name, value in state.items():
        if "norm" in name:
            assert torch.equal(value, torch.ones_like(value))
        elif name != "head.weight":
            assert 0.015 < float(value.std()) < 0.025
    assert reward.parameter_count() == (sum(np.prod(s) for s in shapes.values()),) * 2
    again = backend.create_reward(config, source, seed=1).module.state_dict()
    assert all(torch.equal(state[k], again[k]) for k in state)
    out = reward.forward(source.asarray([IDS]), source_hidden=source.forward(source.asarray([IDS]), hidden=True).hidden)
    assert not out.any()  # zero head: step 0 is the source distribution


@pytest.mark.parametrize("kind", ["linear", "transformer"])
def test_reward_matches_reference_cached_uncached_and_padded(backend, source, kind):
    reward, tensors = random_reward(backend, source, kind)
    ids = source.asarray([IDS])
    hidden = source.forward(ids, hidden=True).hidden
    full = reward.forward(ids, source_hidden=hidden).detach()
    want = reference.reward_logits(tensors, hidden.double().numpy(), reward.config)
    np.testing.assert_allclose(full.numpy(), want, atol=1e-5)
    # incremental: a prefill of 4 tokens, then one at a time, through the source's cache
    src_cache, cache, parts = source.make_cache(), reward.make_cache(), []
    for chunk in [IDS[:4]] + [[t] for t in IDS[4:]]:
        h = source.forward(source.asarray([chunk]), src_cache, hidden=True).hidden
        parts.append(reward.forward(None, cache, source_hidden=h))
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)
    # left padding: a shorter row in a batch, with positions counted from its first real token
    short = IDS[3:8]
    batch = torch.tensor([IDS[:7], [0, 0] + short])
    mask = torch.tensor([[1] * 7, [0, 0] + [1] * 5])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    src_cache, cache = source.make_cache(), reward.make_cache()
    h = source.forward(batch, src_cache, hidden=True, attention_mask=mask, position_ids=pos).hidden
    first = reward.forward(None, cache, source_hidden=h, attention_mask=mask, position_ids=pos)
    mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
    step = torch.tensor([[IDS[7]], [IDS[8]]])
    h = source.forward(step, src_cache, hidden=True, attention_mask=mask, position_ids=pos[:, -1:] + 1).hidden
    second = reward.forward(None, cache, source_hidden=h, attention_mask=mask, position_ids=pos[:, -1:] + 1)
    assert torch.isfinite(first).all()
    torch.testing.assert_close(first[0], full[0, :7], atol=1e-5, rtol=0)
    torch.testing.assert_close(second[0, 0], full[0, 7], atol=1e-5, rtol=0)
    alone_ids = source.asarray([short + [IDS[8]]])
    alone = reward.forward(alone_ids, source_hidden=source.forward(alone_ids, hidden=True).hidden).detach()
    torch.testing.assert_close(first[1, 2:], alone[0, :5], atol=1e-5, rtol=0)
    torch.testing.assert_close(second[1, 0], alone[0, 5], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["linear", "transformer"])
def test_reward_artifact_round_trip(backend, source, kind, tmp_path):
    reward, tensors = random_reward(backend, source, kind)
    path = reward.save(tmp_path / kind, source=source, vocab_size=len(source.tokenizer), extra={"note": "x"})
    artifact = RewardArtifact.open(path)
    assert artifact.meta["weights"] == ["reward.safetensors"] and artifact.meta["note"] == "x"
    assert artifact.meta["source"]["path"] == str(source.path) and artifact.vocab_size == len(source.tokenizer)
    assert artifact.meta["created_by"]["backend"] == "torch" and artifact.has_tokenizer
    stored = artifact.tensors()
    assert all(stored[k].dtype == np.float32 and np.array_equal(stored[k], tensors[k]) for k in tensors)
    loaded = backend.load_reward(artifact, source)
    ids = source.asarray([IDS])
    hidden = source.forward(ids, hidden=True).hidden
    torch.testing.assert_close(loaded.forward(ids, source_hidden=hidden), reward.forward(ids, source_hidden=hidden).detach())
    assert not loaded.forward(ids, source_hidden=hidden).requires_grad


def test_reward_artifact_for_another_hidden_size_is_refused(backend, source, target, tmp_path):
    reward, _ = random_reward(backend, source, "linear")
    reward.save(tmp_path / "r", source=source, vocab_size=len(source.tokenizer))
    with pytest.raises(ArtifactError, match="head.weight"):
        backend.load_reward(RewardArtifact.open(tmp_path / "r"), _OtherHidden(target))


class _OtherHidden:
    def __init__(self, lm):
        self.lm = lm

    def __getattr__(self, name):
        return 48 if name == "hidden_size" else getattr(self.lm, name)


def test_lora_twin_shares_weights_and_keeps_the_source_intact(backend, fresh_source):
    source = fresh_source
    ids = source.asarray([IDS])
    before = source.forward(ids).logits
    reward = backend.create_reward(RewardConfig(kind="twin"), source, seed=0)
    assert reward.hf_model is source.model  # one copy of the weights
    torch.testing.assert_close(reward.forward(ids).detach(), before)  # B = 0: the twin is the source
    with torch.no_grad():
        for name, p in reward.trainable_parameters().items():
            p.add_(0.05 * torch.randn_like(p))
    changed = reward.forward(ids).detach()
    assert (changed - before).abs().max() > 1e-2
    torch.testing.assert_close(source.forward(ids).logits, before)  # the source pass runs with the adapter off
    trainable, total = reward.parameter_count()
    assert trainable == count_lora_parameters(reward.config, source.config)
    assert total == trainable + sum(p.numel() for n, p in source.model.named_parameters() if "lora_" not in n)


@pytest.mark.parametrize("fine_tune_type", ["lora", "full"])
def test_twin_init(backend, fresh_source, fine_tune_type):
    ids = fresh_source.asarray([IDS])
    base = fresh_source.forward(ids).logits
    copy = backend.create_reward(RewardConfig(kind="twin", fine_tune_type=fine_tune_type), fresh_source)
    torch.testing.assert_close(copy.forward(ids).detach(), base)
    zero = backend.create_reward(RewardConfig(kind="twin", fine_tune_type=fine_tune_type, init="zero_head"), fresh_source)
    assert not zero.forward(ids).any()
    torch.testing.assert_close(fresh_source.forward(ids).logits, base)


def _perturbed_twin(backend, source, **config):
    reward = backend.create_reward(RewardConfig(kind="twin", **config), source, seed=0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in reward.trainable_parameters().values():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return reward


def test_lora_artifact_is_plain_peft(backend, fresh_source, source_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    lora = dict(rank=4, scale=10.0, num_layers=1)
    reward = _perturbed_twin(backend, fresh_source, lora=lora)
    path = reward.save(tmp_path / "lora", source=fresh_source, vocab_size=len(fresh_source.tokenizer))
    names = sorted(p.name for p in path.iterdir())
    assert {"adapter_config.json", "adapter_model.safetensors", "prt_config.json", "tokenizer.json"} <= set(names)
    config = json.loads((path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 40
    assert config["layers_to_transform"] == [1] and config["base_model_name_or_path"] == str(source_dir)
    assert sorted(config["target_modules"]) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    with safe_open(str(path / "adapter_model.safetensors"), "pt") as f:
        keys = set(f.keys())
        a = f.get_slice("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight").get_shape()
        b = f.get_slice("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight").get_shape()
    assert len(keys) == 14 and (a, b) == ([4, 64], [64, 4])
    assert json.loads((path / "prt_config.json").read_text())["weights"] == ["adapter_config.json", "adapter_model.safetensors"]
    ids = fresh_source.asarray([IDS])
    want = reward.forward(ids).detach()
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(source_dir), dtype=torch.float32), str(path))
    torch.testing.assert_close(plain(input_ids=ids).logits, want, atol=1e-5, rtol=0)
    other = backend.load_base(source_dir)
    loaded = backend.load_reward(RewardArtifact.open(path), other)
    torch.testing.assert_close(loaded.forward(ids), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(other.forward(ids).logits, fresh_source.forward(ids).logits)


@pytest.mark.parametrize("config", [
    {"fine_tune_type": "lora", "init": "zero_head", "lora": {"rank": 2, "num_layers": 2}},
    {"fine_tune_type": "full"},
    {"fine_tune_type": "full", "init": "zero_head"},
])
def test_twin_artifact_round_trip(backend, fresh_source, source_dir, tmp_path, config):
    reward = _perturbed_twin(backend, fresh_source, **config)
    path = reward.save(tmp_path / "twin", source=fresh_source, vocab_size=len(fresh_source.tokenizer))
    artifact = RewardArtifact.open(path)
    ids = fresh_source.asarray([IDS])
    want = reward.forward(ids).detach()
    other = backend.load_base(source_dir) if config["fine_tune_type"] == "lora" else None
    loaded = backend.load_reward(artifact, other)
    torch.testing.assert_close(loaded.forward(ids), want, atol=1e-5, rtol=0)
    if config["fine_tune_type"] == "full":
        assert (path / "config.json").exists() and artifact.meta["weights"] == ["model.safetensors"]


def test_full_twin_missing_a_weight_is_refused(backend, fresh_source, tmp_path):
    from safetensors.torch import load_file, save_file

    path = _perturbed_twin(backend, fresh_source, fine_tune_type="full").save(
        tmp_path / "twin", source=fresh_source, vocab_size=len(fresh_source.tokenizer))
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]  # e.g. a layout transformers does not read
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"lacks 1 weight\(s\).*'model\.layers\.1\.mlp\.up_proj\.weight'"):
        backend.load_reward(RewardArtifact.open(path), None)


def test_two_lora_rewards_on_one_source(backend, fresh_source, source_dir, tmp_path):
    first = _perturbed_twin(backend, fresh_source, lora={"rank": 2})
    p1 = first.save(tmp_path / "a", source=fresh_source, vocab_size=len(fresh_source.tokenizer))
    second = _perturbed_twin(backend, fresh_source, lora={"rank": 4, "num_layers": 1})
    p2 = second.save(tmp_path / "b", source=fresh_source, vocab_size=len(fresh_source.tokenizer))
    ids = fresh_source.asarray([IDS])
    want1, want2 = first.forward(ids).detach(), second.forward(ids).detach()
    assert (want1 - want2).abs().max() > 1e-3
    other = backend.load_base(source_dir)
    l1 = backend.load_reward(RewardArtifact.open(p1), other)
    l2 = backend.load_reward(RewardArtifact.open(p2), other)
    torch.testing.assert_close(l2.forward(ids), want2, atol=1e-5, rtol=0)
    torch.testing.assert_close(l1.forward(ids), want1, atol=1e-5, rtol=0)
    torch.testing.assert_close(other.forward(ids).logits, fresh_source.forward(ids).logits)
