"""The decoding loop with fake NumPy scorers and fake tokenizers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prtcore import GenerationError, PRTComposer, Sampler
from prtcore.sampling import BaseComposer, GenerationStep, Scorer, decode


class ScriptScorer(Scorer):
    """Favours `script[i]` as the i-th generated token; records every call (ids as (B, n) arrays)."""

    def __init__(self, script, vocab_size, margin=20.0):
        self.script, self.V, self.margin = list(script), vocab_size, margin
        self.calls = []
        self.seen = []

    def __call__(self, ids):
        ids = np.asarray(ids)
        assert ids.ndim == 2 and ids.shape[0] == 1
        self.calls.append(ids.copy())
        self.seen.extend(int(i) for i in ids[0])
        generated = len(self.seen) - len(self.calls[0][0])
        logits = np.zeros((1, self.V))
        if generated < len(self.script):
            logits[0, self.script[generated]] = self.margin
        return logits


class ZeroScorer(Scorer):
    def __init__(self, vocab_size):
        self.V = vocab_size
        self.calls = 0

    def __call__(self, ids):
        self.calls += 1
        return np.zeros((1, self.V))


class ListTokenizer:
    """Each id is a fixed string; decoding concatenates."""

    def __init__(self, tokens):
        self.tokens = list(tokens)

    def decode(self, ids):
        return "".join(self.tokens[i] for i in ids)

    def get_vocab(self):
        return {t: i for i, t in enumerate(self.tokens)}


class ByteTokenizer:
    """Ids 0..255 are bytes; incomplete UTF-8 decodes to U+FFFD like real byte-level tokenizers."""

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


def _run(script, tokenizer, V, *, max_tokens=50, eos_ids=(), stop=(), prompt=(1,), composer=None, two=True):
    scorers = [ScriptScorer(script, V)] + ([ZeroScorer(V)] if two else [])
    composer = composer or (PRTComposer() if two else BaseComposer())
    steps = list(decode(scorers, composer, Sampler(), list(prompt), xp=np, max_tokens=max_tokens,
                        to_backend=np.asarray, eos_ids=eos_ids, tokenizer=tokenizer, stop=stop))
    return steps, scorers


WORDS = ["<s>", "</s>", "Hello", " world", "!", " <", "/", "stop", ">", " more", "x"]


def test_stops_on_eos_and_flushes_text():
    tok = ListTokenizer(WORDS)
    steps, scorers = _run([2, 3, 4, 1, 9, 9], tok, len(WORDS), eos_ids=[1])
    assert [s.token for s in steps] == [2, 3, 4, 1]
    assert [s.finish_reason for s in steps] == [None, None, None, "stop"]
    assert "".join(s.text for s in steps) == "Hello world!"
    assert all(isinstance(s, GenerationStep) for s in steps)
    # Prefill with the prompt, then one token per step (none after the EOS).
    assert [c.tolist() for c in scorers[0].calls] == [[[1]], [[2]], [[3]], [[4]]]
    assert scorers[1].calls == 4


def test_stops_after_max_tokens():
    tok = ListTokenizer(WORDS)
    steps, scorers = _run([2, 3, 4, 9, 9, 9], tok, len(WORDS), max_tokens=3, eos_ids=[1])
    assert [s.token for s in steps] == [2, 3, 4]
    assert [s.finish_reason for s in steps] == [None, None, "length"]
    assert "".join(s.text for s in steps) == "Hello world!"
    assert len(scorers[0].calls) == 3  # prefill + 2 steps; no forward after the last token


def test_max_tokens_zero_yields_nothing_and_runs_no_model():
    steps, scorers = _run([2, 3], ListTokenizer(WORDS), len(WORDS), max_tokens=0)
    assert steps == []
    assert scorers[0].calls == [] and scorers[1].calls == 0


def test_empty_prompt_and_negative_max_tokens_raise():
    with pytest.raises(GenerationError, match="empty"):
        _run([2], ListTokenizer(WORDS), len(WORDS), prompt=())
    with pytest.raises(GenerationError, match="max_tokens"):
        _run([2], ListTokenizer(WORDS), len(WORDS), max_tokens=-1)


def test_without_tokenizer_text_is_empty():
    steps, _ = _run([2, 3], None, len(WORDS), max_tokens=2)
    assert [s.token for s in steps] == [2, 3] and all(s.text == "" for s in steps)


def test_stop_string_spanning_tokens_is_cut_and_never_shown():
    tok = ListTokenizer(WORDS)
    # "Hello world <" "/" "stop" ">" " more": the stop string " </stop>" spans four tokens.
    steps, _ = _run([2, 3, 5, 6, 7, 8, 9, 9], tok, len(WORDS), stop=[" </stop>"], eos_ids=[1])
    assert [s.token for s in steps] == [2, 3, 5, 6, 7, 8]
    assert steps[-1].finish_reason == "stop"
    assert "".join(s.text for s in steps) == "Hello world"
    for s in steps:
        assert not any(ch in s.text for ch in "</>") and "stop" not in s.text


def test_false_start_of_stop_string_is_released():
    tok = ListTokenizer(WORDS)
    steps, _ = _run([2, 5, 6, 10, 4], tok, len(WORDS), stop=[" </stop>"], max_tokens=5)
    texts = [s.text for s in steps]
    assert texts[:3] == ["Hello", "", ""]  # " <" and "/" held back: they could begin the stop string
    assert "".join(texts) == "Hello </x!"
    assert steps[-1].finish_reason == "length"


def test_held_back_prefix_is_flushed_on_eos():
    tok = ListTokenizer(WORDS)
    steps, _ = _run([2, 5, 1], tok, len(WORDS), stop=[" </stop>"], eos_ids=[1])
    assert [s.text for s in steps] == ["Hello", "", " <"]
    assert steps[-1].finish_reason == "stop"


def test_incomplete_utf8_is_held_back():
    text = "añ€😀!"
    data = list(text.encode("utf-8"))
    steps, _ = _run(data, ByteTokenizer(), 256, max_tokens=len(data))
    pieces = [s.text for s in steps]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    # Each character appears in the step of its last byte.
    assert [p for p in pieces if p] == ["a", "ñ", "€", "😀", "!"]


def test_utf8_and_stop_string_together():
    text = "é€x</s>more"
    data = list(text.encode("utf-8"))
    steps, _ = _run(data, ByteTokenizer(), 256, stop=["</s>"], max_tokens=100)
    assert "".join(s.text for s in steps) == "é€x"
    assert steps[-1].finish_reason == "stop"
    assert not any("\ufffd" in s.text or "<" in s.text for s in steps)


ALPHABET = ["a", "b", "c", "ab", "bc", "abc", "ca", " "]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, len(ALPHABET) - 1), min_size=1, max_size=12),
       st.lists(st.text(alphabet="abc ", min_size=1, max_size=4), max_size=3))
def test_streamed_text_is_always_a_prefix_of_the_text_before_the_stop(script, stop):
    tok = ListTokenizer(ALPHABET)
    steps, _ = _run(script, tok, len(ALPHABET), stop=stop, max_tokens=len(script))
    # Model of the contract: decoding stops at the first step whose text contains a stop string, and the
    # text is cut at the earliest stop-string occurrence in that text.
    expected, n_steps, reason = tok.decode(script), len(script), "length"
    for k in range(1, len(script) + 1):
        text = tok.decode(script[:k])
        hits = [text.find(s) for s in stop if s in text]
        if hits:
            expected, n_steps, reason = text[: min(hits)], k, "stop"
            break
    assert len(steps) == n_steps
    assert steps[-1].finish_reason == reason
    assert all(s.finish_reason is None for s in steps[:-1])
    shown = ""
    for k, s in enumerate(steps, 1):
        shown += s.text
        assert expected.startswith(shown), (shown, expected)
        if s.finish_reason is None:
            # Nothing that could still become a stop string is visible yet: a suffix of the text so far that
            # begins a stop string is held back.
            text = tok.decode(script[:k])
            for st_ in stop:
                for j in range(1, len(st_)):
                    if text.endswith(st_[:j]):
                        assert len(shown) <= len(text) - j, (shown, text, st_)
    assert shown == expected


def test_seeded_sampling_decode_is_reproducible():
    V = 16
    tok = ListTokenizer([chr(ord("a") + i) for i in range(V)])

    def run(seed):
        return [s.token for s in decode([ZeroScorer(V), ZeroScorer(V)], PRTComposer(), Sampler(temperature=1.0, seed=seed),
                                        [0], xp=np, max_tokens=20, to_backend=np.asarray, tokenizer=tok)]

    assert run(3) == run(3)
    assert run(3) != run(4)
