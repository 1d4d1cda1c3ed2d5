"""`prt demo`: a reward trained once on an old base keeps working on a newer, bigger base.

Methods compared on held-out questions about A (both bases know the facts) and about B (only the new base
knows them), by exact match of greedy answers:

    new base alone            the new base, never taught the answer style
    old base + LoRA           the usual fine-tune of the old base
    PRT <kind> on old base    a reward trained on the old base, applied to it
    PRT <kind> on new base    the same reward applied to the new base (two models per token)
    EFT on new base           new base + (old+LoRA − old): three models per token
    new base + LoRA (oracle)  the new base fine-tuned directly
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import attrs

from .pipeline import DemoSettings, Steps, build_data, finetune_lora, pretrain, reward
from .world import ANSWER, FACT_TEMPLATES, MENTION_TEMPLATES, PROMPT, World


def named_capital(text: str) -> str:
    """The last word of an answer, without punctuation ("Answer: Dunmere." and "Dunmere" give Dunmere)."""
    words = text.replace(".", " ").replace(":", " ").split()
    return words[-1] if words else ""


def answer(model, prompt: str) -> tuple[str, int, float]:
    """The greedy answer to `prompt` (up to the end of its line), its token count and the seconds it took."""
    start = time.perf_counter()
    steps = list(model.stream_steps(model.encode(prompt), max_tokens=24, stop=["\n"]))
    return "".join(s.text for s in steps), len(steps), time.perf_counter() - start


def evaluate(model, rows: list[dict]) -> dict:
    """Exact match of greedy answers (format included) and the share naming the right capital in any format."""
    exact = named = tokens = 0
    seconds = 0.0
    for row in rows:
        text, n, dt = answer(model, row["prompt"])
        exact += text.strip() == row["completion"].strip()
        named += named_capital(text) == named_capital(row["completion"])
        tokens, seconds = tokens + n, seconds + dt
    n = max(len(rows), 1)
    return {"exact_match": exact / n, "capital": named / n, "tokens": tokens, "seconds": seconds}


def measure(name: str, load, rows_a: list[dict], rows_b: list[dict], backend) -> dict:
    """One method's accuracy on both splits, its time per generated token (after one warm-up answer) and the
    peak memory of loading and running it."""
    with backend.memory_meter() as meter:
        model = load()
        answer(model, rows_a[0]["prompt"])
        a, b = evaluate(model, rows_a), evaluate(model, rows_b)
    return {"method": name, "models_per_token": len(model.scorers()), "A": a["exact_match"], "B": b["exact_match"],
            "A_capital": a["capital"], "B_capital": b["capital"],
            "ms_per_token": round(1000 * (a["seconds"] + b["seconds"]) / max(a["tokens"] + b["tokens"], 1), 3),
            "peak_mb": round(meter.bytes / 2**20, 2), "memory_measure": meter.measure}


def run_demo(out_dir="prt-demo", *, backend=None, settings: DemoSettings | None = None, log=None) -> dict:
    from ...model import ComposedLM, PRTForCausalLM
    from ...plugins import get_backend
    from ...testing.checkpoints import make_tiny_checkpoint, make_tokenizer

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    settings = settings or DemoSettings()
    backend = get_backend(backend)
    world = World.generate(settings.seed, settings.n_a, settings.n_b)
    root = Path(out_dir)
    started = time.perf_counter()
    steps = Steps(root, backend, log)
    world_text = {"world": attrs.asdict(world), "templates": [*FACT_TEMPLATES, *MENTION_TEMPLATES, PROMPT, ANSWER]}
    data_dir = steps.run("data", world_text, lambda out: build_data(world, out))
    data = {name: data_dir / name for name in ("old_corpus", "new_corpus", "task")}
    tok = steps.run("tokenizer", {"vocab": settings.vocab_size},
                    lambda out: make_tokenizer(out, world.tokenizer_corpus(), settings.vocab_size, chat_template=None),
                    after=(data_dir,))

    def base(name, shape, corpus, seed_offset, iters):
        init = steps.run(f"{name}_init", {"seed": settings.seed + seed_offset, **shape},
                         lambda out: make_tiny_checkpoint(out, "llama", tokenizer_dir=tok, seed=settings.seed + seed_offset,
                                                          init_std=0.02, **shape), after=(tok,))
        pre = {"iters": iters, "lr": settings.pretrain_lr, "batch_size": settings.pretrain_batch_size, "seed": settings.seed}
        return steps.run(f"{name}_base", pre, lambda out: pretrain(backend, init, data[corpus], out, settings, iters),
                         after=(init, data_dir))

    old = base("old", settings.old_base, "old_corpus", 1, settings.pretrain_iters)
    # The new base reads the facts of A and B, and trains twice as long.
    new = base("new", settings.new_base, "new_corpus", 2, 2 * settings.pretrain_iters)
    task = attrs.asdict(settings)  # every setting: a change anywhere retrains the fine-tunes and rewards
    old_lora = steps.run("old_lora", task, lambda out: finetune_lora(backend, old, data["task"], out, settings),
                         after=(old, data_dir))
    new_lora = steps.run("new_lora", task, lambda out: finetune_lora(backend, new, data["task"], out, settings),
                         after=(new, data_dir))
    rewards = {kind: steps.run(f"reward_{kind}", {**task, "kind": kind},
                               lambda out, kind=kind: reward(backend, old, data["task"], out, kind, settings),
                               after=(old, data_dir))
               for kind in settings.reward_kinds}

    methods = [("new base alone", lambda: ComposedLM.from_pretrained(new, method="base", backend=backend)),
               ("old base + LoRA", lambda: ComposedLM.from_pretrained(old_lora, method="base", backend=backend))]
    for kind, rdir in rewards.items():
        methods.append((f"PRT {kind} on old base", lambda r=rdir: PRTForCausalLM.from_pretrained(old, r, backend=backend)))
        methods.append((f"PRT {kind} on new base", lambda r=rdir: PRTForCausalLM.from_pretrained(new, r, backend=backend)))
    methods.append(("EFT on new base", lambda: ComposedLM.from_pretrained(new, finetuned=old_lora, source=old,
                                                                        method="eft", backend=backend)))
    methods.append(("new base + LoRA (oracle)", lambda: ComposedLM.from_pretrained(new_lora, method="base", backend=backend)))

    rows_a, rows_b = world.task_rows(world.a_test), world.task_rows(world.b_test)  # test_a/test_b.jsonl
    results = []
    for name, load in methods:
        log(f"[eval] {name}")
        results.append(measure(name, load, rows_a, rows_b, backend))
    result = {"backend": backend.name, "seed": settings.seed, "entities": {"A": settings.n_a, "B": settings.n_b},
              "questions": {"A": len(rows_a), "B": len(rows_b)}, "results": results,
              "seconds": round(time.perf_counter() - started, 1)}
    from .report import write_report

    write_report(result, root / backend.name)
    return result
