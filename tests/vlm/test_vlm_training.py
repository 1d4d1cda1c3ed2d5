"""PRT with images end to end on both backends: a LoRA twin trained on image-text conversations (mlx-vlm style
and LLaVA style jsonl), saved, loaded and used for generation with images; image features computed once for
base and reward; rewards move between backends and to a bigger model of the family (base swap)."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("mlx.core")

from prtcore import PRTForCausalLM, get_backend, to_numpy  # noqa: E402
from prtcore.config import RewardConfig, TrainingConfig  # noqa: E402
from prtcore.testing.vision import assert_reward_added_to_target  # noqa: E402
from prtcore.training import train_reward  # noqa: E402
from prtcore.vision import Images  # noqa: E402
from vlm_testutil import VLM_TYPES  # noqa: E402

BACKENDS = ("mlx", "torch")
LORA = RewardConfig(kind="twin", fine_tune_type="lora", lora={"rank": 4, "num_layers": -1})
TRAINING = TrainingConfig(iters=6, batch_size=2, learning_rate=2e-3, steps_per_eval=1, steps_per_report=1,
                          save_every=6, val_batches=-1)


@pytest.fixture(scope="module")
def trained(vlm_root, vlm_dirs, vlm_data):
    """{(model_type, backend): reward directory} trained for a few steps; PRT_QUIET silences progress."""
    os.environ["PRT_QUIET"] = "1"
    out = {}
    for t in VLM_TYPES:
        for b in BACKENDS:
            out[t, b] = vlm_root / f"reward-{t}-{b}"
            train_reward(vlm_dirs[t], vlm_data, out[t, b], LORA, TRAINING, backend=b)
    return out


def val_losses(reward_dir) -> list[float]:
    rows = [json.loads(line) for line in (reward_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["val_loss"] for r in rows if "val_loss" in r]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model_type", VLM_TYPES)
def test_training_lowers_the_validation_loss(trained, model_type, backend):
    losses = val_losses(trained[model_type, backend])
    assert len(losses) >= 2 and all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model_type", VLM_TYPES)
def test_trained_reward_generates_with_images(trained, vlm_dirs, images, model_type, backend):
    """The composed distribution is log_softmax(base + reward/λ); the trained answer becomes more likely."""
    model = PRTForCausalLM.from_pretrained(vlm_dirs[model_type], trained[model_type, backend], backend=backend)
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which capital is this?"}]}]
    ids, batch = model.prepare(chat, [images[0]])
    out = model([ids], images=[batch])
    logprobs, base, reward = (to_numpy(x)[0] for x in (out.logprobs, out.base_logprobs, out.reward))
    expected = base + reward
    expected -= np.log(np.exp(expected - expected.max(-1, keepdims=True)).sum(-1, keepdims=True)) + expected.max(-1, keepdims=True)
    np.testing.assert_allclose(logprobs, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(reward[-1]).max() > 1e-3
    answer = model.tokenizer.encode("Brightwater")[0]
    assert logprobs[-1, answer] > base[-1, answer]
    text = model.generate(chat, images=[images[0]], max_tokens=4)
    assert isinstance(text, str) and text


@pytest.mark.parametrize("backend", BACKENDS)
def test_image_features_computed_once_for_base_and_reward(trained, vlm_dirs, images, backend):
    model = PRTForCausalLM.from_pretrained(vlm_dirs["qwen2_vl"], trained["qwen2_vl", backend], backend=backend)
    encoder = model.target.vision
    assert model.rewards[0].vision.key == encoder.key  # the LoRA twin shares the source's vision tower
    calls = []
    original = type(encoder).features
    encoder.features = lambda inputs: calls.append(1) or original(encoder, inputs)
    batch = Images([images[1]])
    ids, _ = model.prepare("Look: ", batch)
    model([ids], images=[batch])
    list(model.stream_steps("Look: ", images=batch, max_tokens=2))
    assert len(calls) == 1  # one image, base and reward, scoring and generation


@pytest.mark.parametrize("trained_on,loaded_on", [("mlx", "torch"), ("torch", "mlx")])
def test_reward_artifacts_move_between_backends(trained, vlm_dirs, images, trained_on, loaded_on):
    """A reward trained on one backend gives the same composed log-probs on the other."""
    out = {}
    for backend in (trained_on, loaded_on):
        model = PRTForCausalLM.from_pretrained(vlm_dirs["qwen2_5_vl"], trained["qwen2_5_vl", trained_on], backend=backend)
        ids, batch = model.prepare("What is this?", [images[2]])
        out[backend] = to_numpy(model([ids], images=[batch]).logprobs)
    np.testing.assert_allclose(out[trained_on], out[loaded_on], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model_type", VLM_TYPES)
def test_base_swap_to_a_bigger_model_of_the_family(trained, vlm_dirs, big_vlm_dirs, images, model_type, backend):
    """The reward trained on the small VLM is added to the bigger one (a wider head with padding rows): each model
    encodes the image with its own tower, the sequence is the same."""
    model = PRTForCausalLM.from_pretrained(big_vlm_dirs[model_type], trained[model_type, backend], backend=backend)
    assert model.base_models() == [model.target]  # the LoRA twin carries its source; no extra base runs
    assert model.rewards[0].vision.key != model.target.vision.key
    assert model.target.vocab_size == model.vocab_size + 8
    assert_reward_added_to_target(model, "Which capital is this?", images[1])


def test_quantized_mlx_base_trains_and_generates(vlm_root, vlm_dirs, vlm_data, images):
    """On mlx the base may be 4-bit (language model only; the vision tower stays in float)."""
    out = vlm_root / "reward-q4"
    summary = train_reward(vlm_dirs["qwen2_vl"], vlm_data, out, LORA, TRAINING, backend="mlx", quantize=4)
    assert np.isfinite(summary["best_val_loss"])
    model = PRTForCausalLM.from_pretrained(vlm_dirs["qwen2_vl"], out, backend="mlx", quantize=4)
    assert model.target.quantized
    assert model.generate("Which capital is this?", images=[images[0]], max_tokens=3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluation_scores_image_rows(trained, vlm_dirs, vlm_data, backend):
    """`prt eval`'s evaluation reads the LLaVA-style rows with their images: the trained reward lowers the NLL of
    the answers (image tokens and prompts are not scored) and answers are generated with the images."""
    from prtcore.evaluation import evaluate_split
    from prtcore.model import ComposedLM

    prt = PRTForCausalLM.from_pretrained(vlm_dirs["qwen2_vl"], trained["qwen2_vl", backend], backend=backend)
    base = ComposedLM(prt.backend, [prt.target], "base")
    report = evaluate_split({"base": base, "prt": prt}, vlm_data / "valid.jsonl", max_tokens=3)
    results = report["results"]
    turn = [{"role": "user", "content": "Q"}]
    prompt_len = len(prt.apply_chat_template(turn))
    answer_tokens = sum(len(prt.apply_chat_template(turn + [{"role": "assistant", "content": a}],
                                                    add_generation_prompt=False)) - prompt_len
                        for a in ("Brightwater", "Dunmere"))  # the answer and its end of turn
    assert results["base"]["tokens"] == results["prt"]["tokens"] == answer_tokens
    assert results["prt"]["nll"] < results["base"]["nll"]
    assert results["prt"]["answered"] == 2 and all(r["outputs"]["prt"] is not None for r in report["generations"])


def test_evaluation_refuses_to_cut_through_image_tokens(vlm_dirs, vlm_data):
    """A max_seq_length that ends inside a row's image tokens is an error naming the row, as in training (a cut
    would leave fewer placeholders than image features)."""
    from prtcore.errors import DataError
    from prtcore.evaluation import evaluate_split
    from prtcore.model import ComposedLM

    base = ComposedLM.from_pretrained(vlm_dirs["qwen2_vl"], method="base", backend="torch")
    with pytest.raises(DataError, match=r"valid\.jsonl:1: max_seq_length=4 would cut the row's image tokens"):
        evaluate_split({"base": base}, vlm_data / "valid.jsonl", max_seq_length=4, generate=False)
