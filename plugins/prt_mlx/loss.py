"""The fused implementation of prtcore.objectives.prt_loss on mlx arrays (a prtcore.objectives.PRTLoss): the loss
the mlx backend trains with (`MLXBackend.prt_loss`; prt_mlx.training and the conformance suite take it from here).

The values, metrics and gradient are those of the reference; the gradient is computed with the loss, chunk by chunk
of tokens, so autodiff keeps none of the (tokens, V) intermediates of the elementwise formulation.
`composed_head_gradient` goes further for a `linear` reward: its head's gradient without autodiff, block by block of
tokens, so no (tokens, V) array exists whole.
"""

from __future__ import annotations

import mlx.core as mx

from prtcore.objectives import check_prt_loss_args

from .rewards import composed_logits


_COMPILED: dict = {}


def _entropy(reward):
    """(H(softmax(r)) per row, log p, p) of reward rows: one pass of exp."""
    top = mx.max(reward, axis=-1, keepdims=True)
    e = mx.exp(reward - top)
    s = mx.sum(e, axis=-1, keepdims=True)
    logp, p = reward - top - mx.log(s), e / s
    return -mx.sum(mx.where(p > 0, p * logp, 0.0), axis=-1), logp, p


def _compiled(lam: float, alpha: float):
    """Compiled functions of rows of tokens (mx.compile fuses the elementwise work over the (tokens, V) arrays; under
    mx.value_and_grad the inputs are tracers, and mlx runs the functions' graphs uncompiled):

    value(base, reward, targets, w, n) → (loss, nll) sums over the rows divided by max(n, 1) (n: the masked tokens
        of the whole batch), and the rows' gradient, computed from the same intermediates so that autodiff keeps
        none of them. v = log_softmax(b) + r/λ differs from z = b + r/λ by a constant per token, so
        softmax(v) = softmax(z): one pass of exp over (tokens, V) (two with an entropy term), not five.
        d loss / d r = w/n · [(softmax(z) − onehot(y)) / λ  +  α · p ⊙ (log p + H(p))],  p = softmax(r).
    metrics(base, reward, targets, w, n) → (accuracy, entropy) sums divided by max(n, 1). A graph of its own: mlx
        evaluates it only when a metric is read, so a training step that reads the loss alone skips it."""
    key = (lam, alpha)
    if key in _COMPILED:
        return _COMPILED[key]

    def value(base, reward, targets, w, n):
        z = base + reward * (1.0 / lam)
        top = mx.max(z, axis=-1, keepdims=True)
        e = mx.exp(z - top)
        s = mx.sum(e, axis=-1, keepdims=True)
        target_logq = (mx.take_along_axis(z, targets[..., None], axis=-1) - top - mx.log(s))[..., 0]
        denom = mx.where(n > 0, n, 1.0)
        keep = w > 0
        nll = mx.where(keep, -target_logq, 0.0).sum() / denom
        grad = (e / s - (mx.arange(reward.shape[-1]) == targets[..., None])) / lam
        loss = nll
        if alpha:
            h, logp, p = _entropy(reward)
            loss = nll - alpha * mx.where(keep, h, 0.0).sum() / denom
            grad = grad + alpha * mx.where(p > 0, p * (logp + h[..., None]), 0.0)
        return loss, nll, (grad * (w / denom)[..., None]).astype(reward.dtype)

    def metrics(base, reward, targets, w, n):
        denom = mx.where(n > 0, n, 1.0)
        hits = (mx.argmax(base + reward * (1.0 / lam), axis=-1) == targets).astype(mx.float32)
        h = _entropy(reward)[0]
        return (hits * w).sum() / denom, mx.where(w > 0, h, 0.0).sum() / denom

    _COMPILED[key] = (mx.compile(value), mx.compile(metrics))
    return _COMPILED[key]


def _chunk_elements() -> int:
    """Size of one chunk's (tokens, V) temporaries. On the CPU they are not fused away: 1 MB chunks ran fastest and
    keep a twin's loss at the peak memory of LoRA's plain cross-entropy (4 MB chunks: 1.5x; see docs/performance.md).
    On a GPU each chunk costs kernel launches, so chunks are 4 MB there."""
    return 1 << 18 if mx.default_device() == mx.cpu else 1 << 20


def fused_prt_loss(base_logits, reward_logits, targets, mask=None, *, lam=1.0, entropy_coeff=0.0):
    """The fused implementation of prtcore.objectives.prt_loss on mlx arrays: `(loss, {"ntokens", "accuracy",
    "entropy", "nll"})`, the same values and gradient (of the reward only; `base_logits` is taken as constant),
    the gradient computed with the loss (see `_compiled`). λ and the entropy coefficient are arguments."""
    check_prt_loss_args(base_logits, reward_logits, lam, entropy_coeff, align_hint="")
    return _chunked_loss(mx.stop_gradient(base_logits), reward_logits, targets, mask, lam, entropy_coeff)


def composed_prt_loss(composed, targets, mask=None, *, lam=1.0):
    """fused_prt_loss without an entropy term, given r + λ·b (B, T, V) in one array instead of b and r: what a
    reward composed with the source computes (`prt_mlx.rewards.composed_logits`). The
    gradient that reaches `composed` is the reward's. Metrics: "ntokens", "accuracy", "nll"."""
    loss, metrics = _chunked_loss(None, composed, targets, mask, lam, 0.0)
    del metrics["entropy"]  # of softmax(r + λ·b), not of the reward's
    return loss, metrics


def _chunked_loss(base, reward_logits, targets, mask, lam, entropy_coeff):
    """fused_prt_loss over chunks of tokens; a `base` of None takes `reward_logits` as r + λ·b."""
    weights = mx.ones(targets.shape, dtype=mx.float32) if mask is None else mask
    V = reward_logits.shape[-1]
    shape = reward_logits.shape
    b = None if base is None else base.reshape(-1, V)
    y, w = targets.reshape(-1), weights.reshape(-1).astype(mx.float32)
    n = w.sum()
    value, metrics = _compiled(float(lam), float(entropy_coeff))
    rows = max(1, _chunk_elements() // max(V, 1))
    chunks = [slice(start, start + rows) for start in range(0, y.shape[0], rows)]
    zero = mx.array(0.0)

    @mx.custom_function
    def loss(reward):
        # chunks of tokens: the (tokens, V) temporaries of one chunk are freed before the next is computed
        r = reward.reshape(-1, V)
        parts = [value(zero if b is None else b[c], r[c], y[c], w[c], n) for c in chunks]
        return sum(p[0] for p in parts), sum(p[1] for p in parts), mx.concatenate([p[2] for p in parts]).reshape(shape)

    @loss.vjp
    def loss_vjp(primals, cotangents, outputs):
        return (outputs[2] * cotangents[0],)

    total, nll, _ = loss(reward_logits)
    r = mx.stop_gradient(reward_logits).reshape(-1, V)
    parts = [metrics(zero if b is None else b[c], r[c], y[c], w[c], n) for c in chunks]
    accuracy, entropy = sum(p[0] for p in parts), sum(p[1] for p in parts)
    return total, {"ntokens": n, "accuracy": accuracy, "entropy": entropy, "nll": nll}


def composed_head_gradient(hidden, weight, base_weight, targets, weights, *, lam, rows: int = 128):
    """(loss, target tokens, d loss / d weight) of `composed_prt_loss` over hidden @ (weight + λ·base_weight)ᵀ: a
    `linear` reward composed with its source (prt_mlx.rewards.composed_logits), with (N, D) `hidden` and (N,)
    `targets` and `weights`. The gradient is computed directly, `rows` tokens at a time, and each block is evaluated
    before the next, so neither the (N, V) logits nor their gradient ever exist whole (autodiff keeps about three
    (N, V) arrays; docs/performance.md). It evaluates: not for use under a function transformation."""
    value, _ = _compiled(float(lam), 0.0)
    weights = weights.astype(mx.float32)
    n = weights.sum()
    vocab, zero = base_weight.shape[0], mx.array(0.0)
    head = weight[:vocab]
    total, grad = mx.array(0.0), mx.zeros(head.shape, dtype=weight.dtype)
    for start in range(0, hidden.shape[0], rows):
        h, y, w = hidden[start:start + rows], targets[start:start + rows], weights[start:start + rows]
        loss, _, g = value(zero, composed_logits(h, head, h, base_weight, lam), y, w, n)
        total, grad = total + loss, grad + g.T @ h
        mx.eval(total, grad)
    if vocab < weight.shape[0]:  # rows past the shared vocabulary get no gradient
        grad = mx.concatenate([grad, mx.zeros((weight.shape[0] - vocab, weight.shape[1]), dtype=grad.dtype)])
    return total, n, grad


def gradient(fn, x):
    """The gradient of scalar-valued `fn` at array `x` (mlx's autodiff; `MLXBackend.gradient`)."""
    return mx.grad(fn)(x)
