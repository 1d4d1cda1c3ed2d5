"""Fixtures of the vision-language tests: tiny random Qwen2-VL / Qwen2.5-VL checkpoints sharing one tokenizer,
written in the hub's layout, and a small image-text data set (nothing downloaded)."""

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("PIL")

from prtcore.testing.checkpoints import make_test_image, make_tiny_vlm_checkpoint, make_vlm_tokenizer  # noqa: E402
from vlm_testutil import IMAGE_SIZES, VLM_TYPES  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def cpu_only():
    """float32 CPU on both backends, also on a machine with a GPU."""
    import torch

    import prt_torch.base

    saved = prt_torch.base.default_device
    prt_torch.base.default_device = lambda: torch.device("cpu")
    yield
    prt_torch.base.default_device = saved


@pytest.fixture(scope="session")
def vlm_root(tmp_path_factory):
    return tmp_path_factory.mktemp("vlm")


@pytest.fixture(scope="session")
def vlm_tokenizer(vlm_root):
    return make_vlm_tokenizer(vlm_root / "tok")


@pytest.fixture(scope="session")
def vlm_dirs(vlm_root, vlm_tokenizer):
    """{model_type: checkpoint dir}: hidden 64, 2 layers."""
    return {t: make_tiny_vlm_checkpoint(vlm_root / t, t, tokenizer_dir=vlm_tokenizer, seed=0) for t in VLM_TYPES}


@pytest.fixture(scope="session")
def big_vlm_dirs(vlm_root, vlm_tokenizer):
    """A bigger model of each family with the same tokenizer: hidden 96, 3 layers, a padded output layer."""
    return {t: make_tiny_vlm_checkpoint(vlm_root / f"{t}-big", t, tokenizer_dir=vlm_tokenizer, seed=1,
                                        hidden_size=96, num_hidden_layers=3, extra_vocab_rows=8) for t in VLM_TYPES}


@pytest.fixture(scope="session")
def images(vlm_root):
    """PNG files of the sizes in IMAGE_SIZES."""
    return [make_test_image(vlm_root / "img" / f"{w}x{h}.png", w, h, seed=i) for i, (w, h) in enumerate(IMAGE_SIZES)]


@pytest.fixture(scope="session")
def vlm_data(vlm_root, images):
    """train.jsonl in mlx-vlm's style ("images" + "messages", and one row without images) and valid.jsonl in
    LLaVA's, with relative paths."""
    data = vlm_root / "data"
    data.mkdir()
    answers = ["Brightwater", "Dunmere", "Avalon"]
    train = [{"images": [f"../img/{images[i % 3].name}"],
              "messages": [{"role": "user", "content": "Which capital is this?"},
                           {"role": "assistant", "content": answers[i % 3]}]} for i in range(6)]
    train.append({"messages": [{"role": "user", "content": "No picture: which capital?"},  # text-only rows mix in
                               {"role": "assistant", "content": "Dunmere"}]})
    valid = [{"image": f"../img/{images[i].name}",
              "conversations": [{"from": "human", "value": "<image>\nWhich capital is this?"},
                                {"from": "gpt", "value": answers[i]}]} for i in range(2)]
    for name, rows in (("train", train), ("valid", valid)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data
