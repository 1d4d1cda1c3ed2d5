"""`MLXBackend.reward_gradients` (capability "reward_gradients"): the gradients of the PRT loss that training
computes, for the conformance suite (the contract: prtcore.testing.gradients)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from prtcore.adapters import mlx_to_peft_tensors
from prtcore.objectives import prt_loss
from prtcore.sampling import align_vocab, tokenizer_vocab


def reward_gradients(backend, reward, source, ids, mask, *, lam, entropy_coeff) -> dict[str, np.ndarray]:
    """{name: gradient} of every trainable tensor of `reward` (a LoRA twin's adapter in PEFT's names)."""
    xp, vocab = backend.xp, len(tokenizer_vocab(source.tokenizer))
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
        raise NotImplementedError("the mlx backend gives gradients of LoRA twins without other trained tensors")
    return mlx_to_peft_tensors(lora)
