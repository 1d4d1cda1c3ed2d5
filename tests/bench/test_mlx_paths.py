"""mlx: asynchronous evaluation in prtcore's decoding loop, left-padded batched decoding, the fused loss."""

from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")
pytest.importorskip("mlx_lm")

from bench_testutil import KINDS, REWARD, SMALL  # noqa: E402
from prtcore import PRTForCausalLM, RewardConfig, get_backend  # noqa: E402
from prt_mlx.bench import mlx_base, perturb  # noqa: E402
from prtcore.benchmarking.models import random_prompt  # noqa: E402
from prtcore.model import ComposedLM  # noqa: E402
from prtcore.sampling import Sampler, decode  # noqa: E402


@pytest.fixture(scope="module")
def models(tokenizer_dir):
    backend = get_backend("mlx")
    make = lambda shape, seed: mlx_base(backend, shape, tokenizer_dir, seed=seed)  # noqa: E731
    return backend, make(SMALL.target, 0), make(SMALL.source, 1), make(SMALL.source, 2), make


def prt_model(models, kind, seed=3):
    backend, target, source, _, make = models
    if kind == "twin":  # a LoRA twin adapts its source in place: a source of its own
        source = make(SMALL.source, 1)
    reward = backend.create_reward(RewardConfig(kind=kind, **REWARD), source, seed=seed)
    perturb(reward, seed + 1, scale=0.3)
    return PRTForCausalLM(backend, target, [reward], sources=[None if kind == "twin" else source])


def run(model, prompt, n, pipeline, eos=(), **sampling):
    steps = decode(model.scorers(), model.active_composer(), Sampler(**sampling), prompt, xp=model.backend.xp,
                   max_tokens=n, to_backend=model.backend.asarray, eos_ids=eos, tokenizer=model.tokenizer,
                   pipeline=pipeline)
    return [(s.token, s.text, s.finish_reason) for s in steps]


@pytest.mark.parametrize("kind", KINDS)
def test_async_loop_equals_eager_loop(models, kind):
    model = prt_model(models, kind)
    prompt = random_prompt(model.vocab_size, 6, seed=2)
    assert run(model, prompt, 20, True) == run(model, prompt, 20, False)
    sampled = dict(temperature=0.9, top_k=50, seed=4)
    assert run(model, prompt, 20, True, **sampled) == run(model, prompt, 20, False, **sampled)


def test_async_loop_stops_like_eager(models):
    """EOS in the middle: the pipelined loop has computed one step ahead, and yields the same steps."""
    model = prt_model(models, "linear")
    prompt = random_prompt(model.vocab_size, 6, seed=3)
    tokens = [t for t, _, _ in run(model, prompt, 12, False)]
    eos = [tokens[5]]
    assert run(model, prompt, 12, True, eos=eos) == run(model, prompt, 12, False, eos=eos)
    assert run(model, prompt, 12, True, eos=eos)[-1][2] == "stop"


def test_async_is_the_default_on_mlx(models):
    assert get_backend("mlx").xp.pipeline.active(mx.array([1]))
    model = prt_model(models, "twin")
    prompt = random_prompt(model.vocab_size, 4, seed=9)
    assert [s.token for s in model.stream_steps(prompt, max_tokens=8)] == \
        [t for t, _, _ in run(model, prompt, 8, False, eos=model.target.eos_token_ids)]


@pytest.mark.parametrize("kind", KINDS)
def test_batch_equals_one_by_one(models, kind):
    from prt_mlx.generation import batch

    model = prt_model(models, kind)
    prompts = [random_prompt(model.vocab_size, n, seed=n) for n in (3, 9, 6)]
    eos = set(model.target.eos_token_ids)
    expected = [[s.token for s in model.stream_steps(p, max_tokens=10)] for p in prompts]
    expected = [[t for t in e if t not in eos] for e in expected]
    got = batch(model, prompts, max_tokens=10)
    assert [g.tokens for g in got] == expected
    assert all(g.finish_reason in ("stop", "length") for g in got)


def test_batch_eft_and_texts(models):
    from prt_mlx.generation import batch, generate_batch

    backend, target, source, finetuned, _ = models
    eft = ComposedLM(backend, [target, finetuned, source], "eft")
    prompts = [random_prompt(len(target.tokenizer), n, seed=n) for n in (2, 5)]
    got = batch(eft, prompts, max_tokens=6)
    for prompt, g in zip(prompts, got):
        assert g.tokens == [s.token for s in eft.stream_steps(prompt, max_tokens=6)
                            if s.token not in eft.target.eos_token_ids]
    assert generate_batch(eft, prompts, max_tokens=6) == [g.text for g in got]
    assert batch(eft, prompts, max_tokens=0)[0].finish_reason == "length"


def test_fused_loss_equals_prt_loss():
    from prt_mlx.namespace import MLX
    from prt_mlx.loss import fused_prt_loss
    from prtcore.objectives import prt_loss

    key = mx.random.key(0)
    for vocab, alpha in ((40, 0.05), (33, 0.0), (5000, 0.3), (40000, 0.1)):  # 40000: several chunks of tokens
        k1, k2, k3, k4, key = mx.random.split(key, 5)
        base = mx.random.normal((3, 9, vocab), key=k1)
        reward = mx.random.normal((3, 9, vocab), key=k2)
        targets = mx.random.randint(0, vocab, (3, 9), key=k3)
        mask = (mx.random.uniform(shape=(3, 9), key=k4) > 0.3).astype(mx.float32)

        def reference(r):
            return prt_loss(base, r, targets, mask, lam=0.7, entropy_coeff=alpha, xp=MLX)[0]

        def fused(r):
            return fused_prt_loss(base, r, targets, mask, lam=0.7, entropy_coeff=alpha)[0]

        want, want_grad = mx.value_and_grad(reference)(reward)
        got, grad = mx.value_and_grad(fused)(reward)
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-6)
        np.testing.assert_allclose(np.array(grad), np.array(want_grad), atol=2e-6)
        want_metrics = prt_loss(base, reward, targets, mask, lam=0.7, entropy_coeff=alpha, xp=MLX)[1]
        metrics = fused_prt_loss(base, reward, targets, mask, lam=0.7, entropy_coeff=alpha)[1]
        for name, value in want_metrics.items():
            np.testing.assert_allclose(np.array(metrics[name]), np.array(value), rtol=1e-6)
