"""Base models through mlx-lm: logits and hidden states equal transformers', rope settings of transformers 5."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_testutil import IDS
from prtcore.errors import ConfigError, ModelLoadError
from prtcore.testing.checkpoints import make_tiny_checkpoint

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# A rope_theta no family defaults to, so that a base that ignores `rope_parameters` is caught.
ROPE = {"rope_parameters": {"rope_theta": 1234.0, "rope_type": "default"}}
FAMILIES = {
    "llama": {"rope_parameters": {"rope_theta": 500.0, "rope_type": "linear", "factor": 2.0}},
    "qwen2": ROPE,
    "qwen3": ROPE,
    "mistral": ROPE,
    "gemma2": {**ROPE, "final_logit_softcapping": 5.0},
    "phi3": {"rope_parameters": {"rope_theta": 1234.0, "rope_type": "default", "partial_rotary_factor": 0.5}},
    "granite": {**ROPE, "attention_multiplier": 0.3, "embedding_multiplier": 2.0, "residual_multiplier": 0.5,
                "logits_scaling": 1.7},
}


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory, ckpts):
    root = tmp_path_factory.mktemp("families")
    return lambda name: make_tiny_checkpoint(root / name, name, tokenizer_dir=ckpts["tok"], seed=5, **FAMILIES[name])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_and_hidden_match_transformers(backend, family_dir, family):
    path = family_dir(family)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    with torch.no_grad():
        want = hf(torch.tensor(IDS), output_hidden_states=True)
    base = backend.load_base(path)
    out = base.forward(mx.array(IDS), hidden=True)
    np.testing.assert_allclose(np.array(out.logits), want.logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.array(out.hidden), want.hidden_states[-1].numpy(), atol=1e-4)
    assert base.vocab_size == hf.get_output_embeddings().weight.shape[0]
    assert base.hidden_size == hf.config.hidden_size
    # the logits-only path is the same computation
    np.testing.assert_array_equal(np.array(base.forward(mx.array(IDS)).logits), np.array(out.logits))


def test_normalize_config_reads_rope_parameters():
    from prt_mlx.base import normalize_config

    assert normalize_config({"rope_parameters": {"rope_theta": 5.0, "rope_type": "default"}}) == \
        {"rope_theta": 5.0, "rope_scaling": None}
    linear = normalize_config({"rope_parameters": {"rope_theta": 5.0, "rope_type": "linear", "factor": 2.0}})
    assert linear["rope_theta"] == 5.0 and linear["rope_scaling"] == {"factor": 2.0, "rope_type": "linear", "type": "linear"}
    per_layer = normalize_config({"rope_parameters": {
        "full_attention": {"rope_theta": 1e6, "rope_type": "default"},
        "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"}}})
    assert per_layer["rope_theta"] == 1e6 and per_layer["rope_local_base_freq"] == 1e4
    nested = normalize_config({"text_config": {"hidden_size": 8, "rope_parameters": {"rope_theta": 7.0}}})
    assert nested["text_config"]["rope_theta"] == 7.0 and nested["text_config"]["hidden_size"] == 8
    assert normalize_config({"rope_theta": 3.0}) == {}  # older configs are left as they are


def test_normalize_config_reads_the_expert_count_transformers_5_saves():
    from prt_mlx.base import normalize_config

    # transformers 5's qwen3_moe saves num_local_experts and no num_experts, which mlx-lm reads
    assert normalize_config({"num_local_experts": 128}) == {"num_experts": 128}
    assert normalize_config({"num_experts": None, "num_local_experts": 8}) == {"num_experts": 8}
    assert normalize_config({"num_experts": 64, "num_local_experts": 64}) == {}


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_base(backend, ckpts, bits):
    full = backend.load_base(ckpts["source"])
    quant = backend.load_base(ckpts["source"], quantize=bits)
    assert quant.quantized and not full.quantized
    assert quant.model.model.layers[0].self_attn.q_proj.bits == bits
    a, b = np.array(full.forward(mx.array(IDS)).logits), np.array(quant.forward(mx.array(IDS)).logits)
    assert np.isfinite(b).all() and a.shape == b.shape
    # a sanity check on random weights: 8 bits stays close to float32, 4 bits is coarser
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > (0.999 if bits == 8 else 0.9)
    cache = quant.make_cache()
    step = np.concatenate([np.array(quant.forward(mx.array([IDS[0][:6]]), cache).logits),
                           np.array(quant.forward(mx.array([IDS[0][6:]]), cache).logits)], axis=1)
    np.testing.assert_allclose(step, b, atol=1e-4)


def test_bad_inputs_are_refused(backend, ckpts, tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        backend.load_base(tmp_path / "missing")
    with pytest.raises(ConfigError, match="quantize"):
        backend.load_base(ckpts["source"], quantize=3)
    with pytest.raises(ConfigError, match="not known"):
        backend.load_base(ckpts["source"], flash_attention=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        backend.load_base(tmp_path / "empty")
