"""TorchNamespace and the PRT loss against the NumPy reference, including gradients."""

import numpy as np
import pytest
import torch

from prtcore import RewardConfig, prt_loss
from prtcore.testing import reference
from prtcore.testing.suite import ConformanceTests


class TestTorchConformance(ConformanceTests):
    """prtcore's conformance suite on the torch backend."""

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls):
        import prtcore

        return prtcore.get_backend("torch")


def test_to_numpy_dtypes(backend):
    xp = backend.xp
    assert xp.to_numpy(torch.ones(2, dtype=torch.bfloat16, requires_grad=True)).dtype == np.float32
    assert xp.to_numpy(torch.ones(2, dtype=torch.float64)).dtype == np.float32
    assert xp.to_numpy(torch.ones(2, dtype=torch.int32)).dtype == np.int64
    assert xp.to_numpy(torch.ones(2, dtype=torch.bool)).dtype == np.bool_


def test_categorical_is_seeded_and_follows_the_distribution(backend):
    xp = backend.xp
    logprobs = torch.log_softmax(torch.tensor([[0.0, 1.0, 2.0, -np.inf]]), -1).repeat(4000, 1)
    a = xp.categorical(logprobs, xp.make_rng(3))
    b = xp.categorical(logprobs, xp.make_rng(3))
    assert torch.equal(a, b) and int(a.max()) < 3
    freq = torch.bincount(a, minlength=4).float() / len(a)
    np.testing.assert_allclose(freq[:3].numpy(), torch.softmax(torch.tensor([0.0, 1.0, 2.0]), -1).numpy(), atol=0.03)


def _analytic_reward_grad(base, reward, targets, mask, lam, alpha):
    """dL/d(reward logits) of the reference loss, in float64."""
    v = reference.log_softmax(reference.log_softmax(base) + reward / lam)
    onehot = np.eye(base.shape[-1])[targets]
    logp = reference.log_softmax(reward)
    p = np.exp(logp)
    entropy = -(p * logp).sum(-1, keepdims=True)
    per_token = (np.exp(v) - onehot) / lam + alpha * p * (logp + entropy)
    return per_token * mask[..., None] / mask.sum()


@pytest.mark.parametrize("lam,alpha", [(1.0, 0.0), (0.5, 0.1)])
def test_loss_gradient_matches_reference(backend, lam, alpha):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2, 5, 13)).astype(np.float32) * 3
    reward = rng.standard_normal((2, 5, 13)).astype(np.float32)
    targets = rng.integers(0, 13, (2, 5))
    mask = (rng.random((2, 5)) > 0.3).astype(np.float32)
    r = torch.tensor(reward, requires_grad=True)
    loss, _ = prt_loss(torch.tensor(base), r, torch.tensor(targets), torch.tensor(mask), lam=lam,
                       entropy_coeff=alpha, xp=backend.xp)
    loss.backward()
    want = _analytic_reward_grad(base.astype(np.float64), reward.astype(np.float64), targets, mask, lam, alpha)
    np.testing.assert_allclose(r.grad.numpy(), want, atol=1e-6)
    assert abs(float(loss.detach()) - reference.prt_loss(base, reward, targets, mask, lam=lam, entropy_coeff=alpha)[0]) < 1e-5


@pytest.mark.parametrize("kind", ["linear", "transformer"])
def test_reward_parameter_gradients_match_reference(backend, source, kind):
    """Directional derivatives of the loss w.r.t. reward weights equal central differences of the reference."""
    from prt_torch.modules import LinearReward, TransformerReward

    config = RewardConfig(kind=kind, d_model=16, num_layers=2, num_heads=4, ffn_dim=24, entropy_coeff=0.05, lam=0.7)
    vocab, hidden_size = source.vocab_size, source.hidden_size
    tensors = reference.random_reward_tensors(config, hidden_size, vocab, seed=1)
    module = LinearReward(hidden_size, vocab) if kind == "linear" else TransformerReward(config, hidden_size, vocab)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
    ids = torch.tensor([[3, 17, 42, 8, 99, 5, 23, 61, 7]])
    out = source.forward(ids[:, :-1], hidden=True)
    targets, mask = ids[:, 1:], torch.tensor([[0, 1, 1, 1, 0, 1, 1, 1]], dtype=torch.float32)
    loss, _ = prt_loss(out.logits, module(out.hidden), targets, mask, lam=config.lam,
                       entropy_coeff=config.entropy_coeff, xp=backend.xp)
    loss.backward()
    grads = {k: p.grad.double().numpy() for k, p in module.named_parameters()}

    def ref_loss(ts):
        logits = reference.reward_logits(ts, out.hidden.double().numpy(), config)
        return reference.prt_loss(out.logits.double().numpy(), logits, targets.numpy(), mask.numpy(),
                                  lam=config.lam, entropy_coeff=config.entropy_coeff)[0]

    rng = np.random.default_rng(5)
    for _ in range(2):
        direction = {k: rng.standard_normal(v.shape) for k, v in tensors.items()}
        eps = 1e-4
        plus = ref_loss({k: tensors[k] + eps * direction[k] for k in tensors})
        minus = ref_loss({k: tensors[k] - eps * direction[k] for k in tensors})
        numeric = (plus - minus) / (2 * eps)
        analytic = sum(float((grads[k] * direction[k]).sum()) for k in tensors)
        assert abs(numeric - analytic) <= 1e-4 * max(1.0, abs(numeric)), (numeric, analytic)
