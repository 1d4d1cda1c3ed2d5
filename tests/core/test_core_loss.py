"""prt_loss against the direct float64 reference, invariances and numerical stability."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from prtcore import ConfigError, prt_loss
from prtcore.testing import reference

from .strategies import logits, neg_inf_mask, row_constants, shape_btv

LAMS = st.one_of(st.sampled_from([1.0, 0.5, 2.0]), st.floats(0.05, 50.0))
COEFFS = st.one_of(st.just(0.0), st.floats(0.0, 2.0))


@st.composite
def loss_case(draw, max_abs=1e4, with_inf=True):
    shape = draw(shape_btv())
    B, T, V = shape
    base = draw(logits(shape, max_abs=max_abs))
    reward = draw(logits(shape, max_abs=max_abs))
    targets = draw(hnp.arrays(np.int64, (B, T), elements=st.integers(0, V - 1)))
    mask = draw(st.one_of(st.none(), hnp.arrays(np.bool_, (B, T), elements=st.booleans()),
                          hnp.arrays(np.int32, (B, T), elements=st.integers(0, 1))))
    if with_inf and draw(st.booleans()):
        keep = np.zeros(shape, bool)
        np.put_along_axis(keep, targets[..., None], True, axis=-1)
        base = np.where(draw(neg_inf_mask(shape, keep)), -np.inf, base)
        if draw(st.booleans()):
            reward = np.where(draw(neg_inf_mask(shape, keep)), -np.inf, reward)
    return base, reward, targets, mask, draw(LAMS), draw(COEFFS)


def _ambiguous_rows(base, reward, mask, lam, tol):
    """Rows whose PRT argmax is a near tie: accuracy may legitimately differ there by rounding."""
    V = base.shape[-1]
    count = 0
    m = np.ones(base.shape[:-1], bool) if mask is None else np.asarray(mask, bool)
    for b, r, keep in zip(base.reshape(-1, V), reward.reshape(-1, V), m.reshape(-1)):
        if not keep:
            continue
        logp = reference.log_softmax(reference.log_softmax(b) + r / lam)
        top = np.sort(logp)[-2:]
        if np.isfinite(top[0]) and top[1] - top[0] <= tol:
            count += 1
    return count


def _check_against_reference(base, reward, targets, mask, lam, coeff, rtol, atol):
    loss, metrics = prt_loss(base, reward, targets, mask, lam=lam, entropy_coeff=coeff)
    ref_loss, ref = reference.prt_loss(base, reward, targets, mask, lam=lam, entropy_coeff=coeff)
    assert np.isfinite(loss)
    for key in ("ntokens", "nll", "entropy", "accuracy"):
        assert key in metrics
        assert np.isfinite(metrics[key]), key
    np.testing.assert_allclose(float(loss), ref_loss, rtol=rtol, atol=atol)
    np.testing.assert_allclose(float(metrics["nll"]), ref["nll"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(float(metrics["entropy"]), ref["entropy"], rtol=rtol, atol=atol)
    assert float(metrics["ntokens"]) == ref["ntokens"]
    denom = ref["ntokens"] or 1.0
    slack = _ambiguous_rows(base, reward, mask, lam, tol=atol) / denom
    assert abs(float(metrics["accuracy"]) - ref["accuracy"]) <= slack + 1e-6
    return loss, metrics


@settings(max_examples=150, deadline=None)
@given(loss_case())
def test_prt_loss_matches_reference_float64(case):
    base, reward, targets, mask, lam, coeff = case
    finite = np.concatenate([base[np.isfinite(base)], reward[np.isfinite(reward)]])
    scale = 1.0 + np.abs(finite).max() * (1.0 + 1.0 / lam)
    _check_against_reference(base, reward, targets, mask, lam, coeff, rtol=1e-9, atol=1e-11 * scale)


@settings(max_examples=60, deadline=None)
@given(loss_case())
def test_prt_loss_float32_is_finite_and_close(case):
    base, reward, targets, mask, lam, coeff = case
    b32, r32 = base.astype(np.float32), reward.astype(np.float32)
    finite = np.concatenate([b32[np.isfinite(b32)], r32[np.isfinite(r32)]])
    scale = 1.0 + float(np.abs(finite).max()) * (1.0 + 1.0 / lam)
    loss, _ = prt_loss(b32, r32, targets, mask, lam=lam, entropy_coeff=coeff)
    assert np.isfinite(loss)
    # Compare with the reference evaluated on the same float32-rounded inputs.
    ref_loss, _ = reference.prt_loss(b32, r32, targets, mask, lam=lam, entropy_coeff=coeff)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-4, atol=1e-5 * scale * (1 + coeff))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("magnitude", [1e2, 1e3, 1e4])
def test_prt_loss_stable_for_huge_logits(dtype, magnitude):
    rng = np.random.default_rng(0)
    shape = (2, 3, 17)
    base = (rng.choice([-1.0, 1.0], shape) * magnitude).astype(dtype)
    reward = (rng.standard_normal(shape) * magnitude).astype(dtype)
    targets = rng.integers(0, 17, (2, 3))
    for lam in (1.0, 0.1, 10.0):
        loss, metrics = prt_loss(base, reward, targets, lam=lam, entropy_coeff=0.5)
        assert np.isfinite(loss) and all(np.isfinite(v) for v in metrics.values())
        ref_loss, _ = reference.prt_loss(base, reward, targets, lam=lam, entropy_coeff=0.5)
        tol = 1e-6 if dtype == np.float64 else 1e-3
        np.testing.assert_allclose(float(loss), ref_loss, rtol=tol, atol=tol * magnitude / lam)


@settings(max_examples=80, deadline=None)
@given(loss_case(), st.data())
def test_prt_loss_invariant_to_per_row_constants(case, data):
    base, reward, targets, mask, lam, coeff = case
    cb = row_constants(data.draw, base.shape)
    cr = row_constants(data.draw, base.shape)
    loss, metrics = prt_loss(base, reward, targets, mask, lam=lam, entropy_coeff=coeff)
    shifted, shifted_metrics = prt_loss(base + cb, reward + cr, targets, mask, lam=lam, entropy_coeff=coeff)
    finite = np.concatenate([base[np.isfinite(base)], reward[np.isfinite(reward)], cb.ravel(), cr.ravel()])
    atol = 1e-10 * (1.0 + np.abs(finite).max()) * (1.0 + 1.0 / lam) * (1 + coeff)
    np.testing.assert_allclose(float(shifted), float(loss), rtol=1e-9, atol=atol)
    np.testing.assert_allclose(float(shifted_metrics["entropy"]), float(metrics["entropy"]), rtol=1e-9, atol=atol)


def test_prt_loss_zero_reward_is_base_cross_entropy():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((2, 5, 11))
    targets = rng.integers(0, 11, (2, 5))
    loss, metrics = prt_loss(base, np.zeros_like(base), targets)
    logp = reference.log_softmax(base)
    expected = -np.take_along_axis(logp, targets[..., None], -1).mean()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-12)
    # Uniform reward: the maximal entropy log V.
    np.testing.assert_allclose(float(metrics["entropy"]), np.log(11), rtol=1e-12)
    _, with_em = prt_loss(base, np.zeros_like(base), targets, entropy_coeff=0.5)
    np.testing.assert_allclose(float(with_em["nll"]), expected, rtol=1e-12)


def test_prt_loss_mask_selects_tokens_and_empty_mask_is_zero():
    rng = np.random.default_rng(2)
    base, reward = rng.standard_normal((2, 4, 9)), rng.standard_normal((2, 4, 9))
    targets = rng.integers(0, 9, (2, 4))
    mask = np.zeros((2, 4), bool)
    mask[0, 1] = mask[1, 3] = True
    loss, metrics = prt_loss(base, reward, targets, mask)
    sub, _ = prt_loss(base[mask][None], reward[mask][None], targets[mask][None])
    np.testing.assert_allclose(float(loss), float(sub), rtol=1e-12)
    assert float(metrics["ntokens"]) == 2
    # A −inf target at a masked-out position must not poison the loss.
    base_inf = base.copy()
    base_inf[0, 0, targets[0, 0]] = -np.inf
    loss_inf, _ = prt_loss(base_inf, reward, targets, mask)
    np.testing.assert_allclose(float(loss_inf), float(loss), rtol=1e-12)
    empty, empty_metrics = prt_loss(base, reward, targets, np.zeros((2, 4)), entropy_coeff=0.1)
    assert float(empty) == 0.0 and float(empty_metrics["ntokens"]) == 0.0


@pytest.mark.parametrize("kwargs, field", [({"lam": 0.0}, "lam"), ({"lam": -1.0}, "lam"), ({"lam": float("nan")}, "lam"),
                                           ({"entropy_coeff": -0.1}, "entropy_coeff"),
                                           ({"entropy_coeff": float("nan")}, "entropy_coeff")])
def test_prt_loss_rejects_bad_settings(kwargs, field):
    x = np.zeros((1, 2, 3))
    with pytest.raises(ConfigError, match=field):
        prt_loss(x, x, np.zeros((1, 2), int), **kwargs)


def test_prt_loss_rejects_shape_mismatch():
    with pytest.raises(ConfigError, match="align_vocab"):
        prt_loss(np.zeros((1, 2, 3)), np.zeros((1, 2, 4)), np.zeros((1, 2), int))
