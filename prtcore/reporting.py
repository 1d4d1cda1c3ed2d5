"""Training progress, shared by every backend: a progress display, metrics.jsonl, a loss-curve PNG and a summary.

Backends call `on_train_report` / `on_val_report` with mlx-lm's report keys (iteration, train_loss,
learning_rate, iterations_per_second, tokens_per_second, trained_tokens, peak_memory; iteration, val_loss).

On a terminal (the stream is a TTY) progress is one bar redrawn in place (step, loss, tokens/s, memory, elapsed
and remaining time), with validation results printed above it; otherwise (a log file, a pipe) every report is
one plain line, so logs stay greppable.

A validation at iteration 0 (before the first update, as mlx-lm's at "Iter 1") is the run's starting point: it is
reported and logged, and summarised as `initial_val_loss`, but the best validation loss is a trained step's.

`sinks` (`metric_sinks`: mlx-lm's `--report-to wandb`, and tensorboard) receive every record too.

Under a multi-process launcher (torchrun, accelerate launch, mlx.launch, mpirun) only the main process (rank 0)
writes files and prints; the others report into memory only.
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
RUN_FILES = (METRICS_FILE, CURVE_FILE, SUMMARY_FILE, "prt_run.json")
MATPLOTLIB_MISSING = "matplotlib is not installed: pip install matplotlib"
RANK_VARIABLES = ("RANK", "MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")  # torchrun/accelerate, mlx.launch, MPI


def process_rank() -> int:
    """This process's rank among the processes a launcher started (0 when started alone)."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def is_main_process() -> bool:
    return process_rank() == 0


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def artifact_bytes(directory) -> int:
    """Bytes of the files a run leaves at the top of its output directory, the run's own logs excepted."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    return sum(p.stat().st_size for p in directory.iterdir()
               if p.is_file() and p.name not in RUN_FILES and not p.name.startswith("."))


class TrainingReporter:
    def __init__(self, output_dir=None, *, total_steps: int | None = None, stream=None, quiet: bool = False,
                 resume: bool = False, progress: bool | None = None, sinks=()):
        """A new run starts metrics.jsonl afresh; a resumed one keeps it until `resume_from` trims it.

        `progress`: redraw one progress bar in place (default: when `stream` is a TTY) instead of plain lines.
        `sinks`: more places every record goes (`metric_sinks`). A process other than the main one
        (`is_main_process`) writes no files and prints nothing.
        """
        if not is_main_process():
            output_dir, quiet, sinks = None, True, ()
        self.sinks = list(sinks)
        self.dir = Path(output_dir) if output_dir is not None else None
        stream = sys.stderr if stream is None else stream
        self.total, self.stream, self.quiet = total_steps, stream, quiet
        self.progress = _isatty(stream) if progress is None else bool(progress)
        self.start = time.perf_counter()
        self.first_step = 0  # the step this process started from (a resumed run: its checkpoint's)
        self._bar_shown = False
        self.train: list[dict] = []
        self.val: list[dict] = []
        self.listeners: list = []  # called after each training report (prtcore.rundir drops a replaced run)
        self._fresh_log = not resume  # a new run's first record starts metrics.jsonl over (not before: the
        # output directory's checks (prtcore.rundir) come first)

    def resume_from(self, step: int) -> None:
        """A resumed run keeps the metrics logged up to the checkpoint's `step` and forgets later ones."""
        self.first_step = int(step)
        path = self.dir / METRICS_FILE if self.dir is not None else None
        if path is None or not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption
            if step > 0 and record.get("iteration", 0) <= step:  # step 0: the run starts over, nothing is kept
                kept.append(record)
                (self.val if "val_loss" in record else self.train).append(record)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, path)

    def _log(self, record: dict) -> None:
        for sink in self.sinks:
            sink.log(record)
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        mode, self._fresh_log = ("w" if self._fresh_log else "a"), False
        with open(self.dir / METRICS_FILE, mode, encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def on_train_report(self, info: dict) -> None:
        record = {k: (float(v) if isinstance(v, float) else v) for k, v in info.items()}
        self.train.append(record)
        self._log(record)
        for listener in self.listeners:
            listener()
        if self.quiet:
            return
        if self.progress:
            self._draw_bar(record)
            return
        total = f"/{self.total}" if self.total else ""
        self.stream.write(
            f"step {record['iteration']}{total}  loss {record['train_loss']:.4f}  lr {record.get('learning_rate', 0):.2e}  "
            f"{record.get('tokens_per_second', 0):.0f} tok/s  peak {record.get('peak_memory', 0):.2f} GB\n"
        )
        self.stream.flush()

    def on_val_report(self, info: dict) -> None:
        record = dict(info)
        best = min((r["val_loss"] for r in self.trained_val()), default=None)
        self.val.append(record)
        self._log(record)
        if self.quiet:
            return
        if record["iteration"] == 0:
            mark = "  (before training)"
        else:
            mark = "  (best)" if best is None or record["val_loss"] < best else ""
        line = f"step {record['iteration']}  val loss {record['val_loss']:.4f}{mark}"
        if self.progress:
            self.stream.write("\r\x1b[K" + line + "\n")
            if self.train:
                self._draw_bar(self.train[-1])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _draw_bar(self, record: dict) -> None:
        """One line, redrawn in place: [█████░░░░] step/total  loss  tok/s  memory  elapsed<remaining."""
        import shutil

        step, elapsed = record["iteration"], time.perf_counter() - self.start
        stats = (f" {step}/{self.total or '?'}  loss {record['train_loss']:.4f}  "
                 f"{record.get('tokens_per_second', 0):.0f} tok/s  {record.get('peak_memory', 0):.2f} GB  {_clock(elapsed)}")
        done = step - self.first_step
        if self.total and done > 0 and step < self.total:
            stats += f"<{_clock(elapsed / done * (self.total - step))}"
        width = shutil.get_terminal_size((100, 20)).columns
        bar_width = max(10, min(40, width - len(stats) - 3))
        fraction = min(1.0, step / self.total) if self.total else 0.0
        filled = int(round(fraction * bar_width))
        line = f"[{'█' * filled}{'░' * (bar_width - filled)}]{stats}"
        self.stream.write("\r\x1b[K" + line[: max(width - 1, 20)])
        self.stream.flush()
        self._bar_shown = True

    def trained_val(self) -> list[dict]:
        """The validation records of trained steps (not the one before training)."""
        return [r for r in self.val if r["iteration"] > 0]

    def finish(self, **extra) -> dict:
        """Write the loss curve and summary.json; return the summary (validation loss before training and best,
        time, tokens/s, peak memory, artifact size, the loss curve's path or why there is none)."""
        train_time = time.perf_counter() - self.start
        trained = [r for r in self.train if r["iteration"] > self.first_step]
        tokens = trained[-1].get("trained_tokens", 0) - self._tokens_before(self.first_step) if trained else 0
        best = min(self.trained_val(), key=lambda r: r["val_loss"], default=None)
        initial = next((r["val_loss"] for r in self.val if r["iteration"] == 0), None)
        summary = {
            "steps": self.train[-1]["iteration"] if self.train else 0,
            **({"initial_val_loss": initial} if initial is not None else {}),
            "best_val_loss": best["val_loss"] if best else None,
            "best_val_step": best["iteration"] if best else None,
            "final_train_loss": self.train[-1]["train_loss"] if self.train else None,
            "time_s": round(train_time, 3),
            "tokens_per_second": round(tokens / train_time, 1) if train_time > 0 else None,
            "peak_memory_gb": max((r.get("peak_memory", 0) for r in self.train), default=0),
            **extra,
        }
        for sink in self.sinks:
            sink.close()
        if self.dir is not None:
            summary.setdefault("artifact_bytes", artifact_bytes(self.dir))
            curve, missing = self.plot(self.dir / CURVE_FILE)
            summary.update({"loss_curve": str(curve)} if curve else {"loss_curve_missing": missing})
            write_json_atomic(self.dir / SUMMARY_FILE, summary)
        if not self.quiet:
            if self.progress and self._bar_shown:
                self.stream.write("\n")
            self.stream.write(self.describe(summary) + "\n")
            self.stream.flush()
        return summary

    def _tokens_before(self, step: int) -> int:
        """Tokens trained up to `step` (from the metrics a resumed run kept), so tokens/s counts this run only."""
        before = [r for r in self.train if r["iteration"] <= step]
        return before[-1].get("trained_tokens", 0) if before else 0

    @staticmethod
    def describe(summary: dict) -> str:
        """The summary as one human-readable line."""
        parts = [f"{summary.get('steps', 0)} steps in {summary.get('time_s', 0):.1f} s"]
        if summary.get("initial_val_loss") is not None:
            parts.append(f"val loss {summary['initial_val_loss']:.4f} before training")
        if summary.get("best_val_loss") is not None:
            parts.append(f"best val loss {summary['best_val_loss']:.4f} (step {summary.get('best_val_step')})")
        if summary.get("tokens_per_second") is not None:
            parts.append(f"{summary['tokens_per_second']:.0f} tok/s")
        parts.append(f"peak memory {summary.get('peak_memory_gb', 0):.2f} GB")
        if summary.get("artifact_bytes") is not None:
            where = f" in {summary['artifact']}" if summary.get("artifact") else ""
            parts.append(f"artifact {human_bytes(summary['artifact_bytes'])}{where}")
        return "done: " + ", ".join(parts)

    def plot(self, path: Path) -> tuple[Path | None, str | None]:
        """(the loss curve written at `path`, None) or (None, why it was not written)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None, MATPLOTLIB_MISSING
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
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
        try:
            fig.savefig(tmp, dpi=100)
            os.replace(tmp, path)
        finally:
            plt.close(fig)
            tmp.unlink(missing_ok=True)
        return path, None


# ------------------------------------------------------------------------------------------------ --report-to
REPORT_PACKAGES = {"wandb": ("wandb", "wandb"),  # target -> (the package it needs, the module its sink imports)
                   "tensorboard": ("tensorboard", "tensorboard.summary.writer.event_file_writer")}


def check_report_targets(targets) -> None:
    """Each of `targets` ("wandb", "tensorboard") is known and its package imports, else a ConfigError naming it."""
    import importlib

    from .errors import ConfigError

    for target in targets:
        if target not in REPORT_PACKAGES:
            raise ConfigError(f"--report-to {target}: unknown (known: {', '.join(REPORT_PACKAGES)})")
        package, module = REPORT_PACKAGES[target]
        try:
            importlib.import_module(module)
        except ImportError as e:
            missing = getattr(e, "name", None) or module
            what = (f"the {package} package is not installed" if missing.split(".")[0] == package
                    else f"the {package} package cannot import {missing}")
            raise ConfigError(f"--report-to {target}: {what} (pip install {package})") from None


def metric_sinks(targets, output_dir, *, project_name: str | None = None, config: dict | None = None) -> list:
    """The sinks a TrainingReporter also sends its records to, one per target: wandb (a run named after
    `output_dir`, in project `project_name`, default that name too, with `config`) and tensorboard (event files in
    `output_dir`/tensorboard). Each opens at its first record, once the output directory is the run's."""
    check_report_targets(targets)
    sinks = {"wandb": lambda: WandbSink(output_dir, project_name, config),
             "tensorboard": lambda: TensorBoardSink(Path(output_dir) / "tensorboard")}
    return [sinks[t]() for t in dict.fromkeys(targets)]


def _scalars(record: dict) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if k != "iteration" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class WandbSink:
    """Records as wandb metrics at step = iteration (mlx-lm's WandBCallback)."""

    def __init__(self, output_dir, project_name: str | None, config: dict | None):
        self.dir, self.project, self.config, self.run = Path(output_dir), project_name, config, None

    def log(self, record: dict) -> None:
        if self.run is None:
            import wandb

            self.dir.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(project=self.project or self.dir.resolve().name, name=self.dir.resolve().name,
                                  dir=str(self.dir), config=self.config)
        self.run.log(_scalars(record), step=int(record["iteration"]))

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


class TensorBoardSink:
    """Records as TensorBoard scalars (one tag per metric, step = iteration), written with the tensorboard
    package's event-file writer (no deep-learning framework needed)."""

    def __init__(self, log_dir):
        self.log_dir, self.writer = Path(log_dir), None

    def log(self, record: dict) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        if self.writer is None:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.writer = EventFileWriter(str(self.log_dir))
        values = [Summary.Value(tag=tag, simple_value=value) for tag, value in _scalars(record).items()]
        self.writer.add_event(Event(wall_time=time.time(), step=int(record["iteration"]), summary=Summary(value=values)))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
