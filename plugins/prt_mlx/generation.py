"""A portable reward as an mlx-lm logits processor, for `mlx_lm.generate` / `stream_generate`.

    from mlx_lm import generate
    proc = PRTLogitsProcessor(reward, source=source_lm)      # source: for linear/transformer rewards
    text = generate(target.model, target.tokenizer, prompt, max_tokens=64, logits_processors=[proc])
"""

from __future__ import annotations

import mlx.core as mx

from prtcore.errors import ConfigError, GenerationError
from prtcore.sampling import align_vocab

from .namespace import MLX


class PRTLogitsProcessor:
    """`(tokens, logits) -> log_softmax(logits) + reward / λ` with the reward's own KV caches.

    mlx-lm calls it with the whole token history (the prompt on the first call); only tokens it has not yet seen
    are fed to the reward (and to `source`, whose hidden states linear/transformer rewards read). Ids at or beyond
    `vocab_size` (default: the reward's shared tokenizer length), e.g. padding rows of the target's head, get −inf.
    A processor follows one sequence: use a new one, or `reset()`, per generation. A LoRA twin created on (or
    loaded onto) a BaseLM adapts that BaseLM's mlx model in place; generate with another BaseLM's model, since
    mlx-lm would call the shared one with the adapter switched on.
    """

    def __init__(self, reward, source=None, lam: float | None = None, vocab_size: int | None = None):
        if reward.reads_source_hidden and source is None:
            raise ConfigError(f"a {reward.config.kind!r} reward reads its source's hidden states: pass source=")
        self.reward, self.source = reward, source if reward.reads_source_hidden else None
        self.lam = reward.config.lam if lam is None else float(lam)
        if self.lam <= 0:
            raise ConfigError(f"lam={self.lam!r}: must be > 0")
        self.vocab_size = vocab_size if vocab_size is not None else getattr(reward, "shared_vocab", None)
        self.reset()

    def reset(self) -> None:
        self.seen = 0
        self.reward_cache = self.reward.make_cache()
        self.source_cache = self.source.make_cache() if self.source is not None else None

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        tokens = tokens.reshape(-1)
        if tokens.shape[0] <= self.seen:
            raise GenerationError("PRTLogitsProcessor: the token history did not grow; use a new processor (or reset()) per generation")
        new = tokens[self.seen:][None]
        self.seen = tokens.shape[0]
        hidden = None
        if self.source is not None:
            hidden = self.source.forward(new, self.source_cache, hidden=True).hidden
        reward = self.reward.forward(new, self.reward_cache, source_hidden=hidden)[:, -1, :]
        width = logits.shape[-1]
        out = MLX.log_softmax(logits.astype(mx.float32)) + align_vocab(reward, width, fill=0.0, xp=MLX) / self.lam
        if self.vocab_size is not None and self.vocab_size < width:
            out = mx.where(mx.arange(width) < self.vocab_size, out, -mx.inf)
        return out
