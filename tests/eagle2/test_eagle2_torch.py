"""The native torch Eagle2: checkpoint loading in both formats, the forward pass with images, caches, errors."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from prt_eagle2.torch_model import Eagle2Model, pixel_shuffle
from prtcore.errors import ConfigError, ModelLoadError
from prtcore.model import PRTForCausalLM


def test_pixel_shuffle_token_and_channel_order():
    side, c = 4, 3
    x = torch.arange(side * side * c, dtype=torch.float32).reshape(1, side, side, c)
    out = pixel_shuffle(x, 2)
    assert out.shape == (1, 4, 12)
    for p in range(2):
        for q in range(2):
            block = [x[0, 2 * p, 2 * q], x[0, 2 * p, 2 * q + 1], x[0, 2 * p + 1, 2 * q], x[0, 2 * p + 1, 2 * q + 1]]
            assert torch.equal(out[0, p * 2 + q], torch.cat(block))  # token p·(w/2)+q: its 2×2 block, row-major


@pytest.fixture(scope="module")
def native(torch_backend, native_dirs):
    return {fmt: torch_backend.load_base(path) for fmt, path in native_dirs.items()}


def test_loads_both_formats_natively(native):
    for lm in native.values():
        assert type(lm.vlm) is Eagle2Model
        assert lm.model is lm.vlm.language_model  # text-only PRT runs on the Qwen2 language model
        assert lm.vlm.language_model.lm_head.weight is lm.vlm.language_model.model.embed_tokens.weight
        assert lm.vlm.vision_model.config._attn_implementation == "sdpa"
        assert lm.vision.tokens_per_tile == 4


def test_formats_with_the_same_weights_give_the_same_logits(native, wide_image):
    old, new = native["eagle_chat"], native["eagle_2_5_vl"]
    assert old.vision.image_token_id == new.vision.image_token_id
    inputs = old.vision.preprocess([wide_image])
    ids = old.tokenizer.encode(old.vision.prompt("What?", inputs))
    a = old.forward([ids], pixel_values=inputs.pixel_values).logits
    b = new.forward([ids], pixel_values=inputs.pixel_values).logits
    assert torch.equal(a, b)
    text = old.forward([ids]).logits  # the same ids without the image features differ
    assert not torch.allclose(a, text)


def test_cached_prefill_with_images_then_steps(native, wide_image):
    lm = native["eagle_2_5_vl"]
    inputs = lm.vision.preprocess([wide_image])
    ids = lm.tokenizer.encode(lm.vision.prompt("Describe.", inputs)) + lm.tokenizer.encode("It is")
    full = lm.forward([ids], pixel_values=inputs.pixel_values).logits
    cache = lm.make_cache()
    prefill = lm.forward([ids[:-2]], cache, pixel_values=inputs.pixel_values).logits
    step1 = lm.forward([ids[-2:-1]], cache).logits
    step2 = lm.forward([ids[-1:]], cache).logits
    torch.testing.assert_close(torch.cat([prefill, step1, step2], 1), full, atol=1e-5, rtol=1e-5)


def test_generation_with_images_through_prtcore(native, wide_image):
    lm = native["eagle_chat"]
    model = PRTForCausalLM(lm.backend, lm)
    prompt = "<|im_start|>user\n<image>\nWhat?<|im_end|>\n<|im_start|>assistant\n"
    ids, images = model.prepare(prompt, [wide_image])
    assert ids.count(lm.vision.image_token_id) == 12
    steps = list(model.stream_steps(prompt, images=[wide_image], max_tokens=4))
    # greedy by hand: the full sequence re-run with the image features each step
    pixel_values = lm.vision.preprocess([wide_image]).pixel_values
    want, seq = [], list(ids)
    for _ in range(len(steps)):
        token = int(lm.forward([seq], pixel_values=pixel_values).logits[0, -1, :len(lm.tokenizer)].argmax())
        want.append(token)
        seq.append(token)
    assert [s.token for s in steps] == want


def test_image_token_count_mismatch_is_one_line(native, wide_image):
    lm = native["eagle_chat"]
    inputs = lm.vision.preprocess([wide_image])
    ids = lm.tokenizer.encode(lm.vision.prompt("Q", inputs))
    with pytest.raises(ConfigError, match=r"^the prompt has 11 <IMG_CONTEXT> tokens but the images give 12 features"):
        first = ids.index(lm.vision.image_token_id)
        lm.forward([ids[:first] + ids[first + 1:]], pixel_values=inputs.pixel_values)


def test_bad_checkpoints_name_file_and_key(torch_backend, native_dirs, tmp_path):
    path = shutil.copytree(native_dirs["eagle_chat"], tmp_path / "broken")
    weights = load_file(str(path / "model.safetensors"))
    extra = dict(weights, **{"mlp1.9.weight": torch.zeros(1)})
    save_file(extra, str(path / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"broken: unexpected weights for Eagle2 \(1\), e.g. mlp1.9.weight"):
        torch_backend.load_base(path)
    del weights["mlp1.3.bias"]
    save_file(weights, str(path / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"broken: weights missing for Eagle2 \(1\), e.g. mlp1.3.bias"):
        torch_backend.load_base(path)
    config = json.loads((path / "config.json").read_text())
    config["llm_config"]["tie_word_embeddings"] = False  # then lm_head must be in the file
    (path / "config.json").write_text(json.dumps(config))
    weights["mlp1.3.bias"] = torch.zeros(64)
    save_file(weights, str(path / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"weights missing for Eagle2 \(1\), e.g. language_model.lm_head.weight"):
        torch_backend.load_base(path)
    with pytest.raises(ConfigError, match=r"attn_implementation='flash_attention_2': Eagle2 runs with one of"):
        torch_backend.load_base(native_dirs["eagle_chat"], attn_implementation="flash_attention_2")


def test_dtype_option(torch_backend, native_dirs, square_image):
    lm = torch_backend.load_base(native_dirs["eagle_chat"], dtype="bfloat16")
    assert lm.dtype == torch.bfloat16
    features = lm.image_features(lm.vision.preprocess([square_image]).pixel_values)
    assert features.dtype == torch.bfloat16 and features.shape == (1, 4, 64)
    assert np.isfinite(features.float().numpy()).all()
