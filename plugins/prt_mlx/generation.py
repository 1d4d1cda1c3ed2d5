"""Generation on mlx beyond prtcore's loop: a portable reward as an mlx-lm logits processor, for
`mlx_lm.generate` / `stream_generate`, and left-padded batched decoding.

    from mlx_lm import generate
    proc = PRTLogitsProcessor(reward, source=source_lm)      # source: for linear/transformer rewards
    text = generate(target.model, target.tokenizer, prompt, max_tokens=64, logits_processors=[proc])

    from prt_mlx.generation import generate_batch
    texts = generate_batch(model, ["a prompt", "another"], max_tokens=64)   # model: PRTForCausalLM / ComposedLM

prtcore's own loop (`PRTForCausalLM.generate`) evaluates asynchronously on mlx: see prt_mlx.namespace.AsyncEvalPipeline.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from prtcore.errors import ConfigError, GenerationError
from prtcore.sampling import BaseComposer, BatchProgress, Generation, Sampler, align_vocab, generation_args, number

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
        self.lam = reward.config.lam if lam is None else number(lam, "lam", positive=True)
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


# ------------------------------------------------------------------------------------------------ batches

class _BatchStepper:
    """Every model of a PRTForCausalLM / ComposedLM with left-padded batch caches: (B, n) ids → last logits."""

    def __init__(self, model, left_padding):
        lp = list(left_padding)
        if hasattr(model, "models"):  # ComposedLM
            self.bases = {id(m): [m, m.make_batch_cache(lp), False, None] for m in model.models}
            self.order = [id(m) for m in model.models]
            self.rewards = []
            return
        reading = {id(s) for r, s in zip(model.rewards, model.sources) if s is not None and r.reads_source_hidden}
        target = model.target
        self.bases = {id(target): [target, target.make_batch_cache(lp), id(target) in reading, None]}
        self.order = [id(target)]
        self.rewards = []
        for reward, source in zip(model.rewards, model.sources):
            feeder = None
            if source is not None and reward.reads_source_hidden:
                self.bases.setdefault(id(source), [source, source.make_batch_cache(lp), True, None])
                feeder = id(source)
            if not hasattr(reward, "make_batch_cache"):
                raise GenerationError(f"a {reward.config.kind!r} reward of this backend cannot decode batches")
            self.rewards.append((reward, reward.make_batch_cache(lp), feeder))

    def __call__(self, ids):
        for entry in self.bases.values():
            lm, cache, hidden, _ = entry
            entry[3] = lm.forward(ids, cache, hidden=hidden)
        logits = [self.bases[key][3].logits[:, -1] for key in self.order]
        for reward, cache, feeder in self.rewards:
            hidden = self.bases[feeder][3].hidden if feeder is not None else None
            logits.append(reward.forward(ids, cache, source_hidden=hidden)[:, -1])
        return logits


def batch(model, prompts, *, max_tokens: int = 256, stop=(), **sampling) -> list[Generation]:
    """Decode prompts (texts or token ids) together, left-padded, one forward of each model per step.

    `model`: a PRTForCausalLM or ComposedLM on the mlx backend. Greedy results equal one-by-one decoding;
    sampling settings as for prtcore.sampling.Sampler (with a seed, draws differ from one-by-one sampling: one
    draw per step for the whole batch). Models whose mlx-lm caches are not plain KV caches are refused.
    """
    from prtcore.tokens import pad_id_of

    max_tokens, stop = generation_args(max_tokens, stop)
    rows = model.encode_batch(prompts)
    if not rows:
        return []
    if any(len(r) == 0 for r in rows):
        raise GenerationError("a prompt is empty: give at least one token (a BOS token or some text)")
    if max_tokens == 0:
        return [Generation([], "", "length") for _ in rows]
    width = max(len(r) for r in rows)
    padding = [width - len(r) for r in rows]
    pad = pad_id_of(model.tokenizer, model.rows)
    ids = mx.array([[pad] * p + list(r) for p, r in zip(padding, rows)], dtype=mx.int32)
    xp = model.backend.xp
    sampler = Sampler(**sampling)
    composer = model.active_composer() if hasattr(model, "active_composer") else BaseComposer(model.vocab_size)
    rng, eos = xp.make_rng(sampler.seed), set(model.target.eos_token_ids)
    step = _BatchStepper(model, padding)
    logits = step(ids)
    progress = BatchProgress(rows, model.tokenizer, eos, stop)
    for index in range(max_tokens):
        logprobs = composer(*logits, xp=xp)
        if sampler.repetition_penalty != 1.0:
            logprobs = mx.concatenate([sampler.filtered(logprobs[i:i + 1], h, xp=xp)
                                       for i, h in enumerate(progress.histories)])
        elif not sampler.greedy:
            logprobs = sampler.filtered(logprobs, xp=xp)
        sampled = sampler.sample(logprobs, rng, xp=xp)
        if progress.add([int(t) for t in np.array(sampled).reshape(-1)], last=index == max_tokens - 1):
            break
        logits = step(sampled.reshape(-1, 1).astype(mx.int32))
    return progress.results()


def generate_batch(model, prompts, **kwargs) -> list[str]:
    """Texts for several prompts decoded together (see `batch`)."""
    return [g.text for g in batch(model, prompts, **kwargs)]
