"""Static KV caches (and, on a GPU, CUDA graphs) around the whole decoding step give the eager loop's tokens."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from bench_testutil import KINDS, REWARD, SMALL  # noqa: E402
from prtcore import PRTForCausalLM, RewardConfig, get_backend  # noqa: E402
from prt_torch.bench import perturb, torch_base  # noqa: E402
from prtcore.benchmarking.models import random_prompt  # noqa: E402
from prtcore.benchmarking.paths import RewardAlone  # noqa: E402
from prtcore.model import ComposedLM  # noqa: E402


@pytest.fixture(scope="module")
def models(tokenizer_dir):
    backend = get_backend("torch")
    make = lambda shape, seed: torch_base(backend, shape, tokenizer_dir, seed=seed, device="cpu")  # noqa: E731
    return backend, make(SMALL.target, 0), make(SMALL.source, 1), make(SMALL.source, 2)


def prt_model(models, kind, seed=3):
    backend, target, source, _ = models
    reward = backend.create_reward(RewardConfig(kind=kind, **REWARD), source, seed=seed)
    perturb(reward, seed + 1, scale=0.3)
    reward.trainable = False
    return PRTForCausalLM(backend, target, [reward], sources=[None if kind == "twin" else source])


def eager(model, prompt, n, **sampling):
    return [s.token for s in model.stream_steps(prompt, max_tokens=n, **sampling)]


@pytest.mark.parametrize("kind", KINDS)
def test_static_prt_equals_eager_loop(models, kind):
    from prt_torch.graphs import StaticDecoding

    model = prt_model(models, kind)
    prompt = random_prompt(model.vocab_size, 7, seed=5)
    static = StaticDecoding(model)
    assert static.graphs is False and not static.reasons()  # CPU: the same step, eagerly, over static buffers
    assert static.generate_ids(prompt, max_tokens=24) == [t for t in eager(model, prompt, 24)
                                                         if t not in model.target.eos_token_ids]
    # the composed log-probs themselves, prefill and cached steps
    scorer, scorers = static.scorer(len(prompt) + 3), model.scorers()
    ids = torch.tensor([prompt])
    for _ in range(3):
        got = scorer(ids)
        want = model.active_composer()(*[s(ids) for s in scorers], xp=model.backend.xp)
        torch.testing.assert_close(got, want, atol=5e-5, rtol=0)
        ids = got.argmax(-1, keepdim=True)


def test_static_sampling_and_reuse(models):
    """Seeded sampling draws the eager loop's tokens; one StaticDecoding serves several calls and lengths."""
    from prt_torch.graphs import StaticDecoding

    model = prt_model(models, "twin")
    static = StaticDecoding(model, max_len=16)
    prompt = random_prompt(model.vocab_size, 5, seed=6)
    for n in (4, 30):  # the second call outgrows the first allocation
        steps = static.stream_steps(prompt, max_tokens=n, temperature=0.8, top_p=0.9, seed=3)
        assert [s.token for s in steps] == eager(model, prompt, n, temperature=0.8, top_p=0.9, seed=3)
    assert static.max_len >= 35


def test_static_eft_base_and_reward_alone(models):
    from prt_torch.graphs import StaticDecoding

    backend, target, source, finetuned = models
    prompt = random_prompt(len(target.tokenizer), 6, seed=7)
    eft = ComposedLM(backend, [target, finetuned, source], "eft")
    assert StaticDecoding(eft).generate_ids(prompt, max_tokens=12, eos_ids=()) == eager_no_eos(eft, prompt, 12)
    alone = PRTForCausalLM(backend, target)
    assert StaticDecoding(alone).generate_ids(prompt, max_tokens=12, eos_ids=()) == eager_no_eos(alone, prompt, 12)
    for kind in ("linear", "twin"):
        model = prt_model(models, kind, seed=11)
        solo = RewardAlone(backend, model.rewards[0], source, target)
        assert StaticDecoding(solo).generate_ids(prompt, max_tokens=12, eos_ids=()) == eager_no_eos(solo, prompt, 12)


def eager_no_eos(model, prompt, n):
    from prtcore.sampling import Sampler, decode

    steps = decode(model.scorers(), model.active_composer(), Sampler(), prompt, xp=model.backend.xp, max_tokens=n,
                   to_backend=model.backend.asarray, eos_ids=())
    return [s.token for s in steps]


def test_unsupported_architecture_is_reported(models):
    from prt_torch.graphs import StaticDecoding, supported

    _, target, _, _ = models
    assert supported(target.model) is None
    original = target.model.config.model_type
    try:
        target.model.config.model_type = "gpt2"
        assert "gpt2" in supported(target.model)
        with pytest.raises(Exception, match="static decoding"):
            StaticDecoding(PRTForCausalLM(target.backend, target))
    finally:
        target.model.config.model_type = original


def test_pipeline_inactive_on_cpu(models):
    """The CUDA pipeline (ids kept on the device, pinned copy behind an event) is used only on CUDA tensors."""
    assert get_backend("torch").xp.pipeline.active(torch.zeros(1, dtype=torch.long)) is False


def test_fused_loss_equals_prt_loss():
    from prt_torch.loss import fused_prt_loss
    from prtcore.objectives import prt_loss

    xp = get_backend("torch").xp
    gen = torch.Generator().manual_seed(0)
    for vocab, alpha in ((40, 0.05), (33, 0.0), (70000, 0.3)):  # 70000: several chunks of tokens
        base = torch.randn(3, 9, vocab, generator=gen)
        base[0, 0, 5] = float("-inf")  # a token the base excludes
        reward = torch.randn(3, 9, vocab, generator=gen, requires_grad=True)
        targets = torch.randint(0, vocab, (3, 9), generator=gen)
        mask = (torch.rand(3, 9, generator=gen) > 0.3).float()
        want, want_metrics = prt_loss(base, reward, targets, mask, lam=0.7, entropy_coeff=alpha, xp=xp)
        (want_grad,) = torch.autograd.grad(want, reward)
        got, metrics = fused_prt_loss(base, reward, targets, mask, lam=0.7, entropy_coeff=alpha)
        (grad,) = torch.autograd.grad(got, reward)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(grad, want_grad, atol=1e-7, rtol=1e-5)
        for key, value in want_metrics.items():
            torch.testing.assert_close(metrics[key], value)


@pytest.mark.parametrize("lam", [1.0, 0.7])
def test_composed_loss_equals_prt_loss_with_ties_and_a_scaled_gradient(lam):
    """composed_prt_loss given r + λ·b (computing the gradient in that tensor's memory) equals prt_loss given b and
    r: value, metrics (accuracy counts the first of equal maxima, as argmax) and gradient, also scaled from above."""
    from prt_torch.loss import composed_prt_loss
    from prtcore.objectives import prt_loss

    xp = get_backend("torch").xp
    gen = torch.Generator().manual_seed(1)
    for vocab in (40, 70000):  # 70000: several chunks of tokens
        base = torch.randn(2, 9, vocab, generator=gen)
        reward = torch.randn(2, 9, vocab, generator=gen, requires_grad=True)
        targets = torch.randint(1, vocab, (2, 9), generator=gen)
        mask = (torch.rand(2, 9, generator=gen) > 0.2).float()
        base.data[0, :3], reward.data[0, :3] = 0.0, 0.0  # ties everywhere: argmax is token 0
        targets[0, 1] = 0  # the first of the maxima: a hit; the others tie with an earlier token: misses
        with torch.no_grad():
            top = (base + reward / lam).amax(-1)
            winner = targets[1, :4]
            reward[1, torch.arange(4), winner] += lam * (top[1, :4] - base[1, torch.arange(4), winner]
                                                          - reward[1, torch.arange(4), winner] / lam)
        want, want_metrics = prt_loss(base, reward, targets, mask, lam=lam, xp=xp)
        (want_grad,) = torch.autograd.grad(3.0 * want, reward)
        composed = reward + lam * base
        got, metrics = composed_prt_loss(composed, targets, mask, lam=lam)
        (grad,) = torch.autograd.grad(3.0 * got, reward)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(grad, want_grad, atol=1e-6, rtol=1e-5)
        assert float(metrics["accuracy"]) > 0
        for key in ("ntokens", "accuracy", "nll"):
            torch.testing.assert_close(metrics[key], want_metrics[key])


def test_prt_generator_static_option(models):
    from prt_torch.generation import PRTGenerator

    model = prt_model(models, "transformer", seed=21)
    gen = PRTGenerator(model)
    prompt = random_prompt(model.vocab_size, 5, seed=8)
    assert gen.generate_ids(prompt, max_tokens=10, static=True) == gen.generate_ids(prompt, max_tokens=10)
    assert gen.generate(prompt, max_tokens=10, static=True) == gen.generate(prompt, max_tokens=10)
    assert gen.static() is gen.static()
