"""`TorchBackend.reward_gradients` (capability "reward_gradients"): the gradients of the PRT loss that training
computes, for the conformance suite (the contract: prtcore.testing.gradients)."""

from __future__ import annotations

import numpy as np
import torch

from prtcore.objectives import prt_loss
from prtcore.sampling import align_vocab, tokenizer_vocab


def reward_gradients(backend, reward, source, ids, mask, *, lam, entropy_coeff) -> dict[str, np.ndarray]:
    """{name: gradient} of every trainable tensor of `reward` (a LoRA twin's adapter in PEFT's names)."""
    if reward.config.kind == "twin" and reward.config.fine_tune_type != "lora":
        raise NotImplementedError("the torch backend gives gradients of linear, transformer and LoRA twin rewards")
    xp, vocab = backend.xp, len(tokenizer_vocab(source.tokenizer))
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
