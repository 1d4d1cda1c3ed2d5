"""`prt demo`: a reward trained once on an old base keeps working on a newer, bigger base.

Methods compared on held-out questions about A (both bases know the facts) and about B (only the new base
knows them), by exact match of greedy answers:

    new base alone            the new base, never taught the question format
    old base + LoRA           the usual fine-tune of the old base
    PRT <kind> on old base    a reward trained on the old base, applied to it
    PRT <kind> on new base    the same reward applied to the new base (two models per token)
    EFT on new base           new base + (old+LoRA − old): three models per token
    new base + LoRA (oracle)  the new base fine-tuned directly
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import attrs

from .pipeline import DemoSettings, Steps, build_data, finetune_lora, pretrain, reward
from .world import World


def _weights_mb(*dirs: Path) -> float:
    """Bytes of the safetensors weights the method holds in memory (base checkpoints, adapters, rewards)."""
    total = sum(f.stat().st_size for d in dirs for f in Path(d).glob("*.safetensors"))
    return round(total / 2**20, 2)


def named_capital(text: str) -> str:
    """The first word of an answer, without brackets or punctuation ("[Dunmere]" and "Dunmere." give Dunmere)."""
    words = text.replace("[", " ").replace("]", " ").replace(".", " ").split()
    return words[0] if words else ""


def evaluate(model, rows: list[dict]) -> dict:
    """Exact match of greedy answers (format included), the share naming the right capital in any format,
    and time per generated token."""
    correct, named, tokens, seconds = 0, 0, 0, 0.0
    for row in rows:
        start = time.perf_counter()
        steps = list(model.stream_steps(model.encode(row["prompt"]), max_tokens=24, stop=["\n"]))
        seconds += time.perf_counter() - start
        tokens += len(steps)
        answer = "".join(s.text for s in steps)
        correct += answer.strip() == row["completion"].strip()
        named += named_capital(answer) == named_capital(row["completion"])
    n = max(len(rows), 1)
    return {"exact_match": correct / n, "capital": named / n, "ms_per_token": 1000 * seconds / max(tokens, 1)}


def run_demo(out_dir="prt-demo", *, backend=None, settings: DemoSettings | None = None, log=None) -> dict:
    from ..model import ComposedLM, PRTForCausalLM
    from ..plugins import get_backend
    from ..testing.checkpoints import make_tiny_checkpoint, make_tokenizer

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    settings = settings or DemoSettings()
    backend = get_backend(backend)
    world = World.generate(settings.seed, settings.n_a, settings.n_b)
    root = Path(out_dir)
    started = time.perf_counter()
    steps = Steps(root, backend, log)
    data = build_data(world, root / backend.name)
    base_settings = {"seed": settings.seed, "n_a": settings.n_a, "n_b": settings.n_b}
    tok = steps.run("tokenizer", {**base_settings, "vocab": settings.vocab_size},
                    lambda out: make_tokenizer(out, world.tokenizer_corpus(), settings.vocab_size, chat_template=None))

    def base(name, shape, corpus, seed_offset, iters):
        init = steps.run(f"{name}_init", {**base_settings, **shape},
                         lambda out: make_tiny_checkpoint(out, "llama", tokenizer_dir=tok, seed=settings.seed + seed_offset,
                                                          init_std=0.02, **shape))
        pre = {**base_settings, **shape, "iters": iters, "lr": settings.pretrain_lr}
        return steps.run(f"{name}_base", pre, lambda out: pretrain(backend, init, data[corpus], out, settings, iters))

    old = base("old", settings.old_base, "old_corpus", 1, settings.pretrain_iters)
    # The new base reads twice the facts (A and B), so it trains twice as long.
    new = base("new", settings.new_base, "new_corpus", 2, 2 * settings.pretrain_iters)
    task = attrs.asdict(settings)  # every setting: a change anywhere retrains the fine-tunes and rewards
    old_lora = steps.run("old_lora", task, lambda out: finetune_lora(backend, old, data["task"], out, settings))
    new_lora = steps.run("new_lora", task, lambda out: finetune_lora(backend, new, data["task"], out, settings))
    rewards = {kind: steps.run(f"reward_{kind}", {**task, "kind": kind},
                               lambda out, kind=kind: reward(backend, old, data["task"], out, kind, settings))
               for kind in settings.reward_kinds}

    methods = [("new base alone", lambda: ComposedLM.from_pretrained(new, method="base", backend=backend), [new]),
               ("old base + LoRA", lambda: ComposedLM.from_pretrained(old_lora, method="base", backend=backend),
                [old, old_lora])]
    for kind, rdir in rewards.items():
        extra = [old] if kind != "twin" else []
        methods.append((f"PRT {kind} on old base", lambda r=rdir: PRTForCausalLM.from_pretrained(old, r, backend=backend),
                        [old, rdir]))
        methods.append((f"PRT {kind} on new base", lambda r=rdir: PRTForCausalLM.from_pretrained(new, r, backend=backend),
                        [new, rdir, *extra] if kind != "twin" else [new, old, rdir]))
    methods.append(("EFT on new base", lambda: ComposedLM.from_pretrained(new, finetuned=old_lora, source=old,
                                                                        method="eft", backend=backend),
                    [new, old, old_lora, old]))
    methods.append(("new base + LoRA (oracle)", lambda: ComposedLM.from_pretrained(new_lora, method="base", backend=backend),
                    [new, new_lora]))

    rows_a = [json.loads(line) for line in (data["task"] / "test_a.jsonl").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (data["task"] / "test_b.jsonl").read_text().splitlines()]
    results = []
    for name, load, weight_dirs in methods:
        log(f"[eval] {name}")
        model = load()
        a, b = evaluate(model, rows_a), evaluate(model, rows_b)
        results.append({"method": name, "models_per_token": len(model.scorers()), "A": a["exact_match"],
                        "B": b["exact_match"], "A_capital": a["capital"], "B_capital": b["capital"], "ms_per_token": round((a["ms_per_token"] + b["ms_per_token"]) / 2, 3),
                        "weights_mb": _weights_mb(*weight_dirs)})
    result = {"backend": backend.name, "seed": settings.seed, "entities": {"A": settings.n_a, "B": settings.n_b},
              "questions": {"A": len(rows_a), "B": len(rows_b)}, "results": results,
              "seconds": round(time.perf_counter() - started, 1)}
    from .report import write_report

    write_report(result, root / backend.name)
    return result
