"""Cached decoding equals recomputing the whole sequence, for every reward kind; the mlx-lm logits processor."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_testutil import perturb, reward_config
from prtcore import PRTForCausalLM

PROMPT = [3, 17, 42, 8, 99]
KINDS = ["linear", "transformer", "lora", "lora_zero_head", "full"]


def cached_steps(model, prompt, n):
    """(token, composed log-probs) per greedy step, through the scorers' KV caches."""
    xp = model.backend.xp
    scorers, composer = model.scorers(), model.active_composer()
    logits = [s(mx.array([prompt])) for s in scorers]
    out = []
    for _ in range(n):
        logprobs = composer(*logits, xp=xp)
        token = int(mx.argmax(logprobs, axis=-1).item())
        out.append((token, np.array(logprobs)[0]))
        logits = [s(mx.array([[token]])) for s in scorers]
    return out


def build(backend, ckpts, kind, target_name):
    source = backend.load_base(ckpts["source"])
    target = source if target_name == "source" else backend.load_base(ckpts["target"])
    reward = perturb(backend.create_reward(reward_config(kind), source, seed=1), seed=2)
    hidden_source = source if reward.reads_source_hidden else None
    return PRTForCausalLM(backend, target, [reward], lams=[0.8], sources=[hidden_source]), source, reward


@pytest.mark.parametrize("target_name", ["source", "target"])
@pytest.mark.parametrize("kind", KINDS)
def test_cached_decoding_equals_full_recompute(backend, ckpts, kind, target_name):
    model, _, _ = build(backend, ckpts, kind, target_name)
    steps = cached_steps(model, PROMPT, 6)
    sequence = list(PROMPT)
    for token, logprobs in steps:
        full = np.array(model([sequence]).logprobs)[0, -1]
        np.testing.assert_allclose(logprobs, full, atol=1e-5)
        assert token == int(np.argmax(full))
        sequence.append(token)
    generated = [s.token for s in model.stream_steps(PROMPT, max_tokens=6)]
    eos = set(model.target.eos_token_ids)
    expected = [t for t, _ in steps]
    cut = next((i + 1 for i, t in enumerate(expected) if t in eos), len(expected))
    assert generated == expected[:cut]


def test_reward_changes_the_distribution(backend, ckpts):
    model, _, _ = build(backend, ckpts, "linear", "target")
    out = model([PROMPT])
    assert np.abs(np.array(out.reward)).max() > 1e-3
    assert not np.allclose(np.array(out.logprobs), np.array(out.base_logprobs), atol=1e-4)


def test_seeded_sampling_reproducible(backend, ckpts):
    model, _, _ = build(backend, ckpts, "transformer", "target")
    a = model.generate(PROMPT, max_tokens=8, temperature=1.0, seed=11)
    assert a == model.generate(PROMPT, max_tokens=8, temperature=1.0, seed=11)
    draws = {model.generate(PROMPT, max_tokens=8, temperature=1.5, seed=s) for s in range(4)}
    assert len(draws) > 1


@pytest.mark.parametrize("kind", ["linear", "transformer", "lora"])
def test_logits_processor_in_mlx_lm_generate(backend, ckpts, kind):
    from mlx_lm.generate import generate_step

    from prt_mlx import PRTLogitsProcessor

    model, source, reward = build(backend, ckpts, kind, "target")
    expected = cached_steps(model, PROMPT, 5)
    proc = PRTLogitsProcessor(reward, source=source, lam=0.8)
    got = list(generate_step(mx.array(PROMPT), model.target.model, max_tokens=5, logits_processors=[proc]))
    assert [int(t) for t, _ in got] == [t for t, _ in expected]
    n = model.vocab_size
    for (_, lp), (_, want) in zip(got, expected):
        lp = np.array(lp)
        np.testing.assert_allclose(lp[:n], want, atol=1e-5)
        assert np.all(np.isneginf(lp[n:]))  # the target's padding rows
    assert proc.seen == len(PROMPT) + 5  # called max_tokens + 1 times, fed each token once


def test_logits_processor_needs_source_for_hidden_state_rewards(backend, ckpts):
    from prt_mlx import PRTLogitsProcessor
    from prtcore.errors import ConfigError

    source = backend.load_base(ckpts["source"])
    reward = backend.create_reward(reward_config("linear"), source)
    with pytest.raises(ConfigError, match="source"):
        PRTLogitsProcessor(reward)
