"""The PRT training objective (Algorithm 1): its reference, written once against an array namespace, and the
contract of a backend's own implementation of it.

    v    = log_softmax(base_logits) + reward_logits / λ
    loss = mean over masked tokens of  −log softmax(v)[target]   −   α · mean entropy of softmax(reward_logits)

Only the reward receives gradients; callers pass the base logits without gradient (stop_gradient / no_grad).

`prt_loss` is the reference. A backend may train with an implementation of its own (e.g. fused: the gradient
computed with the loss, chunk by chunk; prt_mlx.loss, prt_torch.loss): a `PRTLoss`, with prt_loss's signature
(λ and the entropy coefficient are arguments, never read off a reward), values, metrics and gradient.
`check_loss(impl, xp, grad=...)` tests one against the reference on random inputs; the conformance suite
(prtcore.testing.suite) runs it on every backend's `Backend.prt_loss`.

Composed logits. z = b + r/λ is all the loss needs, so a reward whose logits are `features @ weightᵀ`, on a source
whose logits are `hidden @ base_weightᵀ`, may compute r + λ·b itself over the source's V' rows:
`features @ weight[:V']ᵀ + λ·hidden @ base_weightᵀ`, in the reward's dtype, the source's product in the source's
dtype (as its output layer computes its logits). One (tokens, V) tensor instead of two, and one product when the
features are the hidden states themselves and the dtypes agree (a `linear` reward: h·(W_r + λ·W_b)ᵀ). Backends
implement it as `composed_logits` (prt_torch.modules, prt_mlx.rewards) and train on it with `composed_prt_loss`.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy

from .arrays import namespace
from .errors import ConfigError


class PRTLoss(Protocol):
    """An implementation of `prt_loss` over one backend's arrays: the same arguments (no `xp`: it knows its
    arrays), `(loss, {"ntokens", "accuracy", "entropy", "nll"})` of the same values, the same gradient with
    respect to `reward_logits` and none for `base_logits`; it refuses what `check_prt_loss_args` refuses."""

    def __call__(self, base_logits, reward_logits, targets, mask=None, *, lam: float = 1.0,
                 entropy_coeff: float = 0.0) -> tuple[Any, dict[str, Any]]: ...


def compose_logits(base_logits, reward_logits, lam=1.0, *, xp=numpy):
    """Unnormalised PRT logits v = log_softmax(base) + reward/λ."""
    ops = namespace(xp)
    return ops.log_softmax(base_logits) + reward_logits / lam


def _entropy(logits, ops):
    logp = ops.log_softmax(logits)
    p = ops.exp(logp)
    # p·log p is 0 where p is 0, also where log p is −inf.
    plogp = ops.where(p > 0, p * ops.where(p > 0, logp, ops.full_like(logp, 0.0)), ops.full_like(p, 0.0))
    return -ops.sum(plogp, axis=-1)


def check_prt_loss_args(base_logits, reward_logits, lam, entropy_coeff, *,
                        align_hint: str = " (prtcore.sampling.align_vocab)") -> None:
    """Refuse a λ that is not > 0 (nan included), a negative entropy coefficient, or logits of different shapes."""
    if not lam > 0:  # also refuses nan
        raise ConfigError(f"prt_loss: lam={lam!r} must be > 0")
    if not entropy_coeff >= 0:
        raise ConfigError(f"prt_loss: entropy_coeff={entropy_coeff!r} must be >= 0")
    if tuple(base_logits.shape) != tuple(reward_logits.shape):
        raise ConfigError(
            f"prt_loss: base logits {tuple(base_logits.shape)} and reward logits {tuple(reward_logits.shape)} "
            f"differ in shape; align both to the shared vocabulary first{align_hint}"
        )


def prt_loss(base_logits, reward_logits, targets, mask=None, *, lam=1.0, entropy_coeff=0.0, xp=numpy):
    """PRT loss over `(..., V)` logits and `(...)` integer targets.

    `mask` (same shape as targets, 0/1 or bool) selects the tokens that count; None counts every token.
    Returns `(loss, metrics)`; metrics holds arrays `ntokens`, `accuracy` and `entropy` (the mean entropy of
    softmax(reward) over the masked tokens), in the namespace's array type.
    """
    check_prt_loss_args(base_logits, reward_logits, lam, entropy_coeff)
    ops = namespace(xp)
    logp = ops.log_softmax(compose_logits(base_logits, reward_logits, lam, xp=ops))
    target_logp = ops.squeeze(ops.take_along_axis(logp, targets[..., None], axis=-1), -1)
    if mask is None:
        weights = ops.full_like(target_logp, 1.0)
    else:
        weights = ops.astype_float32(mask)
    ntokens = ops.sum(weights)
    denom = ops.where(ntokens > 0, ntokens, ops.full_like(ntokens, 1.0))
    # Masked positions are excluded with `where`, so a −inf there cannot turn the sum into nan.
    selected = weights > 0
    nll = ops.sum(ops.where(selected, -target_logp, ops.full_like(target_logp, 0.0))) / denom
    entropy = ops.sum(ops.where(selected, _entropy(reward_logits, ops), ops.full_like(target_logp, 0.0))) / denom
    hits = ops.astype_float32(ops.argmax(logp, axis=-1) == targets)
    accuracy = ops.sum(hits * weights) / denom
    loss = nll - entropy_coeff * entropy if entropy_coeff else nll
    return loss, {"ntokens": ntokens, "accuracy": accuracy, "entropy": entropy, "nll": nll}


# ------------------------------------------------------------------------------------------------ the contract
def prt_loss_gradient(base_logits, reward_logits, targets, mask=None, *, lam=1.0, entropy_coeff=0.0) -> numpy.ndarray:
    """d prt_loss / d reward_logits in float64 NumPy, from its closed form (the base is constant):

        w/n · [(softmax(v) − onehot(target)) / λ  +  α · p ⊙ (log p + H(p))],   p = softmax(reward_logits)

    w: 1 on the tokens that count (mask > 0), n: their number (1 when there are none)."""
    ops = namespace(numpy)
    base = numpy.asarray(base_logits, dtype=numpy.float64)
    reward = numpy.asarray(reward_logits, dtype=numpy.float64)
    targets = numpy.asarray(targets)
    grad = numpy.exp(ops.log_softmax(compose_logits(base, reward, lam)))
    grad = (grad - (numpy.arange(reward.shape[-1]) == targets[..., None])) / lam
    if entropy_coeff:
        logp = ops.log_softmax(reward)
        p = numpy.exp(logp)
        with numpy.errstate(invalid="ignore"):
            plogp = numpy.where(p > 0, p * logp, 0.0)
            h = -plogp.sum(-1, keepdims=True)
            grad = grad + entropy_coeff * numpy.where(p > 0, p * (logp + h), 0.0)
    selected = numpy.ones(targets.shape) if mask is None else (numpy.asarray(mask) > 0).astype(numpy.float64)
    n = selected.sum()
    return grad * (selected / (n if n > 0 else 1.0))[..., None]


# (shape (B, T, V), λ, entropy coefficient, mask: "some" | "none" (argument None) | "all-out", −inf in the base)
LOSS_CASES = (
    ((3, 9, 40), 0.7, 0.05, "some", True),
    ((2, 5, 33), 1.0, 0.0, "none", False),
    ((2, 3, 11), 2.5, 0.2, "all-out", False),  # no token counts: loss, metrics and gradient 0
    ((3, 9, 70000), 0.7, 0.3, "some", True),  # large enough for several chunks of tokens in a fused implementation
)
LOSS_RTOL = 1e-5  # values: |got − want| ≤ LOSS_RTOL · max(1, |want|)
GRAD_RTOL = 1e-5  # gradients: max |got − want| ≤ GRAD_RTOL · max(max |want|, 1e-3)


def loss_inputs(shape, mask_kind: str = "some", neg_inf: bool = False, seed: int = 0):
    """Random (base, reward, targets, mask) NumPy inputs (float32 logits, int64 targets, float32 0/1 mask or
    None) for `check_loss`; `neg_inf` puts a −inf in the base where no target is."""
    rng = numpy.random.default_rng(seed)
    base = rng.standard_normal(shape).astype(numpy.float32)
    reward = rng.standard_normal(shape).astype(numpy.float32)
    targets = rng.integers(0, shape[-1], shape[:-1])
    if neg_inf:
        column = int(targets[0, 0] + 1) % shape[-1]
        base[0, 0, column] = -numpy.inf
    mask = {"some": (rng.random(shape[:-1]) > 0.3).astype(numpy.float32), "none": None,
            "all-out": numpy.zeros(shape[:-1], numpy.float32)}[mask_kind]
    return base, reward, targets, mask


def check_loss(impl: PRTLoss, xp, *, grad: Callable | None = None, cases=LOSS_CASES, seed: int = 0) -> dict[str, float]:
    """Test `impl`, a PRTLoss over the arrays of namespace `xp`, against `prt_loss` (NumPy, float64) on random
    inputs: the loss and each metric within LOSS_RTOL, and, when `grad(fn, x)` (the backend's autodiff: the
    gradient of scalar-valued `fn` at array `x`) is given, the gradient with respect to the reward logits within
    GRAD_RTOL of `prt_loss_gradient`; a λ of 0 and a negative entropy coefficient must raise ConfigError.

    Raises AssertionError naming the case and the quantity that differ; returns the worst relative deviations
    {"loss": ..., "metrics": ..., "gradient": ...} (no "gradient" without `grad`)."""
    ops = namespace(xp)
    worst = {"loss": 0.0, "metrics": 0.0, **({"gradient": 0.0} if grad is not None else {})}
    for i, (shape, lam, alpha, mask_kind, neg_inf) in enumerate(cases):
        base, reward, targets, mask = loss_inputs(shape, mask_kind, neg_inf, seed=seed + i)
        case = f"case {i} (shape {shape}, lam {lam}, entropy_coeff {alpha}, mask {mask_kind}, -inf {neg_inf})"
        b, r, t = ops.asarray(base), ops.asarray(reward), ops.asarray(targets)
        m = None if mask is None else ops.asarray(mask)
        want, want_metrics = prt_loss(base.astype(numpy.float64), reward.astype(numpy.float64), targets, mask,
                                      lam=lam, entropy_coeff=alpha)
        got, metrics = impl(b, r, t, m, lam=lam, entropy_coeff=alpha)
        pairs = [("loss", "loss", got, want)] + [("metrics", key, metrics[key], want_metrics[key])
                                                for key in ("ntokens", "accuracy", "entropy", "nll")]
        for group, name, value, expected in pairs:
            deviation = abs(float(ops.to_numpy(value)) - float(expected)) / max(1.0, abs(float(expected)))
            if not deviation <= LOSS_RTOL:
                raise AssertionError(f"{case}: {name} {float(ops.to_numpy(value))!r}, the reference gives "
                                     f"{float(expected)!r}")
            worst[group] = max(worst[group], deviation)
        if grad is not None:
            g = numpy.asarray(ops.to_numpy(grad(lambda x: impl(b, x, t, m, lam=lam, entropy_coeff=alpha)[0], r)),
                              dtype=numpy.float64)
            g_want = prt_loss_gradient(base, reward, targets, mask, lam=lam, entropy_coeff=alpha)
            if g.shape != g_want.shape:
                raise AssertionError(f"{case}: the gradient has shape {g.shape}, the reward logits {g_want.shape}")
            error = numpy.abs(g - g_want)
            scale = max(float(numpy.abs(g_want).max()), 1e-3)
            deviation = float(error.max()) / scale if numpy.isfinite(error).all() else numpy.inf
            if not deviation <= GRAD_RTOL:
                raise AssertionError(f"{case}: the gradient of the loss differs from the reference's by "
                                     f"{deviation:.3g} of its largest entry")
            worst["gradient"] = max(worst["gradient"], deviation)
    x = ops.asarray(numpy.zeros((1, 2, 3), numpy.float32))
    y = ops.asarray(numpy.zeros((1, 2), numpy.int64))
    for bad in ({"lam": 0.0}, {"entropy_coeff": -0.1}):
        try:
            impl(x, x, y, None, **{"lam": 1.0, "entropy_coeff": 0.0, **bad})
        except ConfigError:
            continue
        raise AssertionError(f"{bad}: accepted; an implementation of prt_loss refuses it (check_prt_loss_args)")
    return worst
