"""Conformance: tiny Qwen2-VL / Qwen2.5-VL checkpoints give the same image inputs, image features and logits on
the mlx (mlx-vlm) and torch (transformers) backends, for images of several sizes."""

import numpy as np
import pytest

pytest.importorskip("mlx.core")

from prtcore import PRTForCausalLM, get_backend, to_numpy  # noqa: E402
from prtcore.testing.vision import compare_vision_bases  # noqa: E402
from prtcore.vision import Images  # noqa: E402

from vlm_testutil import IMAGE_SIZES, VLM_TYPES, vision_tokens  # noqa: E402

TOL = {"rtol": 1e-4, "atol": 1e-4}  # float32 across backends (prtcore.testing.checks)


@pytest.fixture(scope="module")
def bases(vlm_dirs):
    """{(model_type, backend): base}"""
    return {(t, b): get_backend(b).load_base(vlm_dirs[t]) for t in VLM_TYPES for b in ("mlx", "torch")}


@pytest.mark.parametrize("model_type", VLM_TYPES)
@pytest.mark.parametrize("size", range(len(IMAGE_SIZES)), ids=[f"{w}x{h}" for w, h in IMAGE_SIZES])
def test_same_image_inputs_and_features(bases, images, model_type, size):
    mlx_enc, torch_enc = bases[model_type, "mlx"].vision, bases[model_type, "torch"].vision
    shared = Images([images[size]])
    m_in, t_in = shared.inputs(mlx_enc), shared.inputs(torch_enc)
    np.testing.assert_array_equal(np.array(m_in["image_grid_thw"]), t_in["image_grid_thw"].numpy())
    np.testing.assert_allclose(np.array(m_in["pixel_values"]), t_in["pixel_values"].numpy(), rtol=0, atol=1e-5)
    expected_tokens = vision_tokens(*IMAGE_SIZES[size])
    assert shared.num_tokens(mlx_enc) == shared.num_tokens(torch_enc) == [expected_tokens]
    m_feat, t_feat = np.array(shared.features(mlx_enc)), shared.features(torch_enc).numpy()
    assert m_feat.shape == (expected_tokens, 64)
    assert np.abs(t_feat).max() > 0.1  # random weights: features are not trivially zero
    np.testing.assert_allclose(m_feat, t_feat, **TOL)


@pytest.mark.parametrize("model_type", VLM_TYPES)
def test_same_logits_for_image_prompts(bases, images, model_type):
    """One prompt with two images of different sizes, and one per size: every position's log-probs agree."""
    pair = {b: bases[model_type, b] for b in ("mlx", "torch")}
    prompts = [("First <image> then <image>, which is larger?", [1, 2])] + [("Describe it.", [i]) for i in range(3)]
    for text, which in prompts:
        report = compare_vision_bases(pair, [images[i] for i in which], text)
        assert report.ok, report.failures
        assert report.tokens == [vision_tokens(*IMAGE_SIZES[i]) for i in which]
        assert report.feature_scale > 0.1  # random weights: features are not trivially zero


@pytest.mark.parametrize("backend", ("mlx", "torch"))
@pytest.mark.parametrize("model_type", VLM_TYPES)
def test_incremental_decoding_matches_full_forward(bases, images, model_type, backend):
    """Prefill with the image, then token by token (rope positions continue after the image's compressed span):
    each step's log-probs equal those of one forward over the whole sequence; both backends pick the same tokens."""
    model = PRTForCausalLM(get_backend(backend), bases[model_type, backend])
    ids, batch = model.prepare("What is shown?", [images[2]])
    steps = list(model.stream_steps("What is shown?", images=[images[2]], max_tokens=5))
    tokens = [s.token for s in steps]
    full = to_numpy(model([ids + tokens], images=[batch]).logprobs)[0]
    greedy = full[len(ids) - 1: len(ids) - 1 + len(tokens)].argmax(-1)
    assert greedy.tolist() == tokens
    other = "torch" if backend == "mlx" else "mlx"
    other_model = PRTForCausalLM(get_backend(other), bases[model_type, other])
    assert [s.token for s in other_model.stream_steps("What is shown?", images=[images[2]], max_tokens=5)] == tokens


def test_comparison_reports_different_models(bases, images):
    """The check is not vacuous: Qwen2-VL and Qwen2.5-VL of the same sizes differ in features and log-probs."""
    report = compare_vision_bases({"qwen2_vl": bases["qwen2_vl", "mlx"], "qwen2_5_vl": bases["qwen2_5_vl", "torch"]},
                                  [images[1]], "Describe it.")
    assert not report.ok
    assert report.feature_diff > 0.1 and report.logprob_diff > 0.01
    assert any("image features differ" in f for f in report.failures)


@pytest.mark.parametrize("model_type", VLM_TYPES)
def test_dry_run_counts_agree(vlm_dirs, model_type):
    """`prt train --dry-run`: both backends count the vision tower, the language model and the LoRA twin alike."""
    from prtcore.config import RewardConfig

    counts = [get_backend(b).count_parameters(vlm_dirs[model_type], RewardConfig(kind="twin")) for b in ("mlx", "torch")]
    assert counts[0] == counts[1]
    assert counts[0]["trainable"] < counts[0]["total"]
