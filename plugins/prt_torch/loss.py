"""The fused implementation of prtcore.objectives.prt_loss on torch tensors (a prtcore.objectives.PRTLoss): the loss
the torch backend trains with (`TorchBackend.prt_loss`; prt_torch.trainer and the conformance suite take it from here).

The values, metrics and gradient are those of the reference; the gradient is computed in the forward pass, chunk by
chunk of tokens, so autograd keeps one (tokens, V) gradient instead of the intermediates of the elementwise
formulation.
"""

from __future__ import annotations

import torch

from prtcore.objectives import check_prt_loss_args


def _chunk_rows(vocab: int, device: torch.device) -> int:
    budget = 1 << 24 if device.type == "cuda" else 1 << 20  # float32 elements per temporary: 64 MB GPU, 4 MB CPU
    return max(1, budget // max(vocab, 1))


class _FusedPRTLoss(torch.autograd.Function):
    """prtcore.objectives.prt_loss with the gradient computed in the forward pass, chunk by chunk of tokens.

    v = log_softmax(b) + r/λ differs from z = b + r/λ by a constant per token, so log softmax(v) = z − lse(z): one
    pass of exp over the composed logits instead of two. p = softmax(r), H(p) = −p·log p (one more). A `base` of None
    takes `reward` as r + λ·b already (composed_prt_loss; no entropy term then), whose memory then becomes the
    gradient: one (tokens, V) array fewer, and no fresh pages to fault in.
    d loss / d r = w/n · [(softmax(z) − onehot(y)) / λ  +  α · p ⊙ (log p + H(p))], written into one (tokens, V)
    gradient that autograd keeps instead of the dozen intermediates of the elementwise formulation.
    """

    @staticmethod
    def forward(ctx, base, reward, targets, weights, lam, alpha, with_entropy):
        V = reward.shape[-1]
        b, r = None if base is None else base.reshape(-1, V), reward.reshape(-1, V)
        y, w = targets.reshape(-1), weights.reshape(-1).to(torch.float32)
        n = w.sum()
        denom = torch.where(n > 0, n, torch.ones_like(n))
        grad = None
        if ctx.needs_input_grad[1]:
            in_place = b is None and not with_entropy and r.dtype == torch.float32 and r.is_contiguous()
            grad = r if in_place else torch.empty_like(r, dtype=torch.float32)
        nll = torch.zeros((), dtype=torch.float32, device=r.device)
        entropy, hits = torch.zeros_like(nll), torch.zeros_like(nll)
        step = _chunk_rows(V, r.device)
        for start in range(0, r.shape[0], step):
            sl = slice(start, start + step)
            rc, wc, yc = r[sl].float(), w[sl], y[sl]
            keep = wc > 0
            out = grad[sl] if grad is not None else None
            if b is not None:
                z = torch.add(b[sl].float(), rc, alpha=1.0 / lam, out=out)
            elif grad is r:
                z = rc if lam == 1.0 else rc.mul_(1.0 / lam)
            else:
                z = torch.mul(rc, 1.0 / lam, out=out)
            top, hit = _top(z, yc)
            hits = hits + (hit.float() * wc).sum()
            target_z = z.gather(-1, yc[:, None])[:, 0]
            e = z.sub_(top).exp_()  # in place: softmax(z) · s
            s = e.sum(-1)
            target_logq = target_z - top[:, 0] - s.log()
            nll = nll + torch.where(keep, -target_logq, torch.zeros_like(target_logq)).sum()
            if with_entropy:  # true whenever the loss has an entropy term
                logp = torch.log_softmax(rc, -1).clamp_(min=torch.finfo(torch.float32).min)  # 0 · log 0 = 0 below
                p = logp.exp()
                h = -torch.linalg.vecdot(p, logp)
                entropy = entropy + torch.where(keep, h, torch.zeros_like(h)).sum()
            if grad is not None:  # e (in grad's rows) becomes the gradient in place
                scale = wc / (denom * lam)
                e.mul_((scale / s)[:, None])
                e.scatter_add_(-1, yc[:, None], -scale[:, None])
                if alpha:
                    e.add_(p.mul_(logp.add_(h[:, None])).mul_((alpha * lam * scale)[:, None]))
        nll, entropy, accuracy = nll / denom, entropy / denom, hits / denom
        loss = nll - alpha * entropy if alpha else nll.clone()
        ctx.grad = grad  # not saved_tensors: in place it is a view of an input, which autograd's checks refuse
        ctx.shape, ctx.dtype = reward.shape, reward.dtype
        ctx.mark_non_differentiable(n, accuracy, entropy, nll)
        return loss, n, accuracy, entropy, nll

    @staticmethod
    def backward(ctx, grad_loss, *unused):
        grad, ctx.grad = ctx.grad, None
        # scaled in place: the one (tokens, V) array is the reward's gradient (backward runs once per graph); a
        # loss's own backward gives 1, which a CPU can see without a pass over the array
        if grad_loss.device.type != "cpu" or float(grad_loss) != 1.0:
            grad.mul_(grad_loss)
        return None, grad.reshape(ctx.shape).to(ctx.dtype), None, None, None, None, None


def _top(z, targets):
    """(the maximum of each row (N, 1), whether the target is the first of the row's maxima, as argmax). On a CPU
    the maxima alone are 7x faster than with their indices, which only the rows whose target reaches the maximum
    need (for ties)."""
    if z.device.type != "cpu":
        top, best = z.max(-1, keepdim=True)
        return top, best[:, 0] == targets
    top = z.amax(-1, keepdim=True)
    hit = z.gather(-1, targets[:, None])[:, 0] == top[:, 0]
    rows = hit.nonzero()[:, 0]
    if len(rows):
        hit[rows] = z[rows].max(-1).indices == targets[rows]
    return top, hit


def fused_prt_loss(base_logits, reward_logits, targets, mask=None, *, lam=1.0, entropy_coeff=0.0,
                   entropy_metric=True):
    """The fused implementation of prtcore.objectives.prt_loss on torch tensors, with far less memory.

    Same contract: `(loss, {"ntokens", "accuracy", "entropy", "nll"})`; only `reward_logits` gets gradients
    (`base_logits` is taken as constant). The gradient is computed with the loss (see `_FusedPRTLoss`). λ and the
    entropy coefficient are arguments. `entropy_metric=False` leaves "entropy" out of the metrics when the loss does
    not need it (entropy coefficient 0): it costs as much as the rest of the loss (PRTTrainer computes it on the
    first batch of each logging window).
    """
    check_prt_loss_args(base_logits, reward_logits, lam, entropy_coeff, align_hint="")
    weights = torch.ones_like(targets, dtype=torch.float32) if mask is None else mask
    with_entropy = bool(entropy_metric or entropy_coeff)
    loss, n, accuracy, entropy, nll = _FusedPRTLoss.apply(base_logits.detach(), reward_logits, targets, weights,
                                                          float(lam), float(entropy_coeff), with_entropy)
    metrics = {"ntokens": n, "accuracy": accuracy, "nll": nll}
    return loss, {**metrics, "entropy": entropy} if with_entropy else metrics


def composed_prt_loss(composed, targets, mask=None, *, lam=1.0):
    """fused_prt_loss without an entropy term, given r + λ·b (B, T, V) in one tensor instead of b and r: what a
    reward composed with the source computes (`prt_torch.modules.composed_logits`). The gradient that reaches
    `composed` is the reward's; when one is needed (and `composed` is float32, contiguous) it is computed in
    `composed`'s memory, which the loss consumes. Metrics: "ntokens", "accuracy", "nll"."""
    weights = torch.ones_like(targets, dtype=torch.float32) if mask is None else mask
    loss, n, accuracy, _, nll = _FusedPRTLoss.apply(None, composed, targets, weights, float(lam), 0.0, False)
    return loss, {"ntokens": n, "accuracy": accuracy, "nll": nll}


def gradient(fn, x: torch.Tensor) -> torch.Tensor:
    """The gradient of scalar-valued `fn` at tensor `x` (torch's autograd; `TorchBackend.gradient`)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(fn(x), x)
    return grad
