"""Reward gradients for the conformance suite: the optional "gradients" capability of a backend.

A backend that can say what its training computes implements

    backend.reward_gradients(reward, source, ids, mask, *, lam, entropy_coeff) -> dict[str, numpy.ndarray]

- `ids`: (B, T) token ids (nested lists of ints); `mask`: (B, T) 0/1. As in training (prtcore.data.Batch), the
  loss reads `ids[:, :-1]` to predict `ids[:, 1:]` where `mask[:, 1:]` is 1;
- the value differentiated is `prtcore.prt_loss` (mean over the masked target tokens) over the shared vocabulary
  (`len(tokenizer_vocab(source.tokenizer))`), with the base logits (and the hidden states a `linear` /
  `transformer` reward reads) of `source` held constant;
- the result maps every trainable tensor of the reward to its gradient, named and shaped as in the reward
  artifact: `head.weight`, `blocks.0.attn.q_proj.weight`, ... (prtcore.rewards), or PEFT's names and shapes
  for a LoRA twin (`base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight`, prtcore.adapters).

It may raise NotImplementedError (with a message) for reward kinds it does not cover: the check is skipped
with that message. A backend without the method skips the gradient checks with the reason, unless a fallback
below covers it: the built-in `mlx` and `torch` backends do not have the method yet, and are served here
through their public attributes (`reward.module`, `reward.trainable_parameters()`, ...). A third-party backend
is never served by a fallback; it implements the method.
"""

from __future__ import annotations

import numpy as np

from ..objectives import prt_loss
from ..sampling import align_vocab, tokenizer_vocab


class GradientsUnavailable(Exception):
    """The backend has no way to give reward gradients (the message says why)."""


def gradient_provider(backend) -> str | None:
    """"method" when the backend implements `reward_gradients`, "fallback" when this module serves it, else None."""
    if callable(getattr(backend, "reward_gradients", None)):
        return "method"
    if _fallback_for(backend) is not None:
        return "fallback"
    return None


def reward_gradients(backend, reward, source, ids, mask, *, lam: float, entropy_coeff: float) -> dict[str, np.ndarray]:
    """The backend's gradients (its method, else the fallback); GradientsUnavailable when there is neither."""
    method = getattr(backend, "reward_gradients", None)
    if callable(method):
        out = method(reward, source, ids, mask, lam=lam, entropy_coeff=entropy_coeff)
    else:
        fallback = _fallback_for(backend)
        if fallback is None:
            raise GradientsUnavailable(
                f"backend {backend.name!r} lacks capability 'gradients' (no reward_gradients method; "
                "see prtcore.testing.gradients)")
        out = fallback(backend, reward, source, ids, mask, lam=lam, entropy_coeff=entropy_coeff)
    return {str(k): np.asarray(v, dtype=np.float64) for k, v in out.items()}


def _fallback_for(backend):
    """Fallbacks exist for the built-in backends only (identified by the module their class lives in)."""
    package = type(backend).__module__.split(".")[0]
    return {"prt_mlx": _mlx_gradients, "prt_torch": _torch_gradients}.get(package)


def shared_vocab(source) -> int:
    return len(tokenizer_vocab(source.tokenizer))


# ------------------------------------------------------------------------------------------------ mlx
def _mlx_gradients(backend, reward, source, ids, mask, *, lam, entropy_coeff):
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from ..adapters import mlx_to_peft_tensors

    xp, vocab = backend.xp, shared_vocab(source)
    x = mx.array(np.asarray(ids, dtype=np.int32))
    inputs, targets = x[:, :-1], x[:, 1:]
    weights = mx.array(np.asarray(mask, dtype=np.float32))[:, 1:]
    out = source.forward(inputs, hidden=reward.reads_source_hidden)
    base = mx.stop_gradient(align_vocab(out.logits, vocab, xp=xp))
    hidden = None if out.hidden is None else mx.stop_gradient(out.hidden)

    def loss():
        r = align_vocab(reward.forward(inputs, source_hidden=hidden), vocab, fill=0.0, xp=xp)
        return prt_loss(base, r, targets, weights, lam=lam, entropy_coeff=entropy_coeff, xp=xp)[0]

    _, grads = nn.value_and_grad(reward.module, loss)()
    flat = {k: np.array(v.astype(mx.float32)) for k, v in tree_flatten(grads)}
    if reward.config.kind != "twin":
        return flat
    lora = {k: v for k, v in flat.items() if k.rsplit(".", 1)[-1] in ("lora_a", "lora_b")}
    if len(lora) != len(flat):
        raise NotImplementedError("the mlx gradient fallback covers LoRA twins without other trained tensors")
    return mlx_to_peft_tensors(lora)


# ------------------------------------------------------------------------------------------------ torch
def _torch_gradients(backend, reward, source, ids, mask, *, lam, entropy_coeff):
    import torch

    if reward.config.kind == "twin" and reward.config.fine_tune_type != "lora":
        raise NotImplementedError("the torch gradient fallback covers linear, transformer and LoRA twin rewards")
    xp, vocab = backend.xp, shared_vocab(source)
    params = reward.trainable_parameters()
    saved = {name: p.requires_grad for name, p in params.items()}
    trainable = reward.trainable
    # A loaded reward is not trainable: its forward would switch a LoRA adapter to inference mode (no gradients).
    reward.trainable = True
    try:
        for p in params.values():
            p.requires_grad_(True)
            p.grad = None
        x = backend.asarray(ids)
        inputs, targets = x[:, :-1], x[:, 1:]
        weights = torch.as_tensor(np.asarray(mask, dtype=np.float32))[:, 1:]
        out = source.forward(inputs, hidden=reward.reads_source_hidden)
        with torch.enable_grad():
            r = reward.forward(inputs, source_hidden=out.hidden, module=reward.module)
            r = align_vocab(r, vocab, fill=0.0, xp=xp)
            base = align_vocab(out.logits, vocab, xp=xp).to(r.device)
            loss, _ = prt_loss(base, r, targets.to(r.device), weights.to(r.device), lam=lam,
                               entropy_coeff=entropy_coeff, xp=xp)
            loss.backward()
        grads = {}
        for name, p in params.items():
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            if reward.config.kind == "twin":
                name = name.replace(f".{reward.adapter}.", ".")  # PEFT's artifact names carry no adapter name
            grads[name] = g.detach().float().cpu().numpy()
        return grads
    finally:
        reward.trainable = trainable
        for name, p in params.items():
            p.grad = None
            p.requires_grad_(saved[name])


# ------------------------------------------------------------------------------------------------ reference
def reference_linear_gradients(base_logits, hidden, head, ids, mask, *, vocab: int, lam: float,
                               entropy_coeff: float) -> dict[str, np.ndarray]:
    """The gradient of the PRT loss w.r.t. a linear reward's `head.weight`, in closed form (NumPy, float64).

    `base_logits` (B, T-1, V') and `hidden` (B, T-1, H) are the source's outputs for `ids[:, :-1]`; `head` is
    (R, H). With v = log_softmax(base) + r/λ, p = softmax(v), q = softmax(r), H = entropy(q) and the mean over the
    N masked targets:  ∂loss/∂r = [(p − onehot(y))/λ + α·q·(log q + H)] / N  at each counted position.
    """
    from .reference import log_softmax

    ids = np.asarray(ids)
    targets = ids[:, 1:]
    weights = np.asarray(mask, dtype=np.float64)[:, 1:]
    hidden = np.asarray(hidden, dtype=np.float64)
    head = np.asarray(head, dtype=np.float64)
    base = np.asarray(base_logits, dtype=np.float64)
    base = base[..., :vocab] if base.shape[-1] >= vocab else np.concatenate(
        [base, np.full(base.shape[:-1] + (vocab - base.shape[-1],), -np.inf)], axis=-1)
    r = hidden @ head[:vocab].T
    count = weights.sum() or 1.0
    p = np.exp(log_softmax(log_softmax(base) + r / lam))
    onehot = np.zeros_like(p)
    np.put_along_axis(onehot, targets[..., None], 1.0, axis=-1)
    logq = log_softmax(r)
    q = np.exp(logq)
    entropy = -np.sum(np.where(q > 0, q * logq, 0.0), axis=-1, keepdims=True)
    g = (p - onehot) / lam + entropy_coeff * np.where(q > 0, q * (logq + entropy), 0.0)
    g = g * (weights / count)[..., None]
    grad = np.zeros_like(head)
    grad[:vocab] = np.einsum("btv,bth->vh", g, hidden)
    return {"head.weight": grad}
