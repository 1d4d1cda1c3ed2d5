"""Conformance on tiny random Eagle2 checkpoints: the native torch model equals the (patched) remote-code fixture on
the same weights, and mlx equals torch, for features and logits, in both config formats."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel

from prt_eagle2.patch import no_flash_attn

FORMATS = ("eagle_chat", "eagle_2_5_vl")
REMOTE_FIXTURE = Path(__file__).parent / "remote_fixture"


def with_select_layer(src: Path, dst: Path, layer: int) -> Path:
    """A copy of checkpoint `src` whose features come from vision hidden state `layer` (before post_layernorm)."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config["select_layer"] = layer
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def remote_logits(path, lm, inputs, ids):
    """The fixture's own forward (its pixel shuffle and feature merge), loaded under the patch."""
    with no_flash_attn(echo=False):
        remote = AutoModel.from_pretrained(str(path), trust_remote_code=True, dtype=torch.float32).eval()
    remote.img_context_token_id = lm.vision.image_token_id  # what the old format's chat() sets
    pixels = torch.as_tensor(inputs.pixel_values)
    with torch.no_grad():
        features = remote.extract_feature(pixels)
        out = remote(pixel_values=pixels, input_ids=torch.tensor([ids]),
                     image_flags=torch.ones(len(pixels), 1, dtype=torch.long))
    return features, out.logits


@pytest.mark.parametrize("select_layer", [-1, -2])
@pytest.mark.parametrize("fmt", FORMATS)
def test_native_torch_matches_the_remote_code(torch_backend, remote_dirs, tmp_path, wide_image, square_image, fmt,
                                              select_layer):
    path = remote_dirs[fmt] if select_layer == -1 else with_select_layer(remote_dirs[fmt], tmp_path / fmt, select_layer)
    lm = torch_backend.load_base(path)  # native: the remote files are ignored without trust_remote_code
    inputs = lm.vision.preprocess([wide_image, square_image])
    ids = lm.tokenizer.encode(lm.vision.prompt("What differs?", inputs))
    want_features, want_logits = remote_logits(path, lm, inputs, ids)
    torch.testing.assert_close(lm.image_features(inputs.pixel_values), want_features, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lm.forward([ids], pixel_values=inputs.pixel_values).logits, want_logits,
                               atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ mlx vs torch
@pytest.fixture(scope="module")
def mlx_backend():
    pytest.importorskip("mlx.core")
    from prtcore.plugins import get_backend

    return get_backend("mlx")


@pytest.mark.parametrize("select_layer", [-1, -2])
@pytest.mark.parametrize("fmt", FORMATS)
def test_mlx_matches_torch(torch_backend, mlx_backend, native_dirs, tmp_path, wide_image, square_image, fmt,
                           select_layer):
    path = native_dirs[fmt] if select_layer == -1 else with_select_layer(native_dirs[fmt], tmp_path / fmt, select_layer)
    t, m = torch_backend.load_base(path), mlx_backend.load_base(path)
    assert m.vision.image_token_id == t.vision.image_token_id and m.vision.num_tokens(
        m.vision.preprocess([wide_image])) == [12]
    inputs = t.vision.preprocess([wide_image, square_image])
    np.testing.assert_allclose(np.array(m.image_features(inputs.pixel_values)),
                               t.image_features(inputs.pixel_values).numpy(), atol=1e-4)
    ids = t.tokenizer.encode(t.vision.prompt("What differs?", inputs))
    t_out = t.forward([ids], pixel_values=inputs.pixel_values, hidden=True)
    m_out = m.forward([ids], pixel_values=inputs.pixel_values, hidden=True)
    np.testing.assert_allclose(np.array(m_out.logits), t_out.logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.array(m_out.hidden), t_out.hidden.numpy(), atol=1e-4)
    text = ids[:6]
    np.testing.assert_allclose(np.array(m.forward([text]).logits), t.forward([text]).logits.numpy(), atol=1e-4)


def test_mlx_cached_prefill_with_images_then_steps(mlx_backend, native_dirs, wide_image):
    m = mlx_backend.load_base(native_dirs["eagle_chat"])
    inputs = m.vision.preprocess([wide_image])
    ids = m.tokenizer.encode(m.vision.prompt("Describe.", inputs)) + m.tokenizer.encode("It is")
    full = np.array(m.forward([ids], pixel_values=inputs.pixel_values).logits)
    cache = m.make_cache()
    parts = [m.forward([ids[:-2]], cache, pixel_values=inputs.pixel_values).logits,
             m.forward([ids[-2:-1]], cache).logits, m.forward([ids[-1:]], cache).logits]
    np.testing.assert_allclose(np.concatenate([np.array(p) for p in parts], 1), full, atol=1e-4)


def test_generation_with_images_agrees_across_backends(torch_backend, mlx_backend, native_dirs, wide_image):
    from prtcore.model import PRTForCausalLM

    prompt = "<|im_start|>user\n<image>\nWhat?<|im_end|>\n<|im_start|>assistant\n"
    tokens = []
    for backend in (torch_backend, mlx_backend):
        lm = backend.load_base(native_dirs["eagle_2_5_vl"])
        steps = PRTForCausalLM(backend, lm).stream_steps(prompt, images=[wide_image], max_tokens=5)
        tokens.append([s.token for s in steps])
    assert tokens[0] == tokens[1] and len(tokens[0]) >= 1
