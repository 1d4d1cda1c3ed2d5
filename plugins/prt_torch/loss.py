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

    d loss / d r = w/n · [(softmax(v) − onehot(y)) / λ  +  α · p ⊙ (log p + H(p))],  v = log_softmax(b) + r/λ,
    p = softmax(r). Autograd keeps this one (tokens, V) gradient instead of the dozen (tokens, V) intermediates of
    the elementwise formulation.
    """

    @staticmethod
    def forward(ctx, base, reward, targets, weights, lam, alpha):
        V = reward.shape[-1]
        b, r = base.reshape(-1, V), reward.reshape(-1, V)
        y, w = targets.reshape(-1), weights.reshape(-1).to(torch.float32)
        n = w.sum()
        denom = torch.where(n > 0, n, torch.ones_like(n))
        grad = torch.empty_like(r, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        nll = torch.zeros((), dtype=torch.float32, device=r.device)
        entropy, hits = torch.zeros_like(nll), torch.zeros_like(nll)
        step = _chunk_rows(V, r.device)
        for start in range(0, r.shape[0], step):
            sl = slice(start, start + step)
            rc, wc, yc = r[sl].float(), w[sl], y[sl]
            keep = wc > 0
            logq = torch.log_softmax(torch.log_softmax(b[sl].float(), -1) + rc / lam, -1)
            target_logq = logq.gather(-1, yc[:, None])[:, 0]
            nll = nll + torch.where(keep, -target_logq, torch.zeros_like(target_logq)).sum()
            logp = torch.log_softmax(rc, -1)
            p = logp.exp()
            plogp = torch.where(p > 0, p * logp, torch.zeros_like(p))
            h = -plogp.sum(-1)
            entropy = entropy + torch.where(keep, h, torch.zeros_like(h)).sum()
            hits = hits + ((logq.argmax(-1) == yc).float() * wc).sum()
            if grad is not None:
                g = logq.exp_()
                g.scatter_add_(-1, yc[:, None], -torch.ones_like(g[:, :1]))
                g.div_(lam)
                if alpha:
                    g.add_(torch.where(p > 0, p * (logp + h[:, None]), torch.zeros_like(p)), alpha=alpha)
                grad[sl] = g * (wc / denom)[:, None]
        nll, entropy, accuracy = nll / denom, entropy / denom, hits / denom
        loss = nll - alpha * entropy if alpha else nll.clone()
        if grad is not None:
            ctx.save_for_backward(grad)
        ctx.shape, ctx.dtype = reward.shape, reward.dtype
        ctx.mark_non_differentiable(n, accuracy, entropy, nll)
        return loss, n, accuracy, entropy, nll

    @staticmethod
    def backward(ctx, grad_loss, *unused):
        (grad,) = ctx.saved_tensors
        return None, (grad * grad_loss).reshape(ctx.shape).to(ctx.dtype), None, None, None, None


def fused_prt_loss(base_logits, reward_logits, targets, mask=None, *, lam=1.0, entropy_coeff=0.0):
    """The fused implementation of prtcore.objectives.prt_loss on torch tensors, with far less memory.

    Same contract: `(loss, {"ntokens", "accuracy", "entropy", "nll"})`; only `reward_logits` gets gradients
    (`base_logits` is taken as constant). The gradient is computed with the loss (see `_FusedPRTLoss`). λ and the
    entropy coefficient are arguments.
    """
    check_prt_loss_args(base_logits, reward_logits, lam, entropy_coeff, align_hint="")
    weights = torch.ones_like(targets, dtype=torch.float32) if mask is None else mask
    loss, n, accuracy, entropy, nll = _FusedPRTLoss.apply(base_logits.detach(), reward_logits, targets, weights,
                                                          float(lam), float(entropy_coeff))
    return loss, {"ntokens": n, "accuracy": accuracy, "entropy": entropy, "nll": nll}


def gradient(fn, x: torch.Tensor) -> torch.Tensor:
    """The gradient of scalar-valued `fn` at tensor `x` (torch's autograd; `TorchBackend.gradient`)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(fn(x), x)
    return grad
