"""Token ids are checked at the boundary, on both backends: a tokenizer whose pad token lies past the model's
embedding rows (as when a pad token is added without resizing the model), an eos that is not id 0, and a
generation_config.json with several eos ids."""

from __future__ import annotations

import json

import numpy as np
import pytest

import prtcore
from prtcore import PRTForCausalLM
from prtcore.config import RewardConfig, TrainingConfig
from prtcore.errors import ConfigError, DataError, PRTError
from prtcore.plugins import installed_backend_names
from prtcore.tokens import as_id_rows, eos_token_ids, pad_id_of
from prtcore.training import train_reward

BACKENDS = [b for b in ("mlx", "torch") if b in installed_backend_names()]
EXTRA_PAD = "<|extra_pad|>"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny llama whose tokenizer has 385 tokens for 384 embedding rows: its pad token (id 384) has no row.
    eos is <|im_end|> (id 2); generation_config.json lists eos ids 0 and 2."""
    from transformers import AutoTokenizer

    from prtcore.testing.checkpoints import make_tiny_checkpoint, make_tokenizer

    root = tmp_path_factory.mktemp("pad-past-rows")
    path = make_tiny_checkpoint(root / "base", "llama", tokenizer_dir=make_tokenizer(root / "tok"),
                                hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.add_special_tokens({"pad_token": EXTRA_PAD, "eos_token": "<|im_end|>"})
    tok.save_pretrained(str(path))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [0, 2], "pad_token_id": 384}))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rows = [{"prompt": f"What is the capital of Avalon? {i}", "completion": " Brightwater."} for i in range(6)]
    for split in ("train", "valid"):
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module", params=BACKENDS)
def model(request, base):
    return PRTForCausalLM.from_pretrained(base, backend=request.param)


def test_layout_is_what_the_tests_need(model):
    assert len(model.tokenizer) == 385 and model.target.vocab_size == 384
    assert model.tokenizer.pad_token_id == 384 and model.tokenizer.eos_token_id == 2
    assert model.rows == 384


def test_eos_ids_join_tokenizer_and_generation_config(model):
    assert model.target.eos_token_ids == [0, 2]


def test_eos_ids_read_every_shape_a_tokenizer_gives():
    class Tok:  # transformers 5 answers `eos_token_ids` with an int; mlx-lm's wrapper with a set
        eos_token_id = 5
        eos_token_ids = 5

    assert eos_token_ids(Tok()) == [5]
    Tok.eos_token_ids = {7, 5}
    assert eos_token_ids(Tok(), config={"eos_token_id": [9, 5]}) == [5, 7, 9]
    Tok.eos_token_id, Tok.eos_token_ids = None, None
    assert eos_token_ids(Tok(), config={"text_config": {"eos_token_id": 3}}) == [3]


def test_padding_uses_an_id_the_model_has():
    class Tok:
        pad_token_id, eos_token_id = 384, 2

    assert pad_id_of(Tok(), 384) == 2
    assert pad_id_of(Tok(), 385) == 384
    Tok.eos_token_id = 500
    assert pad_id_of(Tok(), 384) == 0


@pytest.mark.parametrize("ids, message", [
    ([[1, 2, 384]], "token ids row 0: token id 384 at position 2 is out of range: the model has 384 embedding rows"),
    ([[1, 2], [3, -1]], "token ids row 1: token id -1 at position 1 is out of range"),
    ([], "token ids: expected a non-empty list of rows of ints, got []"),
    ([[]], "token ids row 0: expected a non-empty list of ints"),
    ([[1, 2], [3]], "token ids: rows have different lengths (2, 1)"),
    ("hello", "token ids: expected a non-empty list of rows of ints, got 'hello'"),
    ([[1, 2.5]], "token ids row 0: 2.5 is not an integer token id"),
    ([[1, True]], "token ids row 0: True is not an integer token id"),
])
def test_bad_batches_get_one_line(model, ids, message):
    with pytest.raises(ConfigError) as info:
        model(ids)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_backend_arrays_are_checked_too(model):
    bad = model.backend.asarray([[1, 2, 400]])
    with pytest.raises(ConfigError, match="token id 400 at position 2 is out of range: the model has 384"):
        model(bad)
    with pytest.raises(ConfigError, match=r"expected a non-empty \(batch, length\) array, got shape \(3,\)"):
        model(np.array([1, 2, 3]))
    with pytest.raises(ConfigError, match="expected integers, got dtype float"):
        model(np.array([[1.0, 2.0]]))
    out = model(model.backend.asarray([[1, 2, 383]]))
    assert np.isfinite(prtcore.to_numpy(out.logprobs)).any()


def test_prompts_are_checked(model):
    with pytest.raises(PRTError, match=r"prompt: token id 384 at position \d+ is out of range"):
        model.generate(f"Hello{EXTRA_PAD}", max_tokens=2)
    with pytest.raises(ConfigError, match="token id 999"):
        model.generate([1, 999], max_tokens=2)
    assert isinstance(model.generate("Hello", max_tokens=3), str)


def test_a_pad_id_past_the_rows_trains_and_batches(base, data_dir, tmp_path, model):
    name = model.backend.name
    summary = train_reward(base, data_dir, tmp_path / "reward", RewardConfig(kind="linear"),
                           TrainingConfig(iters=3, batch_size=2, steps_per_report=1, steps_per_eval=3, max_seq_length=64),
                           backend=name)
    assert np.isfinite(summary["best_val_loss"])
    records = [json.loads(line) for line in (tmp_path / "reward" / "metrics.jsonl").read_text().splitlines()]
    train = [r["train_loss"] for r in records if "train_loss" in r]
    assert len(train) == 3 and all(np.isfinite(train))
    prt = PRTForCausalLM.from_pretrained(base, tmp_path / "reward", backend=name)
    prompts = ["Hello", "What is the capital of Avalon?"]  # left padding with the pad id would index past the rows
    if name == "mlx":
        from prt_mlx.generation import generate_batch

        texts = generate_batch(prt, prompts, max_tokens=2)
    else:
        from prt_torch.generation import PRTGenerator

        texts = PRTGenerator(prt).generate_batch(prompts, max_tokens=2)
    assert texts == [prt.generate(p, max_tokens=2) for p in prompts]


def test_data_with_a_token_the_model_lacks_is_refused(base, tmp_path, model):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "valid"):
        (data / f"{split}.jsonl").write_text(json.dumps({"text": "Hello world"}) + "\n"
                                                  + json.dumps({"text": f"Hello {EXTRA_PAD} world"}) + "\n")
    with pytest.raises(DataError) as info:
        train_reward(base, data, tmp_path / "out", RewardConfig(kind="linear"), TrainingConfig(iters=1, batch_size=1),
                     backend=model.backend.name)
    assert f"{data / 'train.jsonl'}:2: token id 384 at position" in str(info.value)
    assert "the model has 384 embedding rows" in str(info.value)
    assert not (tmp_path / "out").exists()  # refused before the run began: no directory left behind


def test_as_id_rows_accepts_numpy_integers():
    assert as_id_rows([[np.int64(3), 4]], 10) == [[3, 4]]
