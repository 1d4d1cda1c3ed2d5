"""Training progress, shared by every backend: a progress line, metrics.jsonl, a loss-curve PNG and a summary.

Backends call `on_train_report` / `on_val_report` with mlx-lm's report keys (iteration, train_loss,
learning_rate, iterations_per_second, tokens_per_second, trained_tokens, peak_memory; iteration, val_loss).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from .artifacts import write_json_atomic

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "loss_curve.png"
SUMMARY_FILE = "summary.json"


class TrainingReporter:
    def __init__(self, output_dir=None, *, total_steps: int | None = None, stream=sys.stderr, quiet: bool = False,
                 resume: bool = False):
        """A new run starts metrics.jsonl afresh; a resumed one keeps it until `resume_from` trims it."""
        self.dir = Path(output_dir) if output_dir is not None else None
        self.total, self.stream, self.quiet = total_steps, stream, quiet
        self.start = time.perf_counter()
        self.train: list[dict] = []
        self.val: list[dict] = []
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                (self.dir / METRICS_FILE).unlink(missing_ok=True)

    def resume_from(self, step: int) -> None:
        """A resumed run keeps the metrics logged up to the checkpoint's `step` and forgets later ones."""
        path = self.dir / METRICS_FILE if self.dir is not None else None
        if path is None or not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption
            if record.get("iteration", 0) <= step:
                kept.append(record)
                (self.val if "val_loss" in record else self.train).append(record)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, path)

    def _log(self, record: dict) -> None:
        if self.dir is None:
            return
        with open(self.dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def on_train_report(self, info: dict) -> None:
        record = {k: (float(v) if isinstance(v, float) else v) for k, v in info.items()}
        self.train.append(record)
        self._log(record)
        if not self.quiet:
            total = f"/{self.total}" if self.total else ""
            self.stream.write(
                f"step {record['iteration']}{total}  loss {record['train_loss']:.4f}  lr {record.get('learning_rate', 0):.2e}  "
                f"{record.get('tokens_per_second', 0):.0f} tok/s  peak {record.get('peak_memory', 0):.2f} GB\n"
            )
            self.stream.flush()

    def on_val_report(self, info: dict) -> None:
        record = dict(info)
        self.val.append(record)
        self._log(record)
        if not self.quiet:
            self.stream.write(f"step {record['iteration']}  val loss {record['val_loss']:.4f}\n")
            self.stream.flush()

    def finish(self, **extra) -> dict:
        """Write the loss curve and summary.json; return the summary."""
        train_time = time.perf_counter() - self.start
        tokens = self.train[-1].get("trained_tokens", 0) if self.train else 0
        summary = {
            "steps": self.train[-1]["iteration"] if self.train else 0,
            "best_val_loss": min((r["val_loss"] for r in self.val), default=None),
            "final_train_loss": self.train[-1]["train_loss"] if self.train else None,
            "time_s": round(train_time, 3),
            "tokens_per_second": round(tokens / train_time, 1) if train_time > 0 else None,
            "peak_memory_gb": max((r.get("peak_memory", 0) for r in self.train), default=0),
            **extra,
        }
        if self.dir is not None:
            write_json_atomic(self.dir / SUMMARY_FILE, summary)
            self.plot(self.dir / CURVE_FILE)
        if not self.quiet:
            self.stream.write("summary: " + json.dumps(summary) + "\n")
        return summary

    def plot(self, path: Path) -> Path | None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        fig, ax = plt.subplots(figsize=(6, 4))
        if self.train:
            ax.plot([r["iteration"] for r in self.train], [r["train_loss"] for r in self.train], label="train")
        if self.val:
            ax.plot([r["iteration"] for r in self.val], [r["val_loss"] for r in self.val], "o-", label="validation")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
