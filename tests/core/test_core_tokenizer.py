"""check_same_tokenizer and tokenizer_vocab with fake tokenizers."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prtcore import TokenizerMismatchError
from prtcore.artifacts import tokenizer_fingerprint
from prtcore.sampling import check_same_tokenizer, tokenizer_vocab


class FakeTokenizer:
    def __init__(self, tokens):
        self.vocab = {t: i for i, t in enumerate(tokens)}

    def get_vocab(self):
        return dict(self.vocab)


TOKENS = ["<s>", "</s>", "a", "b", "ab", "Ġthe", "▁x"]


def test_identical_tokenizers_pass_and_return_length():
    assert check_same_tokenizer({"target": FakeTokenizer(TOKENS), "reward": FakeTokenizer(TOKENS)}) == len(TOKENS)
    assert check_same_tokenizer({"only": FakeTokenizer(TOKENS)}) == len(TOKENS)
    assert check_same_tokenizer({"a": FakeTokenizer(TOKENS), "b": FakeTokenizer(TOKENS),
                                 "c": FakeTokenizer(TOKENS)}) == len(TOKENS)


def test_vocab_order_is_by_id_not_dict_order():
    shuffled = FakeTokenizer([])
    shuffled.vocab = {t: i for i, t in reversed(list(enumerate(TOKENS)))}
    assert tokenizer_vocab(shuffled) == TOKENS
    assert check_same_tokenizer({"a": shuffled, "b": FakeTokenizer(TOKENS)}) == len(TOKENS)
    assert tokenizer_fingerprint(shuffled) == tokenizer_fingerprint(FakeTokenizer(TOKENS))


def test_differing_token_names_first_id_and_both_tokens():
    other = list(TOKENS)
    other[4], other[6] = "a b", "▁y"
    with pytest.raises(TokenizerMismatchError) as e:
        check_same_tokenizer({"target": FakeTokenizer(TOKENS), "reward": FakeTokenizer(other)})
    msg = str(e.value)
    assert "id 4" in msg and "'ab'" in msg and "'a b'" in msg
    assert "'target'" in msg and "'reward'" in msg
    assert "id 6" not in msg
    assert tokenizer_fingerprint(FakeTokenizer(TOKENS)) != tokenizer_fingerprint(FakeTokenizer(other))


@pytest.mark.parametrize("longer_role", ["target", "reward"])
def test_different_lengths_name_the_extra_id(longer_role):
    long_, short = FakeTokenizer(TOKENS + ["<extra_0>", "<extra_1>"]), FakeTokenizer(TOKENS)
    toks = {"target": long_, "reward": short} if longer_role == "target" else {"target": short, "reward": long_}
    with pytest.raises(TokenizerMismatchError) as e:
        check_same_tokenizer(toks)
    msg = str(e.value)
    assert f"{longer_role!r} has extra id {len(TOKENS)}" in msg
    assert "'<extra_0>'" in msg
    assert f"({len(TOKENS) + 2} tokens)" in msg and f"({len(TOKENS)} tokens)" in msg


def test_third_tokenizer_is_checked_too():
    other = list(TOKENS)
    other[0] = "<bos>"
    with pytest.raises(TokenizerMismatchError, match=r"'target' and 'draft' differ first at id 0"):
        check_same_tokenizer({"target": FakeTokenizer(TOKENS), "reward": FakeTokenizer(TOKENS),
                              "draft": FakeTokenizer(other)})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=20, unique=True), st.data())
def test_first_difference_is_reported(tokens, data):
    index = data.draw(st.integers(0, len(tokens) - 1))
    replacement = data.draw(st.text(min_size=1, max_size=3).filter(lambda t: t not in tokens))
    other = list(tokens)
    other[index] = replacement
    with pytest.raises(TokenizerMismatchError, match=re.escape(f"id {index}: {tokens[index]!r} vs {replacement!r}")):
        check_same_tokenizer({"x": FakeTokenizer(tokens), "y": FakeTokenizer(other)})
