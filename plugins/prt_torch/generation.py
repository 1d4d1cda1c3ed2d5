"""Generation with portable rewards: `PRTGenerator` (single and left-padded batched decoding) and
`PRTLogitsProcessor` (the same composition inside transformers' `generate`).

    gen = PRTGenerator.from_pretrained("new-base", "reward-dir")
    gen.generate("Question: ...", max_tokens=64)                  # prtcore's decoding loop
    gen.generate_batch(["a prompt", "another"], max_tokens=64)    # left padding, one forward per step
    gen.generate("Question: ...", max_tokens=64, static=True)     # static caches; one CUDA graph per step on a GPU
    ids = gen.model.target.generate(input_ids, logits_processor=[gen.logits_processor()], do_sample=False)
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import LogitsProcessor

from prtcore.tokens import pad_id_of
from prtcore.errors import GenerationError
from prtcore.model import PRTForCausalLM, lam_list
from prtcore.plugins import get_backend
from prtcore.sampling import BaseComposer, BatchProgress, Generation, PRTComposer, Sampler, align_vocab, generation_args


class _Stepper:
    """Runs the target (None: transformers runs it), each reward and the sources they read, each with its own
    cache, on (B, n) new tokens. `attention_mask` covers the sequence so far (B, past + n), `position_ids` the
    new tokens (B, n). Returns the last position's logits: the target's (or None), then each reward's.
    """

    def __init__(self, target, rewards, sources):
        reading = {id(s) for r, s in zip(rewards, sources) if s is not None and r.reads_source_hidden}
        self.bases = {} if target is None else {id(target): [target, target.make_cache(), id(target) in reading, None]}
        self.rewards = []
        for reward, source in zip(rewards, sources):
            feeder = None
            if source is not None and reward.reads_source_hidden:
                self.bases.setdefault(id(source), [source, source.make_cache(), True, None])
                feeder = id(source)
            self.rewards.append((reward, reward.make_cache(), feeder))
        self.target = None if target is None else id(target)

    def __call__(self, ids, attention_mask, position_ids) -> list:
        for entry in self.bases.values():
            lm, cache, hidden, _ = entry
            entry[3] = lm.forward(ids, cache, hidden=hidden, attention_mask=attention_mask, position_ids=position_ids)
        logits = [None if self.target is None else self.bases[self.target][3].logits[:, -1]]
        for reward, cache, feeder in self.rewards:
            hidden = self.bases[feeder][3].hidden if feeder is not None else None
            logits.append(reward.forward(ids, cache, source_hidden=hidden, attention_mask=attention_mask,
                                         position_ids=position_ids)[:, -1])
        return logits


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention_mask, position_ids), each (B, L), for left-padded rows."""
    if any(len(r) == 0 for r in rows):
        raise GenerationError("a prompt is empty: give at least one token (a BOS token or some text)")
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


class PRTGenerator:
    """Generation for a `PRTForCausalLM` on the torch backend (the target swapped freely, the rewards fixed)."""

    def __init__(self, model: PRTForCausalLM):
        self.model = model
        self._static = None

    @classmethod
    def from_pretrained(cls, base, reward=None, *, source=None, lam=None, **options) -> "PRTGenerator":
        """Target `base` with reward artifact(s) `reward`; options go to `TorchBackend.load_base`."""
        return cls(PRTForCausalLM.from_pretrained(base, reward, get_backend("torch"), source=source, lam=lam, **options))

    @property
    def tokenizer(self):
        return self.model.tokenizer

    # ------------------------------------------------------------------------------------------ one sequence
    def generate(self, prompt, *, static: bool = False, **kwargs) -> str:
        """prtcore's decoding loop (same arguments as PRTForCausalLM.generate); `static=True` runs it over static
        caches, the whole step one CUDA graph on a GPU (prt_torch.graphs; llama-layout models)."""
        if static:
            return self.static().generate(prompt, **kwargs)
        return self.model.generate(prompt, **kwargs)

    def stream(self, prompt, *, static: bool = False, **kwargs):
        if static:
            return (step.text for step in self.static().stream_steps(prompt, **kwargs) if step.text)
        return self.model.stream(prompt, **kwargs)

    def generate_ids(self, prompt, *, static: bool = False, **kwargs) -> list[int]:
        """Generated token ids, without a final EOS."""
        eos = set(self.model.target.eos_token_ids)
        steps = self.static().stream_steps(prompt, **kwargs) if static else self.model.stream_steps(prompt, **kwargs)
        return [s.token for s in steps if s.token not in eos]

    def static(self, **options):
        """The model's prt_torch.graphs.StaticDecoding, made on first use and kept (its caches and graph too)."""
        if self._static is None:
            from .graphs import StaticDecoding

            self._static = StaticDecoding(self.model, **options)
        return self._static

    # ------------------------------------------------------------------------------------------ batches
    def generate_batch(self, prompts: Sequence, **kwargs) -> list[str]:
        """Texts for several prompts decoded together (see `batch`)."""
        return [g.text for g in self.batch(prompts, **kwargs)]

    @torch.no_grad()
    def batch(self, prompts: Sequence, *, max_tokens: int = 256, stop: Sequence[str] = (), **sampling) -> list[Generation]:
        """Decode prompts (texts or token ids) together with left padding; greedy results equal one-by-one decoding.

        Sampling settings as for `Sampler`; with a seed, draws differ from one-by-one sampling (one noise draw
        per step for the whole batch).
        """
        max_tokens, stop = generation_args(max_tokens, stop)
        model, xp = self.model, self.model.backend.xp
        rows = model.encode_batch(prompts)
        if not rows:
            return []
        ids, mask, positions = left_pad(rows, pad_id_of(self.tokenizer, model.rows), model.target.device)
        if max_tokens == 0:
            return [Generation([], "", "length") for _ in rows]
        sampler = Sampler(**sampling)
        composer = model.composer or BaseComposer(model.vocab_size)
        rng, eos = xp.make_rng(sampler.seed), set(model.target.eos_token_ids)
        step = _Stepper(model.target, model.rewards, model.sources)
        logits = step(ids, mask, positions)
        progress = BatchProgress(rows, self.tokenizer, eos, stop)
        for index in range(max_tokens):
            logprobs = composer(*logits, xp=xp)
            if sampler.repetition_penalty != 1.0:
                logprobs = torch.cat([sampler.filtered(logprobs[i:i + 1], h, xp=xp)
                                      for i, h in enumerate(progress.histories)])
            else:
                logprobs = sampler.filtered(logprobs, xp=xp)
            tokens = [int(t) for t in xp.to_numpy(sampler.sample(logprobs, rng, xp=xp)).reshape(-1)]
            if progress.add(tokens, last=index == max_tokens - 1):
                break
            new = torch.tensor([[t] for t in tokens], dtype=torch.long, device=ids.device)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = positions[:, -1:] + 1
            logits = step(new, mask, positions)
        return progress.results()

    # ------------------------------------------------------------------------------------------ transformers
    def logits_processor(self, attention_mask=None) -> "PRTLogitsProcessor":
        """A processor applying this model's rewards inside `target.generate` (a fresh one per generate call)."""
        return PRTLogitsProcessor(self.model.rewards, self.model.lams, sources=self.model.sources,
                                  vocab_size=self.model.vocab_size, attention_mask=attention_mask)


class PRTLogitsProcessor(LogitsProcessor):
    """Adds rewards to a transformers model's scores: log_softmax(scores) + Σ r_i/λ_i over the shared vocabulary.

    Keeps each reward's cache (and, for linear/transformer rewards, its source's) and feeds them only the tokens
    it has not seen. `attention_mask` is the prompt's mask when `generate` gets left-padded prompts. Returns
    normalised log-probs, -inf beyond the shared vocabulary. One instance serves one `generate` call (a shorter
    input than already seen starts over; `reset()` does so explicitly). A source that is also the target runs a
    second forward here, since a processor sees only scores.
    """

    def __init__(self, rewards, lams=None, *, sources=None, vocab_size: int | None = None, attention_mask=None):
        self.rewards = list(rewards) if isinstance(rewards, (list, tuple)) else [rewards]
        self.lams = [r.config.lam for r in self.rewards] if lams is None else lam_list(lams, len(self.rewards))
        self.sources = list(sources) if sources is not None else [r.source for r in self.rewards]
        for reward, source in zip(self.rewards, self.sources):
            if reward.reads_source_hidden and source is None:
                raise GenerationError(f"a {reward.config.kind} reward needs its source model in the logits processor")
        known = [len(s.tokenizer) for s in self.sources if s is not None]
        self.vocab_size = vocab_size or (known[0] if known else min(r.vocab_size for r in self.rewards))
        self.composer = PRTComposer(tuple(self.lams), self.vocab_size)
        self.prompt_mask = attention_mask
        self.reset()

    def reset(self) -> None:
        self.seen, self.mask, self.positions, self.step = 0, None, None, None

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        length = input_ids.shape[1]
        if length <= self.seen:
            self.reset()
        new = input_ids[:, self.seen:]
        if self.seen == 0:
            self.step = _Stepper(None, self.rewards, self.sources)
            mask = self.prompt_mask if self.prompt_mask is not None else torch.ones_like(input_ids)
            self.mask = mask.to(input_ids.device).long()
            self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        else:
            self.mask = torch.cat([self.mask, torch.ones_like(new)], dim=1)
            self.positions = self.positions[:, -1:] + torch.arange(1, new.shape[1] + 1, device=new.device)
        self.seen = length
        rewards = self.step(new, self.mask, self.positions)[1:]
        xp = self.rewards[0].backend.xp
        composed = self.composer(scores.float(), *[r.to(scores.device) for r in rewards], xp=xp)
        return align_vocab(composed, scores.shape[-1], xp=xp).to(scores.dtype)
