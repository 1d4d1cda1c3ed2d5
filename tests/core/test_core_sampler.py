"""Sampler: greedy, top-k, top-p, min-p, repetition penalty, normalisation, seeded sampling, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from prtcore import ConfigError, Sampler
from prtcore.arrays import NUMPY
from prtcore.testing import reference


@st.composite
def logprobs(draw, min_v=2, max_v=40, rows=None):
    """(B, V) normalised log-probs without ties (from a seeded Gaussian), of varying sharpness."""
    B = rows or draw(st.integers(1, 3))
    V = draw(st.integers(min_v, max_v))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 3.0, 10.0, 1e3]))
    x = np.random.default_rng(seed).standard_normal((B, V)) * scale
    return reference.log_softmax(x)


def _kept(filtered):
    return np.isfinite(filtered)


def _assert_normalised(filtered):
    assert not np.isnan(filtered).any()
    np.testing.assert_allclose(np.exp(filtered).sum(-1), 1.0, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(logprobs(), st.floats(0.0, 1.5))
def test_greedy_is_argmax(lp, penalty_free_temp):
    s = Sampler(temperature=0.0)
    assert s.greedy
    f = s.filtered(lp)
    _assert_normalised(f)
    np.testing.assert_array_equal(s.sample(f, NUMPY.make_rng(0)), np.argmax(lp, -1))
    # Greedy ignores top-k/top-p/min-p.
    s2 = Sampler(temperature=0.0, top_k=1, top_p=0.1, min_p=0.5)
    np.testing.assert_array_equal(s2.sample(s2.filtered(lp), None), np.argmax(lp, -1))


@settings(max_examples=80, deadline=None)
@given(logprobs(), st.data(), st.sampled_from([0.5, 1.0, 2.0]))
def test_top_k_keeps_exactly_k(lp, data, temp):
    V = lp.shape[-1]
    k = data.draw(st.integers(1, V + 3))
    f = Sampler(temperature=temp, top_k=k).filtered(lp)
    _assert_normalised(f)
    kept = _kept(f)
    assert (kept.sum(-1) == min(k, V)).all()
    # The kept tokens are the k most likely ones.
    top = np.argsort(-lp, -1)[:, :min(k, V)]
    assert np.take_along_axis(kept, top, -1).all()
    # Relative probabilities of the kept tokens follow the temperature.
    expected = reference.log_softmax(np.where(kept, lp / temp, -np.inf))
    np.testing.assert_allclose(f[kept], expected[kept], atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(logprobs(), st.floats(0.01, 1.0), st.sampled_from([0.7, 1.0, 1.5]))
def test_top_p_keeps_smallest_prefix_reaching_p(lp, p, temp):
    f = Sampler(temperature=temp, top_p=p).filtered(lp)
    _assert_normalised(f)
    scaled = np.exp(reference.log_softmax(lp / temp))
    for row, probs in enumerate(scaled):
        desc = np.sort(probs)[::-1]
        cum = np.cumsum(desc)
        assume(np.min(np.abs(cum - p)) > 1e-9)  # no boundary case within rounding
        m = int(np.searchsorted(cum >= p, True)) + 1 if p < 1.0 else len(desc)
        m = min(m, len(desc))
        kept = _kept(f[row])
        assert kept.sum() == m
        order = np.argsort(-probs)
        assert kept[order[:m]].all()
        assert desc[:m].sum() >= p - 1e-12 or m == len(desc)
        if m > 1:
            assert desc[: m - 1].sum() < p


def test_top_p_worked_example():
    lp = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    for p, n in ((0.5, 1), (0.51, 2), (0.8, 2), (0.81, 3), (0.95, 3), (0.96, 4), (1.0, 4)):
        f = Sampler(temperature=1.0, top_p=p).filtered(lp)
        assert _kept(f).sum() == n, p


@settings(max_examples=60, deadline=None)
@given(logprobs(), st.floats(0.0, 1.0), st.sampled_from([0.5, 1.0, 2.0]))
def test_min_p_keeps_tokens_above_fraction_of_top(lp, min_p, temp):
    f = Sampler(temperature=temp, min_p=min_p).filtered(lp)
    _assert_normalised(f)
    probs = np.exp(reference.log_softmax(lp / temp))
    ratio = probs / probs.max(-1, keepdims=True)
    assume(np.min(np.abs(ratio - min_p)) > 1e-9)
    np.testing.assert_array_equal(_kept(f), ratio >= min_p)


def test_min_p_worked_example():
    lp = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    f = Sampler(temperature=1.0, min_p=0.3).filtered(lp)
    np.testing.assert_array_equal(_kept(f)[0], [True, True, True, False])
    np.testing.assert_allclose(np.exp(f[0, :3]), np.array([0.5, 0.3, 0.15]) / 0.95)


@settings(max_examples=60, deadline=None)
@given(logprobs(rows=1), st.data(), st.floats(1.05, 5.0))
def test_repetition_penalty_lowers_seen_tokens(lp, data, penalty):
    V = lp.shape[-1]
    history = data.draw(st.lists(st.integers(0, V - 1), min_size=1, max_size=6))
    seen = np.zeros(V, bool)
    seen[history] = True
    assume(not seen.all())
    for temp in (0.0, 1.0):
        plain = Sampler(temperature=temp).filtered(lp, history)
        pen = Sampler(temperature=temp, repetition_penalty=penalty).filtered(lp, history)
        _assert_normalised(pen)
        # Log-probs (<= 0) of seen tokens are scaled by the penalty, as mlx-lm and transformers do.
        expected = reference.log_softmax(np.where(seen, lp * penalty, lp) / (temp or 1.0))
        np.testing.assert_allclose(pen, expected, atol=1e-9)
        # Every seen token loses probability relative to every unseen one, never gains.
        gap_plain = plain[0, seen][:, None] - plain[0, ~seen][None, :]
        gap_pen = pen[0, seen][:, None] - pen[0, ~seen][None, :]
        assert (gap_pen <= gap_plain + 1e-9).all()
        strict = lp[0, seen] < -1e-6  # a seen token that is not already certain
        assert (gap_pen[strict] < gap_plain[strict]).all()


def test_repetition_penalty_respects_context_window_and_ignores_out_of_range_ids():
    lp = np.log(np.full((1, 5), 0.2))
    s = Sampler(temperature=1.0, repetition_penalty=2.0, repetition_context=2)
    f = s.filtered(lp, [0, 1, 2, 7, -1])  # only the last two (7, -1) count; both are outside the vocabulary
    np.testing.assert_allclose(np.exp(f), 0.2)
    f = s.filtered(lp, [0, 1, 2])
    probs = np.exp(f[0])
    assert probs[0] == pytest.approx(probs[3]) and probs[1] < probs[0] and probs[2] < probs[0]
    assert np.exp(Sampler(temperature=1.0, repetition_penalty=2.0).filtered(lp, [])).sum() == pytest.approx(1)


@settings(max_examples=120, deadline=None)
@given(logprobs(), st.one_of(st.just(0.0), st.floats(1e-3, 5.0)), st.integers(0, 50),
       st.floats(0.0, 1.0, exclude_min=True),
       st.floats(0.0, 1.0), st.floats(0.1, 5.0), st.lists(st.integers(0, 39), max_size=5))
def test_filtered_is_normalised(lp, temp, k, p, min_p, penalty, history):
    s = Sampler(temperature=temp, top_k=k, top_p=p, min_p=min_p, repetition_penalty=penalty)
    f = s.filtered(lp, history)
    _assert_normalised(f)
    assert _kept(f).any(-1).all()
    # The most likely token (after the penalty) always survives the filters.
    ref = Sampler(temperature=1.0, repetition_penalty=penalty).filtered(lp, history)
    top = np.argmax(ref, -1)
    assert np.isfinite(np.take_along_axis(f, top[:, None], -1)).all()


def test_filtered_keeps_excluded_tokens_excluded():
    lp = reference.log_softmax(np.array([[0.0, -np.inf, 1.0, 2.0, -np.inf]]))
    for s in (Sampler(), Sampler(temperature=1.0), Sampler(temperature=2.0, top_k=4, top_p=0.99, min_p=0.0),
              Sampler(temperature=1.0, repetition_penalty=0.5)):
        f = s.filtered(lp, [1, 4, 2])
        assert np.isneginf(f[0, [1, 4]]).all()
        _assert_normalised(f)


def test_seeded_sampling_is_reproducible():
    lp = reference.log_softmax(np.random.default_rng(0).standard_normal((4, 30)))
    s = Sampler(temperature=1.0, top_k=10, seed=123)
    f = s.filtered(lp)

    def draws(seed):
        rng = NUMPY.make_rng(seed)
        return np.stack([s.sample(f, rng) for _ in range(50)])

    np.testing.assert_array_equal(draws(123), draws(123))
    assert not np.array_equal(draws(123), draws(124))


@pytest.mark.parametrize("settings_", [dict(temperature=1.0), dict(temperature=0.7, top_k=5),
                                       dict(temperature=1.3, top_p=0.8), dict(temperature=1.0, min_p=0.1),
                                       dict(temperature=1.0, top_k=8, top_p=0.9, min_p=0.05)])
def test_empirical_frequencies_match_filtered_distribution(settings_):
    V, n = 12, 40_000
    lp = reference.log_softmax(np.random.default_rng(7).standard_normal((1, V)) * 1.5)
    s = Sampler(**settings_, seed=2024)
    f = s.filtered(lp)
    probs = np.exp(f[0])
    # One batched draw of n samples from the same row (fixed seed: deterministic).
    ids = s.sample(np.repeat(f, n, axis=0), NUMPY.make_rng(s.seed))
    counts = np.bincount(ids, minlength=V)
    assert counts[probs == 0].sum() == 0, "a filtered-out token was sampled"
    support = probs > 0
    if support.sum() > 1:
        chi2, pvalue = stats.chisquare(counts[support], probs[support] * n)
        assert pvalue > 1e-4, (chi2, counts, probs * n)
    np.testing.assert_allclose(counts / n, probs, atol=0.015)


@pytest.mark.parametrize("field, value", [
    ("temperature", -0.1), ("temperature", 101.0), ("temperature", float("nan")),
    ("top_k", -1), ("top_p", 0.0), ("top_p", 1.5), ("top_p", -0.5), ("top_p", float("nan")),
    ("min_p", -0.1), ("min_p", 1.1), ("min_p", float("nan")),
    ("repetition_penalty", 0.0), ("repetition_penalty", -1.0), ("repetition_penalty", float("nan")),
    ("repetition_context", 0),
])
def test_invalid_sampler_settings_raise_config_error(field, value):
    with pytest.raises(ConfigError, match=field):
        Sampler(**{field: value})


@pytest.mark.parametrize("field, value", [("temperature", "hot"), ("top_k", "many"), ("top_p", None)])
def test_non_numeric_sampler_settings_raise_config_error(field, value):
    with pytest.raises(ConfigError, match=field):
        Sampler(**{field: value})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [1e-6, 1e-12, 5e-324])
def test_tiny_top_p_keeps_the_most_likely_token(dtype, p):
    """Rounding in the mass above the top token must never filter out every token (nan distribution)."""
    lp = reference.log_softmax(np.random.default_rng(0).standard_normal((2, 32000)) * 0.01).astype(dtype)
    f = Sampler(temperature=1.0, top_p=p).filtered(lp)
    assert not np.isnan(f).any()
    assert (_kept(f).sum(-1) >= 1).all()
    np.testing.assert_array_equal(np.argmax(f, -1), np.argmax(lp, -1))
    np.testing.assert_allclose(np.exp(f.astype(np.float64)).sum(-1), 1.0, atol=1e-5)


@settings(max_examples=80, deadline=None)
@given(logprobs(min_v=4), st.data(), st.floats(0.05, 0.99), st.sampled_from([0.0, 0.05, 0.2]))
def test_top_p_after_top_k_and_min_p_acts_on_the_renormalised_distribution(lp, data, p, min_p):
    """Combined filters: top-k, then min-p, then top-p over what is left (renormalised), at temperature 1."""
    k = data.draw(st.integers(1, lp.shape[-1]))
    f = Sampler(temperature=1.0, top_k=k, min_p=min_p, top_p=p).filtered(lp)
    _assert_normalised(f)
    first = Sampler(temperature=1.0, top_k=k, min_p=min_p).filtered(lp)  # renormalised after top-k and min-p
    for row in range(lp.shape[0]):
        probs = np.exp(first[row])
        desc = np.sort(probs)[::-1]
        cum = np.cumsum(desc)
        assume(np.min(np.abs(cum - p)) > 1e-9)
        m = min(int(np.searchsorted(cum >= p, True)) + 1, int((probs > 0).sum()))
        assert _kept(f[row]).sum() == m
        assert _kept(f[row])[np.argsort(-probs)[:m]].all()


def test_top_k_then_top_p_worked_example():
    # top-k=2 keeps 0.5 and 0.3 (renormalised 0.625, 0.375); top-p=0.6 then keeps only the first.
    lp = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    f = Sampler(temperature=1.0, top_k=2, top_p=0.6).filtered(lp)
    np.testing.assert_array_equal(_kept(f)[0], [True, False, False, False])
    f = Sampler(temperature=1.0, top_k=2, top_p=0.7).filtered(lp)
    np.testing.assert_array_equal(_kept(f)[0], [True, True, False, False])
