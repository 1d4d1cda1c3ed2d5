"""Where the answer style is won or lost, measured at the first answer token (docs/method.md).

The composition there is `log p_base + r/λ`: the style wins when the reward's margin for ` Answer` over the
capital's first token exceeds the base's own preference for the capital (its "gap"). Both are read off one
forward pass of the PRT model over prompt + expected answer.
"""

from __future__ import annotations

import statistics

import numpy as np


def answer_start_margins(model, rows: list[dict]) -> dict:
    """Means over `rows` (nats): the reward's margin, the base's gap, and the margin left in the composition."""
    backend, tokenizer = model.backend, model.tokenizer
    reward, gap, left = [], [], []
    for row in rows:
        prompt = model.encode(row["prompt"])
        answer = tokenizer.encode(row["completion"], add_special_tokens=False)
        style, capital = answer[0], answer[2]  # " Answer" ":" " <capital's first token>"
        out = model(backend.asarray([prompt + answer]))
        at = len(prompt) - 1
        r = backend.to_numpy(out.reward)[0, at].astype(np.float64)
        base = backend.to_numpy(out.base_logprobs)[0, at].astype(np.float64)
        reward.append(r[style] - r[capital])
        gap.append(base[capital] - base[style])
        left.append(reward[-1] - gap[-1])
    mean = lambda values: round(statistics.fmean(values), 2)
    return {"reward_margin": mean(reward), "base_gap": mean(gap), "left": mean(left)}
