"""The contract of a backend's own PRT loss (prtcore.objectives.PRTLoss, check_loss) and the closed-form gradient
it is checked against."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from prtcore.errors import ConfigError
from prtcore.objectives import check_loss, check_prt_loss_args, loss_inputs, prt_loss, prt_loss_gradient

SMALL = (((2, 3, 7), 0.6, 0.3, "some", True),)


def test_the_reference_meets_the_contract():
    worst = check_loss(functools.partial(prt_loss, xp=np), np)
    assert set(worst) == {"loss", "metrics"} and max(worst.values()) <= 1e-5


@pytest.mark.parametrize("lam,alpha,mask_kind", [(1.0, 0.0, "none"), (0.6, 0.3, "some"), (2.0, 0.1, "all-out")])
def test_closed_form_gradient_equals_finite_differences(lam, alpha, mask_kind):
    base, reward, targets, mask = loss_inputs((2, 3, 7), mask_kind, neg_inf=True, seed=5)
    base, reward = base.astype(np.float64), reward.astype(np.float64)
    want = prt_loss_gradient(base, reward, targets, mask, lam=lam, entropy_coeff=alpha)
    got = np.zeros_like(reward)
    eps = 1e-6
    for index in np.ndindex(reward.shape):
        up, down = reward.copy(), reward.copy()
        up[index] += eps
        down[index] -= eps
        got[index] = (prt_loss(base, up, targets, mask, lam=lam, entropy_coeff=alpha)[0]
                      - prt_loss(base, down, targets, mask, lam=lam, entropy_coeff=alpha)[0]) / (2 * eps)
    np.testing.assert_allclose(got, want, atol=1e-8)


def test_a_loss_that_differs_fails():
    def ignores_entropy(base, reward, targets, mask=None, *, lam=1.0, entropy_coeff=0.0):
        return prt_loss(base, reward, targets, mask, lam=lam, xp=np)

    with pytest.raises(AssertionError, match=r"case 0 .*: loss"):
        check_loss(ignores_entropy, np, cases=SMALL)


def test_a_gradient_that_differs_fails():
    shape, lam, alpha, mask_kind, neg_inf = SMALL[0]

    def grad(fn, x):  # the reference's gradient on check_loss's inputs (seed 0), off by 1% on one entry
        base, reward, targets, mask = loss_inputs(shape, mask_kind, neg_inf, seed=0)
        g = prt_loss_gradient(base, reward, targets, mask, lam=lam, entropy_coeff=alpha)
        g[0, 0, 0] *= 1.01
        return g

    with pytest.raises(AssertionError, match="gradient"):
        check_loss(functools.partial(prt_loss, xp=np), np, grad=grad, cases=SMALL)


def test_a_loss_that_accepts_bad_arguments_fails():
    def lenient(base, reward, targets, mask=None, *, lam=1.0, entropy_coeff=0.0):
        return prt_loss(base, reward, targets, mask, lam=max(lam, 1e-3), entropy_coeff=max(entropy_coeff, 0.0), xp=np)

    with pytest.raises(AssertionError, match="refuses"):
        check_loss(lenient, np, cases=SMALL)
    with pytest.raises(ConfigError):
        check_prt_loss_args(np.zeros((1, 3)), np.zeros((1, 3)), 0.0, 0.0)
