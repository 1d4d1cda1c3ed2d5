"""The demo's steps: tokenizer, two pretrained bases, fine-tunes, rewards, evaluation. Each step is cached.

A step's output directory holds `step.json` with the settings that produced it; a rerun with the same
settings reuses it, a change recomputes it (and the steps after it, whose settings include its stamp).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import attrs

from ...config import LoRAConfig, RewardConfig, TrainingConfig
from .world import World

STAMP = "step.json"


@attrs.frozen
class DemoSettings:
    seed: int = 0
    n_a: int = 24
    n_b: int = 24
    vocab_size: int = 640
    old_base: dict = attrs.field(factory=lambda: {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
                                                  "num_attention_heads": 4, "num_key_value_heads": 4})
    new_base: dict = attrs.field(factory=lambda: {"hidden_size": 96, "num_hidden_layers": 3, "intermediate_size": 192,
                                                  "num_attention_heads": 4, "num_key_value_heads": 4})
    pretrain_iters: int = 400
    pretrain_lr: float = 3e-3
    pretrain_batch_size: int = 32
    # the task's training, the same for the rewards and the LoRA fine-tunes: steps, rate, schedule (10% warm-up,
    # then constant: it scored higher on B than cosine decay on both backends, docs/method.md)
    task_iters: int = 150
    task_lr: float = 1e-3
    task_schedule: str = "constant"
    reward_kinds: tuple[str, ...] = ("twin", "linear")
    # the twin as in the paper: a copy of the source, every weight trained (docs/method.md compares LoRA twins)
    twin_fine_tune: str = "full"
    twin_init: str = "copy"
    entropy_coeff: float = 0.01  # flattens the source's knowledge the copy carries, keeps the style's margin
    lam: float = 1.0
    batch_size: int = 16

    @classmethod
    def quick(cls, seed: int = 0) -> "DemoSettings":
        """Half the pretraining and B, and a short task. A keeps its 24 entities: with fewer training questions the
        reward's style carried over to B in some seeds only."""
        return cls(seed=seed, n_b=12, pretrain_iters=200, task_iters=60, reward_kinds=("twin",))

    def task(self) -> dict:
        """What the fine-tunes depend on (besides their base and data)."""
        return {"seed": self.seed, "iters": self.task_iters, "lr": self.task_lr, "schedule": self.task_schedule,
                "batch_size": self.batch_size}

    def reward(self, kind: str) -> dict:
        """What a reward of `kind` depends on (besides its source and data)."""
        twin = {"fine_tune": self.twin_fine_tune, "init": self.twin_init} if kind == "twin" else {}
        return {**self.task(), "kind": kind, "entropy_coeff": self.entropy_coeff, "lam": self.lam, **twin}


class Steps:
    """Runs named steps into `root`, reusing a step whose stamp matches.

    A step's stamp hashes its settings and the stamps of the steps it reads (`after`), so a change anywhere
    upstream recomputes everything downstream of it.
    """

    def __init__(self, root: Path, backend, log):
        self.root, self.backend, self.log = Path(root), backend, log  # steps go to root/<step name>

    @staticmethod
    def stamp_of(directory: Path) -> str:
        return json.loads((Path(directory) / STAMP).read_text())["stamp"]

    def run(self, name: str, settings: dict, build, after: tuple[Path, ...] = ()) -> Path:
        out = self.root / name
        settings = {**settings, "after": {Path(d).name: self.stamp_of(d) for d in after}}
        stamp = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
        marker = out / STAMP
        if marker.exists() and json.loads(marker.read_text()).get("stamp") == stamp:
            self.log(f"[cached] {name}")
            return out
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        self.log(f"[run] {name}")
        build(out)
        out.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"stamp": stamp, "settings": settings,
                                      "seconds": round(time.perf_counter() - started, 1)}, default=str))
        return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def training(iters: int, lr: float, settings: DemoSettings, **extra) -> TrainingConfig:
    extra = {"batch_size": settings.batch_size, **extra}
    return TrainingConfig(iters=iters, learning_rate=lr, steps_per_eval=iters, steps_per_report=max(1, iters // 4),
                          save_every=iters, val_batches=4, seed=settings.seed, **extra)


def build_data(world: World, out: Path) -> None:
    """The pretraining corpora and the task's data directories under `out`."""
    old_text, new_text = world.corpus(world.set_a), world.corpus(world.set_a + world.set_b)
    write_jsonl(out / "old_corpus" / "train.jsonl", [{"text": t} for t in old_text])
    write_jsonl(out / "old_corpus" / "valid.jsonl", [{"text": t} for t in old_text[:16]])
    write_jsonl(out / "new_corpus" / "train.jsonl", [{"text": t} for t in new_text])
    write_jsonl(out / "new_corpus" / "valid.jsonl", [{"text": t} for t in new_text[:16]])
    write_jsonl(out / "task" / "train.jsonl", world.task_rows(world.a_train))
    write_jsonl(out / "task" / "valid.jsonl", world.task_rows(world.a_train[:4]))  # never the held-out questions
    write_jsonl(out / "task" / "test_a.jsonl", world.task_rows(world.a_test))
    write_jsonl(out / "task" / "test_b.jsonl", world.task_rows(world.b_test))


def task_schedule(settings: DemoSettings) -> dict:
    return {"lr_schedule": settings.task_schedule, "warmup_steps": settings.task_iters // 10}


# ------------------------------------------------------------------------------------------------ training steps
def pretrain(backend, init_dir: Path, corpus_dir: Path, out: Path, settings: DemoSettings, iters: int) -> None:
    """Every weight of a random-init base trained on declarative facts (text format)."""
    from ...data import load_dataset

    tokenizer = backend.load_tokenizer(init_dir)
    data = load_dataset(corpus_dir, tokenizer, max_seq_length=64)
    config = training(iters, settings.pretrain_lr, settings, lr_schedule="cosine", warmup_steps=iters // 20,
                      batch_size=settings.pretrain_batch_size)
    backend.train_sft(init_dir, data, config, out, lora=None, iters=iters, reporter=_quiet(out))


def finetune_lora(backend, base_dir: Path, task_dir: Path, out: Path, settings: DemoSettings) -> None:
    """The usual LoRA fine-tune of a base on the task (prompts masked)."""
    from ...data import load_dataset

    data = load_dataset(task_dir, backend.load_tokenizer(base_dir), max_seq_length=64, mask_prompt=True)
    config = training(settings.task_iters, settings.task_lr, settings, mask_prompt=True, **task_schedule(settings))
    backend.train_sft(base_dir, data, config, out, lora=LoRAConfig(rank=8, num_layers=-1), iters=settings.task_iters,
                      reporter=_quiet(out))


def reward(backend, base_dir: Path, task_dir: Path, out: Path, kind: str, settings: DemoSettings) -> None:
    """A PRT reward of `kind` trained on the (old) base with the same data and budget as the LoRA fine-tune."""
    from ...training import train_reward

    config = training(settings.task_iters, settings.task_lr, settings, mask_prompt=True, max_seq_length=64,
                      **task_schedule(settings))
    reward_config = RewardConfig(kind=kind, lora=LoRAConfig(rank=8, num_layers=-1), init=settings.twin_init,
                                 fine_tune_type=settings.twin_fine_tune, entropy_coeff=settings.entropy_coeff,
                                 lam=settings.lam)
    train_reward(base_dir, task_dir, out, reward_config, config, backend=backend, reporter=_quiet(out))


def _quiet(out: Path):
    from ...reporting import TrainingReporter

    return TrainingReporter(out, quiet=True)
