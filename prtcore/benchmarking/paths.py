"""Backend-neutral generation paths: prtcore's decoding loop over any Generative, and a reward decoding alone."""

from __future__ import annotations

from ..model import ComposedLM, Generative, PRTForCausalLM, _BaseScorer, _RewardScorer
from ..sampling import BaseComposer, Sampler, decode
from .models import random_prompt
from .timing import token_clock


class RewardAlone(Generative):
    """A reward decoding on its own, its logits taken as a model's: the second of PRT's two forward passes.

    A `linear` / `transformer` reward runs its source (for the hidden states) and its head; a twin runs itself.
    `lm` is the base whose tokenizer and EOS ids the loop uses.
    """

    reward_alone = True

    def __init__(self, backend, reward, source, lm):
        self.backend, self.target = backend, lm
        self.rewards = [reward]
        self.sources = [source if reward.reads_source_hidden else None]
        self.vocab_size = len(lm.tokenizer)
        self.composer = BaseComposer(self.vocab_size)

    def active_composer(self):
        return self.composer

    def scorers(self):
        reward, source = self.rewards[0], self.sources[0]
        if source is not None:
            return [_RewardScorer(reward, _BaseScorer(source, True), True)]
        return [_RewardScorer(reward, None, False)]


def loop_path(model: Generative, prompt, max_tokens: int, *, pipeline: bool, tokenizer=None):
    """A timed run of prtcore's decoding loop (greedy, no EOS) over `model`'s scorers."""
    backend = model.backend

    def run(n=max_tokens):
        steps = decode(model.scorers(), model.active_composer(), Sampler(), prompt, xp=backend.xp, max_tokens=n,
                       to_backend=backend.asarray, eos_ids=(), tokenizer=tokenizer or model.tokenizer,
                       pipeline=pipeline)
        return token_clock(steps, lambda s: s.token)

    return run


def generation_models(backend, config, target, source, finetuned, reward) -> tuple:
    """What the generation bench decodes on either backend: (feeder: the reward's source when it reads hidden
    states, else None; prt: target + reward; eft: target, fine-tuned source, source; the target alone; the
    reward alone; the random prompt)."""
    feeder = source if reward.reads_source_hidden else None
    prt = PRTForCausalLM(backend, target, [reward], sources=[feeder])
    eft = ComposedLM(backend, [target, finetuned, source], "eft")
    alone = PRTForCausalLM(backend, target)
    reward_alone = RewardAlone(backend, reward, source, target)
    return feeder, prt, eft, alone, reward_alone, random_prompt(prt.vocab_size, config.prompt_tokens, config.seed)
