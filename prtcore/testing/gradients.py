"""Reward gradients for the conformance suite: the optional capability "reward_gradients" of a backend.

A backend that can say what its training computes lists "reward_gradients" in its capabilities and implements

    backend.reward_gradients(reward, source, ids, mask, *, lam, entropy_coeff) -> dict[str, numpy.ndarray]

(declared, with a default that raises BackendError, by prtcore.capabilities.OptionalMethods):

- `ids`: (B, T) token ids (nested lists of ints); `mask`: (B, T) 0/1. As in training (prtcore.data.Batch), the
  loss reads `ids[:, :-1]` to predict `ids[:, 1:]` where `mask[:, 1:]` is 1;
- the value differentiated is `prtcore.prt_loss` (mean over the masked target tokens) over the shared vocabulary
  (`len(tokenizer_vocab(source.tokenizer))`), with the base logits (and the hidden states a `linear` /
  `transformer` reward reads) of `source` held constant;
- the result maps every trainable tensor of the reward to its gradient, named and shaped as in the reward
  artifact: `head.weight`, `blocks.0.attn.q_proj.weight`, ... (prtcore.rewards), or PEFT's names and shapes
  for a LoRA twin (`base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight`, prtcore.adapters).

It may raise NotImplementedError (with a message) for reward kinds it does not cover: the check is skipped
with that message. A backend without the capability skips the gradient checks with the reason. The built-in
backends implement it in prt_mlx.gradients and prt_torch.gradients.
"""

from __future__ import annotations

import numpy as np

CAPABILITY = "reward_gradients"


class GradientsUnavailable(Exception):
    """The backend has no way to give reward gradients (the message says why)."""


def reward_gradients(backend, reward, source, ids, mask, *, lam: float, entropy_coeff: float) -> dict[str, np.ndarray]:
    """The backend's gradients as float64 NumPy arrays; GradientsUnavailable when it lacks the capability."""
    if CAPABILITY not in backend.capabilities:
        raise GradientsUnavailable(f"backend {backend.name!r} lacks capability {CAPABILITY!r} (no reward_gradients; "
                                   "see prtcore.testing.gradients)")
    out = backend.reward_gradients(reward, source, ids, mask, lam=lam, entropy_coeff=entropy_coeff)
    return {str(k): np.asarray(v, dtype=np.float64) for k, v in out.items()}


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
