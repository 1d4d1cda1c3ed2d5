"""Other families through the generic path (ProcessorVisionEncoder of each backend): DeepSeek-VL2, a mixture-of-
experts language model with multi-head latent attention, on mlx (transformers has no DeepSeek-VL2); LLaVA on
torch (mlx-vlm 0.7.10 cannot prepare its inputs with transformers 5.24, see the xfail)."""

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from prtcore import PRTForCausalLM, get_backend, to_numpy  # noqa: E402
from prtcore.config import RewardConfig, TrainingConfig  # noqa: E402
from prtcore.testing.checkpoints import (  # noqa: E402
    make_test_image, make_tiny_deepseek_vl2_checkpoint, make_tiny_llava_checkpoint,
)
from prtcore.training import train_reward  # noqa: E402
from prtcore.vision import Images  # noqa: E402
from prt_mlx.vlm import pad_tile_grid  # noqa: E402


@pytest.fixture(scope="module")
def deepseek(vlm_root):
    path = make_tiny_deepseek_vl2_checkpoint(vlm_root / "deepseek_vl2")
    return path, get_backend("mlx").load_base(path)


# (width, height) → tokens: a global 32 × 32 view (1 feature + newline), a separator, and the tiles of the best
# candidate resolution (rows × (columns + newline)).
SIZES = {(30, 30): 2 + 1 + 1 * 2, (50, 30): 2 + 1 + 1 * 3, (30, 60): 2 + 1 + 2 * 2}


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_deepseek_vl2_logits_equal_mlx_vlm_own_forward(deepseek, size):
    """Our forward (features gathered once, scattered at the image tokens) gives the logits of mlx-vlm's own
    forward on its processor's inputs; wide and tall images get more tiles."""
    from mlx_vlm.utils import prepare_inputs

    _, base = deepseek
    image = Images([make_test_image(None, *size, seed=1)])
    assert image.num_tokens(base.vision) == [SIZES[size]]
    inputs = prepare_inputs(base.vision.processor, images=image.images, prompts=["Where is it? <image> Here."])
    inputs = pad_tile_grid(inputs)  # without it mlx-vlm's own forward reads out of bounds (see pad_tile_grid)
    ids = inputs["input_ids"]
    extra = {k: inputs[k] for k in ("images_spatial_crop", "images_seq_mask")}
    reference = base.model(ids, inputs["pixel_values"], **extra).logits
    ours = base.forward(ids, images=[image]).logits
    np.testing.assert_allclose(np.array(ours), np.array(reference.astype(mx.float32)), rtol=1e-4, atol=1e-4)


def test_deepseek_vl2_incremental_decoding_matches_full_forward(deepseek):
    _, base = deepseek
    model = PRTForCausalLM(get_backend("mlx"), base)
    image = make_test_image(None, 50, 30, seed=2)
    ids, images = model.prepare("What is this?", [image])
    tokens = [s.token for s in model.stream_steps("What is this?", images=[image], max_tokens=5)]
    full = to_numpy(model([ids + tokens], images=[images]).logprobs)[0]
    assert full[len(ids) - 1: len(ids) - 1 + len(tokens)].argmax(-1).tolist() == tokens


@pytest.mark.xfail(strict=True, raises=ValueError, reason=(
    "mlx-vlm 0.7.10 deepseek_vl_v2 MoEGate (topk_method 'greedy') masks groups with "
    "`scores[batch_idx, seq_idx, group_idx] = 0.0`, group_idx from argpartition without stop_gradient, so "
    "autodiff through the gate fails: ValueError: [scatter] Cannot calculate VJP with respect to indices."))
def test_deepseek_vl2_lora_twin_trains(deepseek, vlm_root, vlm_data):
    path, _ = deepseek
    train_reward(path, vlm_data, vlm_root / "reward-deepseek", RewardConfig(kind="twin", lora={"rank": 4}),
                 TrainingConfig(iters=2, batch_size=2), backend="mlx")


# ------------------------------------------------------------------------------------------------ LLaVA
@pytest.fixture(scope="module")
def llava(vlm_root):
    return make_tiny_llava_checkpoint(vlm_root / "llava")


def test_llava_generic_path_matches_transformers(llava):
    """Our prompt expansion and forward equal the processor's and transformers' own forward."""
    import torch
    from transformers import AutoProcessor

    base = get_backend("torch").load_base(llava)
    image = Images([make_test_image(None, 40, 30, seed=3)])
    ids, _ = PRTForCausalLM(base.backend, base).prepare("Hi <image> there", image)
    inputs = AutoProcessor.from_pretrained(str(llava))(images=image.images, text=["Hi <image> there"], return_tensors="pt")
    assert ids == inputs["input_ids"][0].tolist() and image.num_tokens(base.vision) == [4]
    with torch.no_grad():
        reference = base.model(**inputs).logits
    np.testing.assert_allclose(to_numpy(base.forward([ids], images=[image]).logits), reference.numpy(), rtol=1e-5, atol=1e-5)


def test_llava_lora_twin_trains_on_the_language_model_and_generates(llava, vlm_root, vlm_data):
    from safetensors import safe_open

    out = vlm_root / "reward-llava"
    summary = train_reward(llava, vlm_data, out, RewardConfig(kind="twin", lora={"rank": 4}),
                           TrainingConfig(iters=3, batch_size=2), backend="torch")
    assert np.isfinite(summary["best_val_loss"])
    with safe_open(str(out / "adapter_model.safetensors"), "np") as f:
        names = list(f.keys())
    assert names and all(".language_model.layers." in n for n in names)  # not the CLIP tower's `layers.N`
    model = PRTForCausalLM.from_pretrained(llava, out, backend="torch")
    assert model.generate("Which capital is this?", images=[make_test_image(None, 30, 30)], max_tokens=3)


@pytest.mark.xfail(strict=True, raises=ValueError, reason=(
    "mlx-vlm 0.7.10 prepare_inputs with transformers 5.22-5.25's LlavaProcessor: ValueError: Failed to process inputs "
    "with error: ImagesKwargs.__init__() got an unexpected keyword argument 'padding'"))
def test_llava_on_mlx(llava):
    base = get_backend("mlx").load_base(llava)
    PRTForCausalLM(base.backend, base).generate("Hi", images=[make_test_image(None, 30, 30)], max_tokens=2)


def test_generic_path_is_only_for_plain_positions(vlm_dirs, deepseek, llava):
    """Families with multimodal rope other than Qwen2-VL / Qwen2.5-VL are refused by the generic path (its
    positions would be wrong): the checkpoints' own configs tell them apart."""
    import json

    from prtcore.vision import uses_mrope

    def config(path):
        return json.loads((path / "config.json").read_text())

    assert all(uses_mrope(config(p)) for p in vlm_dirs.values())
    assert not uses_mrope(config(deepseek[0])) and not uses_mrope(config(llava))
