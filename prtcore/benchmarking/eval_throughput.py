"""`prt bench --eval-batches`: tokens/s of the greedy decoding `prt eval` runs (prtcore.evaluation.greedy_answers)
at batch 1, 8 and 32, for PRT (the target + a twin reward: two forwards per token) and the target alone, on each
backend, with PRT's cost against the target's and each batch's gain over batch 1 side by side.

The models are those of `prt bench --serve` (prtcore.serve.bench.build_models: a random target of the config's
target shape and an untrained reward of kind `gen_reward` on it). Every batch size decodes the same 32 prompts of
lengths around `prompt_tokens`, `max_tokens` tokens each (fewer where a row meets its EOS); tokens/s counts the
generated tokens over the wall time of the whole set: the median of `repeats` side-by-side rounds after a warm-up.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

BATCHES = (1, 8, 32)


def timed(model, requests, batch_size: int) -> tuple[float, int]:
    """(seconds, generated tokens) of `greedy_answers` over `requests` at `batch_size`."""
    from ..evaluation import greedy_answers

    start = time.perf_counter()
    answers = greedy_answers(model, requests, batch_size=batch_size)
    seconds = time.perf_counter() - start
    if answers.batch_size != batch_size:
        raise RuntimeError(f"batch size {batch_size} fell back to {answers.batch_size}: {answers.fallback}")
    return seconds, sum(len(g.tokens) for g in answers.generations)


def measure(models: dict, requests, repeats: int, log) -> dict:
    """{batch size: {label: {"tokens_per_s" (median over rounds), "tokens", "rounds"}}} for every model of `models`
    at every size of BATCHES, side by side: one run of each per round, the order rotating from round to round so
    that load from other processes falls on each alike (after one warm-up run of each)."""
    keys = [(size, label) for size in BATCHES for label in models]
    for size, label in keys:
        timed(models[label], requests[:size], size)  # first calls compile and allocate
    rates: dict = {key: [] for key in keys}
    tokens: dict = {}
    for r in range(repeats):
        for size, label in keys[r % len(keys):] + keys[:r % len(keys)]:
            seconds, tokens[size, label] = timed(models[label], requests, size)
            rates[size, label].append(tokens[size, label] / seconds)
            log(f"  round {r + 1}/{repeats} {label}, batch {size}: {rates[size, label][-1]:.1f} tok/s")
    return {size: {label: {"tokens_per_s": statistics.median(rates[size, label]), "tokens": tokens[size, label],
                           "rounds": repeats} for label in models} for size in BATCHES}


def run(backends: list[str], config, *, workdir, log=None) -> dict:
    """Measure each backend; the JSON-ready result with a markdown "table"."""
    from ..evaluation import Request
    from ..model import PRTForCausalLM
    from ..plugins import get_backend
    from ..serve.bench import build_models, prompts

    log = log or (lambda message: None)
    requests = [Request(p, config.max_tokens) for p in prompts(config, max(BATCHES))]
    results = {}
    for name in backends:
        backend = get_backend(name)
        backend.require("batched", "decode batches")
        prt = build_models(backend, config, Path(workdir)).prt
        log(f"eval batches: {name}, {len(requests)} prompts, {config.max_tokens} tokens each")
        results[name] = measure({"target": PRTForCausalLM(backend, prt.target), "prt": prt}, requests,
                                config.repeats, log)
    return {"kind": "eval_batches", "batches": list(BATCHES), "prompts": len(requests), "max_tokens": config.max_tokens,
            "target": str(config.target), "reward_kind": config.gen_reward, "results": results,
            "table": table(results)}


def table(results: dict) -> str:
    """One row per backend and batch size: tokens/s of the target alone and of PRT, PRT over the target, and each
    over its own batch-1 rate."""
    head = ("| backend | batch | target tok/s | PRT tok/s | PRT / target | target vs batch 1 | PRT vs batch 1 |\n"
            "|---|---|---|---|---|---|---|")
    lines = [head]
    for name, rows in results.items():
        first = rows[BATCHES[0]]
        for size, row in rows.items():
            target, prt = row["target"]["tokens_per_s"], row["prt"]["tokens_per_s"]
            lines.append(f"| {name} | {size} | {target:.0f} | {prt:.0f} | {prt / target:.2f} | "
                         f"{target / first['target']['tokens_per_s']:.2f}x | "
                         f"{prt / first['prt']['tokens_per_s']:.2f}x |")
    return "\n".join(lines)
