"""PRT / EFT / proxy-tuning composition: normalisation, invariances, exclusion, limits, vocabulary alignment."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prtcore import ConfigError, EFTComposer, PRTComposer, ProxyTuningComposer
from prtcore.sampling import BaseComposer, align_vocab
from prtcore.testing import reference

from .strategies import logits, neg_inf_mask, row_constants

SHAPES = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(2, 40))
LAMS = st.one_of(st.just(1.0), st.floats(0.1, 10.0))


def _scale(*arrays):
    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
    return 1.0 + (np.abs(finite).max() if finite.size else 0.0)


def _assert_normalised(out, tol=1e-9):
    assert not np.isnan(out).any()
    assert (out <= 1e-12).all() or np.isclose(out.max(), 0.0)
    np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, rtol=0, atol=tol)


@st.composite
def prt_case(draw, n_rewards=None, with_inf=True):
    shape = draw(SHAPES)
    n = draw(st.integers(1, 3)) if n_rewards is None else n_rewards
    base = draw(logits(shape))
    if with_inf and draw(st.booleans()):
        base = np.where(draw(neg_inf_mask(shape)), -np.inf, base)
    rewards = [draw(logits(shape)) for _ in range(n)]
    lams = tuple(draw(LAMS) for _ in range(n))
    return base, rewards, lams


@st.composite
def three_case(draw, with_inf=True):
    shape = draw(SHAPES)
    xs = [draw(logits(shape)) for _ in range(3)]
    if with_inf and draw(st.booleans()):
        xs[0] = np.where(draw(neg_inf_mask(shape)), -np.inf, xs[0])
    return xs


# ------------------------------------------------------------------------------------------ normalisation
@settings(max_examples=80, deadline=None)
@given(prt_case())
def test_prt_composition_sums_to_one(case):
    base, rewards, lams = case
    composer = PRTComposer(lam=lams if len(lams) > 1 else lams[0])
    assert composer.n_models == 1 + len(rewards)
    _assert_normalised(composer(base, *rewards))


@settings(max_examples=40, deadline=None)
@given(prt_case())
def test_prt_composition_matches_reference(case):
    base, rewards, lams = case
    out = PRTComposer(lam=lams)(base, *rewards)
    expected = reference.log_softmax(reference.log_softmax(base) + sum(r / l for r, l in zip(rewards, lams)))
    scale = _scale(base, *rewards) * (1 + sum(1 / l for l in lams))
    finite = np.isfinite(expected)
    assert (np.isfinite(out) == finite).all()
    np.testing.assert_allclose(out[finite], expected[finite], rtol=1e-9, atol=1e-11 * scale)


@settings(max_examples=60, deadline=None)
@given(three_case(), st.sampled_from(["eft", "proxy"]), st.floats(0.1, 3.0))
def test_three_model_composition_sums_to_one(xs, kind, alpha):
    composer = EFTComposer() if kind == "eft" else ProxyTuningComposer(alpha=alpha)
    _assert_normalised(composer(*xs))


def test_float32_composition_sums_to_one():
    rng = np.random.default_rng(0)
    xs = [(rng.standard_normal((2, 3, 33)) * 1e3).astype(np.float32) for _ in range(3)]
    for composer in (PRTComposer(), PRTComposer(lam=(1.0, 2.0)), EFTComposer(), ProxyTuningComposer()):
        out = composer(*xs[: composer.n_models])
        assert out.dtype == np.float32
        np.testing.assert_allclose(np.exp(out.astype(np.float64)).sum(-1), 1.0, atol=1e-5)


# ------------------------------------------------------------------------------------------ per-row constants
@settings(max_examples=60, deadline=None)
@given(prt_case(), st.data())
def test_prt_invariant_to_per_row_constants(case, data):
    base, rewards, lams = case
    composer = PRTComposer(lam=lams)
    out = composer(base, *rewards)
    shifted = composer(base + row_constants(data.draw, base.shape),
                       *[r + row_constants(data.draw, r.shape) for r in rewards])
    finite = np.isfinite(out)
    assert (np.isfinite(shifted) == finite).all()
    scale = 3e4 * (1 + sum(1 / l for l in lams))
    np.testing.assert_allclose(shifted[finite], out[finite], rtol=0, atol=1e-10 * scale * 4)


@settings(max_examples=60, deadline=None)
@given(three_case(), st.data(), st.integers(0, 2))
def test_eft_invariant_to_per_row_constant_on_any_input(xs, data, which):
    out = EFTComposer()(*xs)
    ys = list(xs)
    ys[which] = ys[which] + row_constants(data.draw, ys[which].shape)
    shifted = EFTComposer()(*ys)
    finite = np.isfinite(out)
    assert (np.isfinite(shifted) == finite).all()
    np.testing.assert_allclose(shifted[finite], out[finite], rtol=0, atol=1e-10 * 1e5)


@settings(max_examples=60, deadline=None)
@given(three_case(), st.data(), st.sampled_from(["base", "both", "expert", "anti"]), st.floats(0.1, 3.0))
def test_proxy_tuning_per_row_constants(xs, data, where, alpha):
    """Raw-logit proxy-tuning: a per-row constant on the base, or the same one on expert and anti-expert,
    cancels; so does one on a single expert (it shifts the whole row by α·c, which softmax ignores)."""
    composer = ProxyTuningComposer(alpha=alpha)
    out = composer(*xs)
    base, expert, anti = xs
    c = row_constants(data.draw, base.shape)
    if where == "base":
        base = base + c
    elif where == "both":
        expert, anti = expert + c, anti + c
    elif where == "expert":
        expert = expert + c
    else:
        anti = anti + c
    shifted = composer(base, expert, anti)
    finite = np.isfinite(out)
    assert (np.isfinite(shifted) == finite).all()
    np.testing.assert_allclose(shifted[finite], out[finite], rtol=0, atol=1e-10 * 1e5 * (1 + 2 * alpha))


def test_proxy_tuning_per_token_offset_does_not_cancel():
    """Sanity check of the test above: a constant *per token* (not per row) on the expert changes the result."""
    rng = np.random.default_rng(3)
    base, expert, anti = (rng.standard_normal((1, 7)) for _ in range(3))
    offset = np.arange(7.0)[None]
    a = ProxyTuningComposer()(base, expert, anti)
    b = ProxyTuningComposer()(base, expert + offset, anti)
    assert not np.allclose(a, b)


def test_proxy_tuning_alpha_one_equals_eft():
    """With α = 1 raw-logit proxy-tuning equals EFT's log-prob form (method reference §4.2)."""
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((2, 3, 19)) * 5 for _ in range(3)]
    np.testing.assert_allclose(ProxyTuningComposer(alpha=1.0)(*xs), EFTComposer()(*xs), atol=1e-12)


# ------------------------------------------------------------------------------------------ exclusion and limits
@settings(max_examples=60, deadline=None)
@given(prt_case(with_inf=False), st.data())
def test_prt_keeps_base_exclusions(case, data):
    base, rewards, lams = case
    excluded = data.draw(neg_inf_mask(base.shape))
    base = np.where(excluded, -np.inf, base)
    out = PRTComposer(lam=lams)(base, *rewards)
    probs = np.exp(out)
    assert (probs[excluded] == 0.0).all()
    assert np.isfinite(out[~excluded]).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-9)


def test_prt_exclusion_survives_huge_reward():
    base = np.array([[0.0, -np.inf, 0.0, -np.inf]])
    reward = np.array([[0.0, 1e4, -1e4, 1e30]])
    probs = np.exp(PRTComposer()(base, reward))
    assert probs[0, 1] == 0.0 and probs[0, 3] == 0.0
    np.testing.assert_allclose(probs[0], [1.0, 0.0, 0.0, 0.0], atol=1e-300)


@settings(max_examples=50, deadline=None)
@given(prt_case())
def test_prt_infinite_lambda_gives_base(case):
    base, rewards, _ = case
    out = PRTComposer(lam=tuple(1e12 for _ in rewards))(base, *rewards)
    expected = np.exp(reference.log_softmax(base))
    np.testing.assert_allclose(np.exp(out), expected, rtol=0, atol=1e-6)
    assert (np.exp(out)[expected == 0] == 0).all()


@settings(max_examples=50, deadline=None)
@given(three_case(with_inf=False), st.booleans())
def test_eft_same_source_and_finetuned_is_target(xs, target_inf):
    target, tuned, _ = xs
    if target_inf:
        target = target.copy()
        target[..., 0] = -np.inf
    out = EFTComposer()(target, tuned, tuned)
    expected = reference.log_softmax(target)
    finite = np.isfinite(expected)
    assert (np.isfinite(out) == finite).all()
    np.testing.assert_allclose(out[finite], expected[finite], rtol=0, atol=1e-9 * _scale(target))


def test_eft_token_excluded_by_source_stays_excluded():
    target = np.zeros((1, 4))
    tuned = np.zeros((1, 4))
    source = np.array([[0.0, -np.inf, 0.0, 0.0]])
    probs = np.exp(EFTComposer()(target, tuned, source))
    assert probs[0, 1] == 0.0
    np.testing.assert_allclose(probs.sum(), 1.0)


def test_composer_rejects_wrong_number_of_inputs():
    x = np.zeros((1, 3))
    with pytest.raises(ConfigError, match="2 models, got 1"):
        PRTComposer()(x)
    with pytest.raises(ConfigError, match="3 models"):
        EFTComposer()(x, x)
    with pytest.raises(ConfigError, match="4 models"):
        PRTComposer(lam=[1.0, 2.0, 3.0])(x, x)


@pytest.mark.parametrize("lam", [0, -1.0, (1.0, 0.0), (), float("nan")])
def test_prt_composer_rejects_bad_lambda(lam):
    with pytest.raises(ConfigError, match="lam"):
        PRTComposer(lam=lam)


def test_base_composer_is_log_softmax():
    x = np.random.default_rng(5).standard_normal((2, 9))
    np.testing.assert_allclose(BaseComposer()(x), reference.log_softmax(x), atol=1e-12)


# ------------------------------------------------------------------------------------------ vocabulary alignment
@settings(max_examples=80, deadline=None)
@given(st.integers(1, 3), st.integers(1, 40), st.integers(1, 40), st.sampled_from([-np.inf, 0.0, -7.5]))
def test_align_vocab_slices_and_pads(rows, width, size, fill):
    x = np.arange(rows * width, dtype=np.float64).reshape(rows, width) + 1.0
    out = align_vocab(x, size, fill=fill)
    assert out.shape == (rows, size)
    n = min(width, size)
    np.testing.assert_array_equal(out[:, :n], x[:, :n])
    assert (out[:, n:] == fill).all()
    assert (x == np.arange(rows * width).reshape(rows, width) + 1.0).all()  # input untouched


def test_align_vocab_default_fill_and_3d():
    x = np.ones((2, 3, 4), np.float32)
    out = align_vocab(x, 6)
    assert out.shape == (2, 3, 6) and out.dtype == np.float32
    assert np.isneginf(out[..., 4:]).all() and (out[..., :4] == 1).all()
    assert align_vocab(x, 4) is x


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 30), st.integers(2, 30), st.integers(2, 30), st.data())
def test_prt_composer_vocab_size_pads_base_with_neg_inf_and_rewards_with_zero(size, wb, wr, data):
    base = data.draw(logits((2, wb), max_abs=30.0))
    reward = data.draw(logits((2, wr), max_abs=30.0))
    out = PRTComposer(vocab_size=size)(base, reward)
    assert out.shape == (2, size)
    expected = reference.log_softmax(
        reference.log_softmax(align_vocab(base, size, fill=-np.inf)) + align_vocab(reward, size, fill=0.0))
    np.testing.assert_allclose(out, expected, atol=1e-9)
    probs = np.exp(out)
    assert (probs[:, wb:] == 0).all()  # padded base entries are excluded whatever the reward says
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-9)
    if wr < size and wb > wr:
        # Padded reward entries are 0: those tokens keep the base's relative probability.
        lb = reference.log_softmax(base[:, :size])
        np.testing.assert_allclose(out[:, wr:min(wb, size)] - out[:, [wr]], lb[:, wr:min(wb, size)] - lb[:, [wr]],
                                   atol=1e-9)


def test_prt_composer_fill_values():
    c = PRTComposer(lam=(1.0, 2.0), vocab_size=5)
    assert c.fill(0) == -np.inf and c.fill(1) == 0.0 and c.fill(2) == 0.0
    assert EFTComposer().fill(1) == -np.inf and ProxyTuningComposer().fill(2) == -np.inf


# NumPy evaluates both branches of `where`: −inf − (−inf) warns before the masked value is discarded.
@pytest.mark.filterwarnings("ignore:invalid value encountered in subtract:RuntimeWarning")
@pytest.mark.parametrize("composer", [EFTComposer(vocab_size=6), ProxyTuningComposer(vocab_size=6)])
def test_three_model_composers_align_vocab(composer):
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal((1, w)) for w in (8, 4, 5)]
    out = composer(*xs)
    assert out.shape == (1, 6)
    probs = np.exp(out)
    # Tokens padded in any input are excluded.
    assert (probs[0, 4:] == 0).all()
    np.testing.assert_allclose(probs.sum(), 1.0)


@settings(max_examples=60, deadline=None)
@given(three_case(with_inf=False), st.data(), st.sampled_from([0.0, -0.5, 0.5, 1.0, 2.0]))
def test_proxy_tuning_exclusions_by_expert_or_anti_expert_for_any_alpha(xs, data, alpha):
    """A token excluded (−inf) by the expert or the anti-expert stays excluded; never nan, even for α = 0."""
    base, expert, anti = xs
    ex = data.draw(neg_inf_mask(base.shape))
    an = data.draw(neg_inf_mask(base.shape))
    allowed = ~(ex | an)
    if not allowed.any(-1).all():
        return
    expert = np.where(ex, -np.inf, expert)
    anti = np.where(an, -np.inf, anti)
    with np.errstate(invalid="ignore"):
        out = ProxyTuningComposer(alpha=alpha)(base, expert, anti)
    assert not np.isnan(out).any()
    assert (np.exp(out)[~allowed] == 0).all()
    np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, atol=1e-9)
    if alpha == 0.0:
        expected = reference.log_softmax(np.where(allowed, base, -np.inf))
        np.testing.assert_allclose(out[allowed], expected[allowed], atol=1e-9 * _scale(base))
