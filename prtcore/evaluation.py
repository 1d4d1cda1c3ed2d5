"""Backend-neutral evaluation of a composed model on tokenised examples: NLL, perplexity, exact match."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .data import Example
from .model import Generative, PRTOutput


def token_nll(model: Generative, examples: Sequence[Example]) -> dict:
    """Mean negative log-likelihood per target token (mask == 1) and perplexity, one example at a time."""
    total, count, hits = 0.0, 0, 0
    for ex in examples:
        out = model([ex.ids])
        logprobs = out.logprobs if isinstance(out, PRTOutput) else out
        lp = np.asarray(model.backend.to_numpy(logprobs), dtype=np.float64)[0, :-1]
        targets = np.asarray(ex.ids[1:])
        mask = np.asarray(ex.mask[1:], dtype=bool)
        chosen = lp[np.arange(len(targets)), targets]
        total -= float(chosen[mask].sum())
        count += int(mask.sum())
        hits += int((lp.argmax(-1) == targets)[mask].sum())
    nll = total / max(count, 1)
    return {"nll": nll, "perplexity": math.exp(min(nll, 700.0)), "token_accuracy": hits / max(count, 1), "tokens": count}


def exact_match(model: Generative, prompts: Sequence[list[int]], answers: Sequence[str], *, max_tokens: int = 32,
                stop: Sequence[str] = ("\n",)) -> dict:
    """Greedy generation for each prompt; an answer counts when the stripped output equals it."""
    outputs = [model.generate(p, max_tokens=max_tokens, stop=stop).strip() for p in prompts]
    correct = [o == a.strip() for o, a in zip(outputs, answers)]
    return {"exact_match": sum(correct) / max(len(correct), 1), "outputs": outputs}
