"""Rewards, loss, gradients and composition of the mlx backend against prtcore.testing.reference (NumPy)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from prtcore import PRTForCausalLM, RewardConfig, prt_loss
from prtcore.testing import reference

from mlx_testutil import IDS

CONFIGS = {
    "linear": RewardConfig(kind="linear"),
    "transformer": RewardConfig(kind="transformer", d_model=32, num_layers=2, num_heads=4, ffn_dim=48),
    "transformer-6-heads": RewardConfig(kind="transformer", d_model=36, num_layers=1, num_heads=6, ffn_dim=40, norm_eps=1e-3),
}


def make_reward(backend, base, name, seed=3):
    from prt_mlx.rewards import HeadReward

    config = CONFIGS[name]
    tensors = reference.random_reward_tensors(config, base.hidden_size, base.vocab_size, seed=seed)
    return HeadReward(backend, config, base.hidden_size, base.vocab_size, tensors), tensors


def batch(vocab, seed=0, shape=(2, 9)):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, shape).astype(np.int32)
    mask = (rng.random(shape) > 0.3).astype(np.float32)
    return ids, mask


@pytest.mark.parametrize("name", list(CONFIGS))
def test_reward_logits_match_reference(backend, source, name):
    reward, tensors = make_reward(backend, source, name)
    hidden = source.forward(mx.array(IDS), hidden=True).hidden
    got = np.array(reward.forward(mx.array(IDS), source_hidden=hidden))
    want = reference.reward_logits(tensors, np.array(hidden), CONFIGS[name])
    np.testing.assert_allclose(got, want, atol=1e-5 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("name", ["linear", "transformer"])
@pytest.mark.parametrize("lam,alpha", [(1.0, 0.0), (0.5, 0.1)])
def test_loss_and_composed_logprobs_match_reference(backend, source, name, lam, alpha):
    reward, tensors = make_reward(backend, source, name)
    ids, mask = batch(source.vocab_size)
    out = source.forward(mx.array(ids[:, :-1]), hidden=True)
    r = reward.forward(None, source_hidden=out.hidden)
    loss, metrics = prt_loss(out.logits, r, mx.array(ids[:, 1:]), mx.array(mask[:, 1:]), lam=lam, entropy_coeff=alpha,
                             xp=backend.xp)
    base_np, hidden_np = np.array(out.logits), np.array(out.hidden)
    r_np = reference.reward_logits(tensors, hidden_np, CONFIGS[name])
    want, want_metrics = reference.prt_loss(base_np, r_np, ids[:, 1:], mask[:, 1:], lam=lam, entropy_coeff=alpha)
    assert abs(loss.item() - want) <= 1e-5 * max(1.0, abs(want))
    for key in ("nll", "entropy", "accuracy", "ntokens"):
        assert abs(metrics[key].item() - want_metrics[key]) <= 1e-5 * max(1.0, abs(want_metrics[key]))
    # composed log-probs through the facade (target == source: one forward serves both)
    model = PRTForCausalLM(backend, source, [reward], lams=[lam])
    got = np.array(model(ids).logprobs)
    n = model.vocab_size
    full = source.forward(mx.array(ids), hidden=True)
    r_full = reference.reward_logits(tensors, np.array(full.hidden), CONFIGS[name])
    want_lp = reference.log_softmax(reference.log_softmax(np.array(full.logits)[..., :n]) + r_full[..., :n] / lam)
    np.testing.assert_allclose(got, want_lp, atol=1e-5)


def loss_of(reward, out, ids, mask, backend, lam, alpha):
    def fn():
        r = reward.forward(None, source_hidden=out.hidden)
        return prt_loss(out.logits, r, mx.array(ids[:, 1:]), mx.array(mask[:, 1:]), lam=lam, entropy_coeff=alpha,
                        xp=backend.xp)[0]

    return fn


def test_linear_gradient_matches_closed_form(backend, source):
    """dL/dW = Σ_masked [(softmax(v) − onehot(y))/λ + α ρ (log ρ + H)] ⊗ h / N, computed in NumPy float64."""
    lam, alpha = 0.7, 0.2
    reward, tensors = make_reward(backend, source, "linear")
    ids, mask = batch(source.vocab_size, seed=1)
    out = source.forward(mx.array(ids[:, :-1]), hidden=True)
    _, grads = nn.value_and_grad(reward.module, lambda: loss_of(reward, out, ids, mask, backend, lam, alpha)())()
    got = np.array(grads["head"]["weight"])

    h = np.array(out.hidden, dtype=np.float64).reshape(-1, source.hidden_size)
    base = np.array(out.logits, dtype=np.float64).reshape(len(h), -1)
    r = h @ tensors["head.weight"].astype(np.float64).T
    y, m = ids[:, 1:].reshape(-1), mask[:, 1:].reshape(-1)
    p = np.exp(reference.log_softmax(reference.log_softmax(base) + r / lam))
    onehot = np.eye(base.shape[1])[y]
    log_rho = reference.log_softmax(r)
    rho = np.exp(log_rho)
    entropy = -(rho * log_rho).sum(-1, keepdims=True)
    dr = (p - onehot) / lam + alpha * rho * (log_rho + entropy)
    want = (dr * m[:, None]).T @ h / m.sum()
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-4)


def test_transformer_gradient_matches_finite_differences(backend, source):
    """Central differences of the float64 NumPy reference loss at random coordinates of every tensor."""
    lam, alpha = 1.0, 0.1
    config = CONFIGS["transformer"]
    reward, tensors = make_reward(backend, source, "transformer")
    ids, mask = batch(source.vocab_size, seed=2, shape=(2, 6))
    out = source.forward(mx.array(ids[:, :-1]), hidden=True)
    _, grads = nn.value_and_grad(reward.module, lambda: loss_of(reward, out, ids, mask, backend, lam, alpha)())()
    grads = {k: np.array(v) for k, v in tree_flatten(grads)}
    assert set(grads) == set(tensors)
    base_np, hidden_np = np.array(out.logits, dtype=np.float64), np.array(out.hidden, dtype=np.float64)
    w64 = {k: v.astype(np.float64) for k, v in tensors.items()}

    def ref_loss(w):
        r = reference.transformer_reward(w, hidden_np, config)
        return reference.prt_loss(base_np, r, ids[:, 1:], mask[:, 1:], lam=lam, entropy_coeff=alpha)[0]

    rng = np.random.default_rng(0)
    eps = 1e-5
    for name, value in w64.items():
        for _ in range(2):
            index = tuple(rng.integers(0, s) for s in value.shape)
            plus, minus = dict(w64), dict(w64)
            plus[name], minus[name] = value.copy(), value.copy()
            plus[name][index] += eps
            minus[name][index] -= eps
            numeric = (ref_loss(plus) - ref_loss(minus)) / (2 * eps)
            assert abs(grads[name][index] - numeric) <= 2e-5 + 1e-3 * abs(numeric), (name, index, grads[name][index], numeric)


def test_seeded_categorical_is_reproducible_and_distributed(backend):
    xp = backend.xp
    logprobs = mx.log(mx.array([[0.1, 0.6, 0.3]]))

    def draw(seed, n):
        rng = xp.make_rng(seed)
        return [int(xp.categorical(logprobs, rng).item()) for _ in range(n)]

    assert draw(7, 50) == draw(7, 50)
    assert draw(7, 50) != draw(8, 50)
    counts = np.bincount(draw(1, 3000), minlength=3) / 3000
    np.testing.assert_allclose(counts, [0.1, 0.6, 0.3], atol=0.04)
