"""`prt demo`: the smallest complete PRT run, with nothing downloaded.

It builds a synthetic question-answering task and a tokenizer for it, two tiny random base models that share
that tokenizer (a *source* and a differently shaped *target* whose output layer has 64 extra rows), trains a
reward on the source, saves it, loads it onto the target and reports the held-out negative log-likelihood of
the answers for each base alone and with the reward. Random bases know nothing, so what transfers here is
the reward itself: the numbers show the mechanics (train once, reuse on another base), not knowledge transfer.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from .config import RewardConfig, TrainingConfig

SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "dor", "sil", "tha", "bru", "nel", "qua", "zer"]
TEMPLATE = "### Instruction: What is the capital of {country}?\n### Response:"


def make_world(seed: int, n: int = 40) -> list[tuple[str, str]]:
    rng = random.Random(seed)

    def name(k):
        return "".join(rng.choice(SYLLABLES) for _ in range(k)).capitalize()

    pairs, seen = [], set()
    while len(pairs) < n:
        country, capital = name(2), name(3)
        if country not in seen:
            seen.add(country)
            pairs.append((country, capital))
    return pairs


def write_task(pairs, data_dir: Path) -> None:
    rows = [{"prompt": TEMPLATE.format(country=c), "completion": f" The capital of {c} is {k}."} for c, k in pairs]
    cut = int(0.8 * len(rows))
    data_dir.mkdir(parents=True, exist_ok=True)
    for split, part in (("train", rows[:cut]), ("valid", rows[cut:]), ("test", rows[cut:])):
        (data_dir / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")


def run_demo(out_dir="prt-demo", *, backend=None, seed: int = 0, iters: int = 60, kind: str = "linear",
             quiet: bool = False) -> dict:
    from .data import load_dataset
    from .evaluation import token_nll
    from .model import PRTForCausalLM
    from .plugins import get_backend
    from .reporting import TrainingReporter
    from .testing.checkpoints import make_tiny_checkpoint, make_tokenizer
    from .training import train_reward

    backend = get_backend(backend)
    out = Path(out_dir)
    start = time.perf_counter()
    pairs = make_world(seed)
    corpus = [f"The capital of {c} is {k}." for c, k in pairs] + [TEMPLATE.format(country=c) for c, _ in pairs]
    tokenizer_dir = make_tokenizer(out / "tokenizer", corpus, vocab_size=320)
    source = make_tiny_checkpoint(out / "source", "llama", tokenizer_dir=tokenizer_dir, seed=seed)
    target = make_tiny_checkpoint(out / "target", "llama", tokenizer_dir=tokenizer_dir, seed=seed + 1,
                                  hidden_size=96, num_hidden_layers=3, intermediate_size=192, extra_vocab_rows=64)
    write_task(pairs, out / "data")
    reward_dir = out / "reward"
    training = TrainingConfig(iters=iters, learning_rate=3e-2, batch_size=8, steps_per_eval=max(1, iters // 3),
                              steps_per_report=max(1, iters // 6), save_every=iters, mask_prompt=True, seed=seed)
    reporter = TrainingReporter(reward_dir, total_steps=iters, quiet=quiet)
    summary = train_reward(source, out / "data", reward_dir, RewardConfig(kind=kind, entropy_coeff=0.0), training,
                           backend=backend, reporter=reporter)
    rows = []
    for name, path in (("source", source), ("target", target)):
        base = PRTForCausalLM.from_pretrained(path, None, backend=backend)
        prt = PRTForCausalLM.from_pretrained(path, reward_dir, backend=backend, source=source)
        test = load_dataset(out / "data", base.tokenizer, splits=("test",), optional=(), mask_prompt=True)["test"]
        rows.append({"base": name, "base_nll": token_nll(base, test)["nll"], "prt_nll": token_nll(prt, test)["nll"],
                     "sample": prt.generate(TEMPLATE.format(country=pairs[0][0]), max_tokens=16, stop=["\n"])})
    result = {"backend": backend.name, "reward": kind, "iters": iters, "results": rows,
              "best_val_loss": summary.get("best_val_loss"), "seconds": round(time.perf_counter() - start, 1)}
    (out / "demo.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def format_table(result: dict) -> str:
    lines = [f"backend {result['backend']}, reward {result['reward']}, {result['iters']} steps, {result['seconds']} s",
             "| base | NLL base alone | NLL base + reward |", "|---|---|---|"]
    for row in result["results"]:
        lines.append(f"| {row['base']} | {row['base_nll']:.3f} | {row['prt_nll']:.3f} |")
    return "\n".join(lines)
