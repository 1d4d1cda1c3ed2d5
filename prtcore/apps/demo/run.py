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

import statistics
import sys
import time
from pathlib import Path

import attrs
import numpy as np

from .margins import answer_start_margins
from .pipeline import DemoSettings, Steps, build_data, finetune_lora, pretrain, reward
from .world import ANSWER, FACT_TEMPLATES, MENTION_TEMPLATES, PROMPT, World

# The cost table: rounds of every method in turn, over every third held-out question.
COST_ROUNDS = 3
COST_PROMPT_STRIDE = 3


def named_capital(text: str) -> str:
    """The last word of an answer, without punctuation ("Answer: Dunmere." and "Dunmere" give Dunmere)."""
    words = text.replace(".", " ").replace(":", " ").split()
    return words[-1] if words else ""


def answer(model, prompt: str) -> dict:
    """The greedy answer to `prompt` (up to the end of its line) and its timing: the first token (prompt read and
    first step) apart from the decoding steps after it."""
    start = time.perf_counter()
    first_at, text, steps = None, "", 0
    for step in model.stream_steps(model.encode(prompt), max_tokens=24, stop=["\n"]):
        first_at = first_at or time.perf_counter()
        text, steps = text + step.text, steps + 1
    end = time.perf_counter()
    return {"text": text, "decode_tokens": max(steps - 1, 0), "decode_seconds": end - (first_at or end),
            "first_seconds": (first_at or end) - start}


def evaluate(model, rows: list[dict]) -> dict:
    """Exact match of greedy answers (format included) and the share naming the right capital in any format."""
    exact = named = 0
    for row in rows:
        text = answer(model, row["prompt"])["text"]
        exact += text.strip() == row["completion"].strip()
        named += named_capital(text) == named_capital(row["completion"])
    n = max(len(rows), 1)
    return {"exact_match": exact / n, "capital": named / n}


def measure(name: str, load, rows_a: list[dict], rows_b: list[dict], backend) -> tuple[dict, object]:
    """One method's accuracy on both splits and the peak memory of loading and running it; for a PRT model, the
    margins at the first answer token (prtcore.apps.demo.margins). Returns the figures and the loaded model (its
    time per token is measured afterwards, side by side with the other methods: `interleaved_costs`)."""
    with backend.memory_meter() as meter:
        model = load()
        answer(model, rows_a[0]["prompt"])
        a, b = evaluate(model, rows_a), evaluate(model, rows_b)
    margins = {}
    if getattr(model, "rewards", None):
        margins = {"margins": {"A": answer_start_margins(model, rows_a), "B": answer_start_margins(model, rows_b)}}
    return {**margins, "method": name, "models_per_token": len(model.scorers()), "A": a["exact_match"], "B": b["exact_match"],
            "A_capital": a["capital"], "B_capital": b["capital"],
            "peak_mb": round(meter.bytes / 2**20, 2), "memory_measure": meter.measure}, model


def interleaved_costs(models: dict, prompts: list[str], rounds: int = COST_ROUNDS) -> dict[str, float]:
    """Each model's decoding time per token (ms; each answer's first token, which reads the prompt, left out):
    the median over `rounds` rounds, each decoding `prompts` with every model in turn, in an order that rotates, so
    that a machine busy with other work slows every method alike."""
    names = list(models)
    samples = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            outs = [answer(models[name], prompt) for prompt in prompts]
            tokens = sum(o["decode_tokens"] for o in outs)
            samples[name].append(1000 * sum(o["decode_seconds"] for o in outs) / max(tokens, 1))
    return {name: round(statistics.median(values), 3) for name, values in samples.items()}


def run_demo(out_dir="prt-demo", *, backend=None, settings: DemoSettings | None = None, seeds: int = 1,
             log=None) -> dict:
    """The demo for `seeds` seeds from `settings.seed` on, each cached in OUT/<backend>/seed<N>/; the report
    (mean ± standard deviation over the seeds, and every seed's figures) goes to OUT/<backend>/."""
    from ...plugins import get_backend
    from .report import summarize, write_report

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    settings = settings or DemoSettings()
    backend = get_backend(backend)
    started = time.perf_counter()
    directory = Path(out_dir) / backend.name
    runs = []
    for seed in range(settings.seed, settings.seed + seeds):
        log(f"seed {seed}")
        runs.append(run_seed(directory / f"seed{seed}", backend, attrs.evolve(settings, seed=seed), log))
    result = summarize(backend.name, runs, seconds=round(time.perf_counter() - started, 1))
    written = write_report(result, directory)
    for line in result["warnings"]:
        log(f"warning: {line}")
    log(wrote_line(directory, written, seeds=[settings.seed + i for i in range(seeds)]))
    return result


def wrote_line(directory: Path, written: list[Path], *, seeds: list[int]) -> str:
    """What the demo wrote and where: the report's files (the chart, or why it is missing) and the cache."""
    from ...reporting import MATPLOTLIB_MISSING

    what = {"demo.md": "the table", "demo.json": "every figure", "demo.png": "the chart"}
    files = ", ".join(f"{path} ({what.get(path.name, 'report')})" for path in written)
    chart = "" if any(p.name == "demo.png" for p in written) else f"; demo.png not written: {MATPLOTLIB_MISSING}"
    cache = ", ".join(str(directory / f"seed{seed}") for seed in seeds)
    return f"prt demo: wrote {files}{chart}; models and rewards cached in {cache}"


def run_seed(root: Path, backend, settings: DemoSettings, log) -> dict:
    """One seed's world, bases, fine-tunes and rewards (cached in `root`), and every method's figures."""
    from ...model import ComposedLM, PRTForCausalLM
    from ...testing.checkpoints import make_tiny_checkpoint, make_tokenizer

    world = World.generate(settings.seed, settings.n_a, settings.n_b)
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
    old_lora = steps.run("old_lora", settings.task(), lambda out: finetune_lora(backend, old, data["task"], out, settings),
                         after=(old, data_dir))
    new_lora = steps.run("new_lora", settings.task(), lambda out: finetune_lora(backend, new, data["task"], out, settings),
                         after=(new, data_dir))
    rewards = {kind: steps.run(f"reward_{kind}", settings.reward(kind),
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
    results, models = [], {}
    for name, load in methods:
        log(f"[eval] {name}")
        figures, models[name] = measure(name, load, rows_a, rows_b, backend)
        results.append(figures)
    log("[cost] every method in turn")
    costs = interleaved_costs(models, [row["prompt"] for row in (rows_a + rows_b)[::COST_PROMPT_STRIDE]])
    for figures in results:
        figures["ms_per_token"] = costs[figures["method"]]
    out = {"seed": settings.seed, "entities": {"A": settings.n_a, "B": settings.n_b},
           "questions": {"A": len(rows_a), "B": len(rows_b)}, "results": results,
           "mflop_per_token": {"new base": round(2 * parameters(new) / 1e6, 3)}}
    if "linear" in rewards:
        from .linear_probe import linear_probe

        out["linear_probe"] = linear_probe(backend, backend.load_base(old), world.task_rows(world.a_train),
                                           rows_a + rows_b)
    return out


def parameters(checkpoint: Path) -> int:
    """Weights of a checkpoint, read from its safetensors headers."""
    from safetensors import safe_open

    total = 0
    for file in Path(checkpoint).glob("*.safetensors"):
        with safe_open(str(file), framework="numpy") as f:
            for key in f.keys():
                total += int(np.prod(f.get_slice(key).get_shape()))
    return total
