"""Base models: loading options and errors, hidden states, caches and left padding."""

import json
import shutil

import numpy as np
import pytest
import torch

from prtcore.errors import ConfigError, ModelLoadError

IDS = [[3, 17, 42, 8, 99, 5, 23, 61]]


def test_properties(source, target):
    assert (source.vocab_size, source.hidden_size, source.model_type) == (len(source.tokenizer), 64, "llama")
    assert target.vocab_size == len(target.tokenizer) + 6
    assert source.device.type == "cpu" and source.dtype == torch.float32
    assert source.asarray(IDS).dtype == torch.long
    assert not any(p.requires_grad for p in source.model.parameters())


def test_hidden_states_feed_the_output_layer(source, target):
    for lm in (source, target):
        out = lm.forward(lm.asarray(IDS), hidden=True)
        assert out.logits.dtype == torch.float32 and out.hidden.shape == (1, 8, 64)
        head = lm.model.get_output_embeddings()
        torch.testing.assert_close(head(out.hidden).float(), out.logits, atol=1e-5, rtol=0)
        full = lm.model(input_ids=lm.asarray(IDS), output_hidden_states=True)
        torch.testing.assert_close(full.hidden_states[-1], out.hidden, atol=1e-6, rtol=0)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_cached_and_left_padded_batches_equal_full_forward(backend, source_dir, attn):
    lm = backend.load_base(source_dir, attn_implementation=attn)
    assert lm.model.config._attn_implementation == attn
    full = lm.forward(lm.asarray(IDS)).logits
    cache = lm.make_cache()
    steps = [lm.forward(lm.asarray([IDS[0][:3]]), cache).logits]
    steps += [lm.forward(lm.asarray([[t]]), cache).logits for t in IDS[0][3:]]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)
    # a batch: the long row and a shorter one left-padded, then one more step each
    short = IDS[0][2:6]
    ids = torch.tensor([IDS[0][:6], [0, 0] + short])
    mask = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = lm.make_cache()
    first = lm.forward(ids, cache, attention_mask=mask, position_ids=pos).logits
    mask2 = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
    second = lm.forward(torch.tensor([[IDS[0][6]], [7]]), cache, attention_mask=mask2, position_ids=pos[:, -1:] + 1).logits
    torch.testing.assert_close(first[0], full[0, :6], atol=1e-5, rtol=0)
    torch.testing.assert_close(second[0, 0], full[0, 6], atol=1e-5, rtol=0)
    alone = lm.forward(lm.asarray([short + [7]])).logits
    torch.testing.assert_close(first[1, 2:], alone[0, :4], atol=1e-5, rtol=0)
    torch.testing.assert_close(second[1, 0], alone[0, 4], atol=1e-5, rtol=0)


def test_dtype_option(backend, source_dir):
    lm = backend.load_base(source_dir, dtype="bfloat16", device="cpu")
    assert lm.dtype == torch.bfloat16
    assert lm.forward(lm.asarray(IDS)).logits.dtype == torch.float32


def test_load_errors(backend, source_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="model directory not found"):
        backend.load_base(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        backend.load_base(tmp_path / "empty")
    with pytest.raises(ConfigError, match="unknown option 'quantise'"):
        backend.load_base(source_dir, quantise=4)
    with pytest.raises(ConfigError, match="dtype='float8'"):
        backend.load_base(source_dir, dtype="float8")
    with pytest.raises(ConfigError, match="attn_implementation='magic'"):
        backend.load_base(source_dir, attn_implementation="magic")
    if not __import__("importlib").util.find_spec("flash_attn"):
        with pytest.raises(ModelLoadError, match="needs flash-attn"):
            backend.load_base(source_dir, attn_implementation="flash_attention_2")
    remote = tmp_path / "remote"
    shutil.copytree(source_dir, remote)
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    (remote / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="trust_remote_code=True"):
        backend.load_base(remote)
    broken = tmp_path / "broken"
    shutil.copytree(source_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError) as info:
        backend.load_base(broken)
    assert str(broken) in str(info.value) and "\n" not in str(info.value)
    from safetensors.torch import load_file, save_file

    partial = tmp_path / "partial"  # transformers would initialise the missing weight at random: refused
    shutil.copytree(source_dir, partial)
    tensors = load_file(str(partial / "model.safetensors"))
    del tensors["model.layers.0.self_attn.k_proj.weight"]
    save_file(tensors, str(partial / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"partial: the checkpoint lacks 1 weight\(s\) .*'model\.layers\.0\.self_attn\.k_proj\.weight'"):
        backend.load_base(partial)


def test_before_model_load_hook_wraps_the_load(backend, source_dir):
    """A plugin's before_model_load patch is active during the load and may change the options."""
    import contextlib

    import prtcore
    from prtcore.plugins import plugin_manager

    calls = []

    class Patch:
        @prtcore.hookimpl
        def before_model_load(self, path, backend, options):
            calls.append((path, backend, dict(options)))
            options["attn_implementation"] = "eager"
            return contextlib.nullcontext()

    pm = plugin_manager()
    pm.register(Patch(), name="test-patch")
    try:
        lm = backend.load_base(source_dir, dtype="float32")
    finally:
        pm.unregister(name="test-patch")
    assert calls == [(str(source_dir), "torch", {"dtype": "float32"})]
    assert lm.model.config._attn_implementation == "eager"


def test_generate_through_transformers(source):
    ids = source.generate(source.asarray(IDS), max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert ids.shape == (1, 11) and np.array_equal(ids[0, :8].numpy(), IDS[0])
