"""PRT with Eagle2 on both backends: a LoRA twin on the language model (q/k/v/o, gate/up/down) trained on image
QA, generation with images, artifacts read by the other backend, and a base swap to a bigger Eagle2 (the other
config format, same tokenizer)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from prtcore import PRTForCausalLM, to_numpy
from prtcore.config import RewardConfig, TrainingConfig
from prtcore.testing.eagle2 import make_eagle2_checkpoint
from prtcore.testing.vision import assert_reward_added_to_target
from prtcore.training import train_reward
from prtcore.vision import Images

LORA = RewardConfig(kind="twin", fine_tune_type="lora", lora={"rank": 4, "num_layers": -1},
                    entropy_coeff=0.05)  # the setting these expectations were measured with
TRAINING = TrainingConfig(iters=12, batch_size=2, learning_rate=1e-2, steps_per_eval=2, steps_per_report=2,
                          save_every=12, val_batches=-1, mask_prompt=True)
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
ANSWERS = {"red": "Brightwater", "green": "Dunmere", "blue": "Avalon"}
BACKENDS = ("torch", "mlx")
LLM_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def qa_data(tmp_path_factory):
    """Image QA in mlx-vlm's jsonl style: the answer is the capital named after the image's colour."""
    root = tmp_path_factory.mktemp("eagle2-qa")
    (root / "img").mkdir()
    for name, rgb in COLOURS.items():
        Image.new("RGB", (112, 56), rgb).save(root / "img" / f"{name}.png")
    data = root / "data"
    data.mkdir()
    names = list(COLOURS)
    rows = {split: [{"images": [f"../img/{names[i % 3]}.png"],
                     "messages": [{"role": "user", "content": "<image>Which capital is this?"},
                                  {"role": "assistant", "content": ANSWERS[names[i % 3]]}]} for i in range(n)]
            for split, n in (("train", 6), ("valid", 3))}
    for split, items in rows.items():
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    return root


@pytest.fixture(scope="module")
def trained(native_dirs, qa_data):
    """{backend: reward directory} trained on the small eagle_chat checkpoint; PRT_QUIET silences progress."""
    pytest.importorskip("mlx.core")
    os.environ["PRT_QUIET"] = "1"
    out = {}
    for backend in BACKENDS:
        out[backend] = qa_data / f"reward-{backend}"
        train_reward(native_dirs["eagle_chat"], qa_data / "data", out[backend], LORA, TRAINING, backend=backend)
    return out


@pytest.fixture(scope="module")
def big_dir(tmp_path_factory, eagle_tokenizer):
    """A bigger Eagle2 in the other format: hidden 96, 3 layers, other weights; same tokenizer and vision sizes."""
    return make_eagle2_checkpoint(tmp_path_factory.mktemp("eagle2-big") / "big", "eagle_2_5_vl", seed=1,
                                  tokenizer_dir=eagle_tokenizer, text={"hidden_size": 96, "num_hidden_layers": 3,
                                                                       "intermediate_size": 160})


def val_losses(reward_dir) -> list[float]:
    rows = [json.loads(line) for line in (reward_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["val_loss"] for r in rows if "val_loss" in r]


@pytest.mark.parametrize("backend", BACKENDS)
def test_lora_on_the_language_model_lowers_the_validation_loss(trained, backend):
    losses = val_losses(trained[backend])
    assert len(losses) >= 2 and all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.1
    adapter = json.loads((trained[backend] / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == LLM_TARGETS  # no vision tower or projector layers


def answer_logprob(logprobs, prompt_len: int, answer: list[int]) -> float:
    """log p(answer | prompt) teacher-forced from the (T, V) log-probs of prompt + answer."""
    return float(sum(logprobs[prompt_len - 1 + i, t] for i, t in enumerate(answer)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_composed_logprobs_and_generation_with_images(trained, native_dirs, qa_data, backend):
    model = PRTForCausalLM.from_pretrained(native_dirs["eagle_chat"], trained[backend], backend=backend)
    assert model.rewards[0].vision.key == model.target.vision.key  # the twin shares the source's tower
    chat = [{"role": "user", "content": "<image>Which capital is this?"}]
    for colour, capital in ANSWERS.items():
        image = qa_data / "img" / f"{colour}.png"
        ids, batch = model.prepare(chat, [image])
        assert ids.count(model.target.vision.image_token_id) == 12  # (2, 1) tiles + thumbnail, 4 tokens each
        answer = model.tokenizer.encode(capital)
        out = model([ids + answer], images=[batch])
        logprobs, base, reward = (to_numpy(x)[0] for x in (out.logprobs, out.base_logprobs, out.reward))
        expected = base + reward
        expected -= np.log(np.exp(expected - expected.max(-1, keepdims=True)).sum(-1, keepdims=True)) + expected.max(-1, keepdims=True)
        np.testing.assert_allclose(logprobs, expected, rtol=1e-4, atol=1e-4)
        assert answer_logprob(logprobs, len(ids), answer) > answer_logprob(base, len(ids), answer) + 1.0
    text = model.generate(chat, images=[qa_data / "img" / "red.png"], max_tokens=4)
    assert isinstance(text, str) and text


@pytest.mark.parametrize("backend", BACKENDS)
def test_image_features_computed_once_for_base_and_reward(trained, native_dirs, qa_data, backend):
    model = PRTForCausalLM.from_pretrained(native_dirs["eagle_chat"], trained[backend], backend=backend)
    encoder, calls = model.target.vision, []
    original = encoder.features_fn
    encoder.features_fn = lambda pixels: calls.append(1) or original(pixels)
    batch = Images([qa_data / "img" / "blue.png"])
    ids, _ = model.prepare("Look: ", batch)
    model([ids], images=[batch])
    list(model.stream_steps("Look: ", images=batch, max_tokens=2))
    assert len(calls) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_base_swap_to_a_bigger_eagle2(trained, big_dir, qa_data, backend):
    model = PRTForCausalLM.from_pretrained(big_dir, trained[backend], backend=backend)
    assert model.target.hidden_size == 96 and model.target.model_type == "eagle_2_5_vl"
    assert model.rewards[0].vision.key != model.target.vision.key  # each model encodes with its own tower
    assert_reward_added_to_target(model, "Which capital is this?", qa_data / "img" / "green.png")


@pytest.mark.parametrize("trained_on, loaded_on", [("torch", "mlx"), ("mlx", "torch")])
def test_reward_artifacts_move_between_backends(trained, native_dirs, qa_data, trained_on, loaded_on):
    out = {}
    for backend in (trained_on, loaded_on):
        model = PRTForCausalLM.from_pretrained(native_dirs["eagle_chat"], trained[trained_on], backend=backend)
        ids, batch = model.prepare("Which capital is this?", [qa_data / "img" / "blue.png"])
        out[backend] = to_numpy(model([ids], images=[batch]).logprobs)
    np.testing.assert_allclose(out[trained_on], out[loaded_on], rtol=1e-4, atol=1e-4)
