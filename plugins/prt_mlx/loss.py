"""The fused implementation of prtcore.objectives.prt_loss on mlx arrays (a prtcore.objectives.PRTLoss): the loss
the mlx backend trains with (`MLXBackend.prt_loss`; prt_mlx.training and the conformance suite take it from here).

The values, metrics and gradient are those of the reference; the gradient is computed with the loss, chunk by chunk
of tokens, so autodiff keeps none of the (tokens, V) intermediates of the elementwise formulation.
"""

from __future__ import annotations

import mlx.core as mx

from prtcore.objectives import check_prt_loss_args


def _log_softmax(x):
    return x - mx.logsumexp(x, axis=-1, keepdims=True)


_FUSED: dict = {}


def _fused(lam: float, alpha: float):
    """A compiled function (base, reward, targets, weights) → (loss, ntokens, accuracy, entropy, nll, d loss/d reward).

    The gradient is computed with the loss from the same intermediates (mx.compile fuses the elementwise work
    over the (tokens, V) arrays), so autodiff keeps none of them:
    d loss / d r = w/n · [(softmax(v) − onehot(y)) / λ  +  α · p ⊙ (log p + H(p))],  v = log_softmax(b) + r/λ."""
    key = (lam, alpha)
    if key in _FUSED:
        return _FUSED[key]

    def both(base, reward, targets, w, n):
        """Rows of tokens: (loss, accuracy, entropy, nll) sums over the rows divided by max(n, 1) (n: the masked
        tokens of the whole batch), and the rows' gradient."""
        logq = _log_softmax(_log_softmax(base) + reward / lam)
        logp = _log_softmax(reward)
        p = mx.exp(logp)
        h = -mx.sum(mx.where(p > 0, p * logp, 0.0), axis=-1)
        denom = mx.where(n > 0, n, 1.0)
        keep = w > 0
        target_logq = mx.take_along_axis(logq, targets[..., None], axis=-1)[..., 0]
        nll = mx.where(keep, -target_logq, 0.0).sum() / denom
        entropy = mx.where(keep, h, 0.0).sum() / denom
        accuracy = ((mx.argmax(logq, axis=-1) == targets).astype(mx.float32) * w).sum() / denom
        value = nll - alpha * entropy if alpha else nll
        grad = (mx.exp(logq) - (mx.arange(reward.shape[-1]) == targets[..., None])) / lam
        if alpha:
            grad = grad + alpha * mx.where(p > 0, p * (logp + h[..., None]), 0.0)
        grad = (grad * (w / denom)[..., None]).astype(reward.dtype)
        return value, accuracy, entropy, nll, grad

    _FUSED[key] = mx.compile(both)
    return _FUSED[key]


def _chunk_elements() -> int:
    """Size of one chunk's (tokens, V) temporaries. On the CPU they are not fused away: 1 MB chunks ran fastest and
    keep a twin's loss at the peak memory of LoRA's plain cross-entropy (4 MB chunks: 1.5x; see docs/performance.md).
    On a GPU each chunk costs kernel launches, so chunks are 4 MB there."""
    return 1 << 18 if mx.default_device() == mx.cpu else 1 << 20


def fused_prt_loss(base_logits, reward_logits, targets, mask=None, *, lam=1.0, entropy_coeff=0.0):
    """The fused implementation of prtcore.objectives.prt_loss on mlx arrays: `(loss, {"ntokens", "accuracy",
    "entropy", "nll"})`, the same values and gradient (of the reward only; `base_logits` is taken as constant),
    the gradient computed with the loss (see `_fused`). λ and the entropy coefficient are arguments."""
    check_prt_loss_args(base_logits, reward_logits, lam, entropy_coeff, align_hint="")
    weights = mx.ones(targets.shape, dtype=mx.float32) if mask is None else mask
    base = mx.stop_gradient(base_logits)
    both = _fused(float(lam), float(entropy_coeff))

    V = reward_logits.shape[-1]
    shape = reward_logits.shape
    rows = max(1, _chunk_elements() // max(V, 1))

    @mx.custom_function
    def loss(reward):
        # chunks of tokens: the (tokens, V) temporaries of one chunk are freed before the next is computed
        b, r = base.reshape(-1, V), reward.reshape(-1, V)
        y, w = targets.reshape(-1), weights.reshape(-1).astype(mx.float32)
        n = w.sum()
        totals, grads = [], []
        for start in range(0, r.shape[0], rows):
            part = both(b[start:start + rows], r[start:start + rows], y[start:start + rows], w[start:start + rows], n)
            totals.append(part[:4])
            grads.append(part[4])
        value, accuracy, entropy, nll = (sum(t[i] for t in totals) for i in range(4))
        return value, n, accuracy, entropy, nll, mx.concatenate(grads).reshape(shape)

    @loss.vjp
    def loss_vjp(primals, cotangents, outputs):
        return (outputs[5] * cotangents[0],)

    value, n, accuracy, entropy, nll, _ = loss(reward_logits)
    return value, {"ntokens": n, "accuracy": accuracy, "entropy": entropy, "nll": nll}


def gradient(fn, x):
    """The gradient of scalar-valued `fn` at array `x` (mlx's autodiff; `MLXBackend.gradient`)."""
    return mx.grad(fn)(x)
