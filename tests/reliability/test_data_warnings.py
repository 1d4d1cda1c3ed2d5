"""Data that trains a likely useless reward is warned about, once per file, naming the file, the count and the first
line: empty completions, and rows longer than the model's context window."""

from __future__ import annotations

import json

import pytest

from prtcore.data import context_window, load_dataset

from .conftest import write_jsonl
from .test_fuzz import _tokenizer


def test_empty_completions_are_warned_about(rws, tmp_path):
    rows = [{"prompt": "What is the capital of Mira?", "completion": "The capital is Mira."},
            {"prompt": "What is the capital of Avalon?", "completion": " "}]
    write_jsonl(tmp_path / "train.jsonl", rows[:2])
    write_jsonl(tmp_path / "valid.jsonl", rows[:1])
    with pytest.warns(UserWarning, match=r"train\.jsonl: 1 of 2 rows \(first: line 2\) have an empty completion"):
        load_dataset(tmp_path, _tokenizer(rws))


def test_rows_longer_than_the_context_window_are_warned_about(rws, tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "What is the capital of Mira? " * 4}, {"text": "Mira."}])
    write_jsonl(tmp_path / "valid.jsonl", [{"text": "Mira."}])
    with pytest.warns(UserWarning, match=r"train\.jsonl: 1 of 2 rows \(first: line 1\) are longer than the model's "
                                         r"context window \(max_position_embeddings=8\)"):
        load_dataset(tmp_path, _tokenizer(rws), model_config={"max_position_embeddings": 8})


@pytest.mark.parametrize("config, window", [({"max_position_embeddings": 512}, 512), ({}, None),
                                            ({"text_config": {"max_position_embeddings": 64}}, 64),
                                            ({"max_position_embeddings": "x"}, None)])
def test_context_window_of_a_config(config, window):
    assert context_window(json.loads(json.dumps(config))) == window
