"""Batched greedy answers (prtcore.evaluation.greedy_answers, what `prt eval` decodes with) equal one-at-a-time
decoding row by row, on mlx and torch, for PRT (each reward kind), EFT and the target alone; and mlx's forwards
take a left-padded batch's attention mask and positions (capability "batched") as torch's do."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from bench_testutil import KINDS, REWARD, SMALL
from prtcore import PRTForCausalLM, RewardConfig, get_backend
from prtcore.benchmarking.models import random_prompt
from prtcore.errors import BackendError, GenerationError
from prtcore.evaluation import Request, greedy_answers
from prtcore.model import ComposedLM
from prtcore.plugins import installed_backend_names

BACKENDS = [b for b in ("mlx", "torch") if b in installed_backend_names()]
COMPOSITIONS = KINDS + ["eft", "base"]
LENGTHS = (3, 11, 6, 1, 9, 4, 7)  # prompts of different lengths: every batch is left-padded


@pytest.fixture(scope="module", params=BACKENDS)
def models(request, tokenizer_dir):
    """(backend, make(shape, seed) → a random base of that shape, perturb(reward, seed))."""
    name = request.param
    backend = get_backend(name)
    bench = importlib.import_module(f"prt_{name}.bench")
    if name == "mlx":
        make = lambda shape, seed: bench.mlx_base(backend, shape, tokenizer_dir, seed=seed)  # noqa: E731
    else:
        make = lambda shape, seed: bench.torch_base(backend, shape, tokenizer_dir, seed=seed, device="cpu")  # noqa: E731
    return backend, make, bench.perturb


def composed(models, what: str):
    backend, make, perturb = models
    target = make(SMALL.target, 0)
    if what == "base":
        return PRTForCausalLM(backend, target)
    if what == "eft":
        return ComposedLM(backend, [target, make(SMALL.source, 2), make(SMALL.source, 1)], "eft")
    source = make(SMALL.source, 1)  # its own: a LoRA twin adapts its source in place
    reward = backend.create_reward(RewardConfig(kind=what, **REWARD), source, seed=3)
    perturb(reward, 4, scale=0.3)
    return PRTForCausalLM(backend, target, [reward], sources=[None if what == "twin" else source])


def requests(model, stop: tuple[str, ...] = ()) -> list[Request]:
    """Prompts of LENGTHS, each with a budget of its own (so rows of one batch end at different steps)."""
    return [Request(random_prompt(model.vocab_size, n, seed=n), 4 + (i % 3) * 3, stop) for i, n in enumerate(LENGTHS)]


@pytest.mark.parametrize("what", COMPOSITIONS)
def test_batched_greedy_answers_equal_one_at_a_time(models, what):
    model = composed(models, what)
    reqs = requests(model)
    alone = greedy_answers(model, reqs, batch_size=1)
    assert alone.batch_size == 1
    eos = set(model.target.eos_token_ids)
    for request, g in zip(reqs, alone.generations):  # batch 1 is `generate`
        assert g.tokens == [s.token for s in model.stream_steps(request.ids, max_tokens=request.max_tokens)
                            if s.token not in eos]
        assert g.text == model.generate(request.ids, max_tokens=request.max_tokens)
        assert len(g.tokens) == request.max_tokens if g.finish_reason == "length" else g.finish_reason == "stop"
    for size in (3, 8):
        batched = greedy_answers(model, reqs, batch_size=size)
        assert batched.batch_size == size and batched.fallback is None
        assert batched.generations == alone.generations


def test_stop_strings_end_rows_of_a_batch_as_alone(models):
    model = composed(models, "linear")
    first = greedy_answers(model, requests(model), batch_size=1).generations
    # a stop string taken from the middle of some rows' answers: those rows end early, the others run on
    stop = next(g.text[2:4] for g in first if len(g.text) >= 4 and g.text[2:4].strip())
    alone = greedy_answers(model, requests(model, (stop,)), batch_size=1).generations
    batched = greedy_answers(model, requests(model, (stop,)), batch_size=4).generations
    assert batched == alone
    assert any(g.finish_reason == "stop" for g in alone) and all(stop not in g.text for g in alone)


def test_greedy_answers_refuses_a_bad_batch_size(models):
    model = composed(models, "base")
    for bad in (0, -2, 1.5, True):
        with pytest.raises(GenerationError, match=f"batch_size={bad!r} must be an integer >= 1"):
            greedy_answers(model, requests(model), batch_size=bad)


def test_a_prompt_that_fills_the_context_window_is_refused_in_a_batch(models):
    model = composed(models, "base")
    window = model.context_window()
    long = Request(random_prompt(model.vocab_size, window, seed=1), 4)
    with pytest.raises(GenerationError, match=f"the prompt has {window} tokens"):
        greedy_answers(model, [long, *requests(model)[:2]], batch_size=3)


# ------------------------------------------------------------------------------------------------ mlx forwards
def test_mlx_declares_batched_and_refuses_masks_it_cannot_take(models):
    backend, make, _ = models
    if backend.name != "mlx":
        pytest.skip("mlx's translation of attention masks into mlx-lm batch caches")
    assert backend.supports("batched")
    base = make(SMALL.target, 0)
    ids = backend.asarray([[5, 6, 7], [8, 9, 10]])
    holes = backend.asarray(np.array([[1, 0, 1], [1, 1, 1]]))
    with pytest.raises(BackendError, match=r"attention_mask row 0 is \[1, 0, 1\]: mlx batches take left padding only"):
        base.forward(ids, base.make_cache(), attention_mask=holes)
    mask = backend.asarray(np.array([[0, 1, 1], [1, 1, 1]]))
    with pytest.raises(BackendError, match=r"position_ids \[\[1, 2, 3\], \[0, 1, 2\]\]: mlx batches take the positions"):
        base.forward(ids, base.make_cache(), attention_mask=mask, position_ids=backend.asarray([[1, 2, 3], [0, 1, 2]]))
    cache = base.make_cache()
    base.forward(ids, cache, attention_mask=mask, position_ids=backend.asarray([[0, 0, 1], [0, 1, 2]]))
    late_padding = backend.asarray(np.array([[0, 1, 1, 0], [1, 1, 1, 1]]))
    with pytest.raises(BackendError, match="attention_mask row 0 is"):
        base.forward(backend.asarray([[1], [2]]), cache, attention_mask=late_padding)


def test_mlx_padded_forward_equals_each_row_alone(models):
    """The logits of a left-padded batch (no cache) equal each row's own, at every real position."""
    backend, make, _ = models
    if backend.name != "mlx":
        pytest.skip("torch's padded forward is checked by the conformance suite")
    base = make(SMALL.target, 0)
    rows = [random_prompt(base.vocab_size, n, seed=n) for n in (2, 7, 5)]
    width = max(len(r) for r in rows)
    ids = [[0] * (width - len(r)) + r for r in rows]
    mask = np.array([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    out = np.array(base.forward(backend.asarray(ids), attention_mask=backend.asarray(mask)).logits)
    for i, row in enumerate(rows):
        alone = np.array(base.forward(backend.asarray([row])).logits)[0]
        np.testing.assert_allclose(out[i, width - len(row):], alone, atol=1e-4, rtol=0)
