"""`TorchBackend.train`: prtcore's training contract on top of PRTTrainer.

Output directory: the final reward artifact, `best/` (best validation loss), `checkpoint/` (Trainer's own
checkpoint: reward, optimiser, scheduler, RNG and step, for `resume=True`), and the reporter's metrics.

Under `torchrun` / `accelerate launch` every rank trains its share of each global batch (prt_torch.distributed);
rank 0 alone writes `best/`, the final artifact and the metrics (the Trainer writes its checkpoints from rank 0).
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import torch
from transformers import PrinterCallback, TrainerCallback

from prtcore.artifacts import write_into
from prtcore.config import TrainingConfig
from prtcore.errors import TrainingError
from prtcore.reporting import is_main_process
from prtcore.training import repair_checkpoint, run_record, trainer_checkpoints

from .distributed import trainer_overrides
from .trainer import PRTTrainer, training_arguments

CHECKPOINT, BEST = "checkpoint", "best"


def peak_memory_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


class FiniteGuard(TrainerCallback):
    """Stops the run on a NaN or inf loss or gradient before the optimiser applies it, so that no checkpoint holds
    non-finite weights (the last good checkpoint stays as it is). A non-finite loss gives non-finite gradients."""

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.grad is not None] if model is not None else []
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            raise TrainingError(f"step {state.global_step + 1}: the loss or a gradient is not finite; lower the "
                                f"learning rate (the last good checkpoint in {args.output_dir} is kept)")


class ReportCallback(TrainerCallback):
    """Forwards Trainer logs to a prtcore TrainingReporter and keeps the best validation artifact."""

    def __init__(self, reporter, output_dir: Path):
        self.reporter, self.output_dir = reporter, output_dir
        self.trainer: PRTTrainer | None = None
        self.best: float | None = None
        self.best_step: int | None = None
        self.last = (time.perf_counter(), 0, 0)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        now, tokens = time.perf_counter(), self.trainer.trained_tokens()
        then, step0, tokens0 = self.last
        elapsed = max(now - then, 1e-9)
        self.reporter.on_train_report({
            "iteration": state.global_step, "train_loss": float(logs["loss"]),
            "learning_rate": float(logs.get("learning_rate", 0.0)),
            "iterations_per_second": (state.global_step - step0) / elapsed,
            "tokens_per_second": (tokens - tokens0) / elapsed, "trained_tokens": int(tokens),
            "peak_memory": peak_memory_gb(),
        })
        self.last = (now, state.global_step, tokens)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or "eval_loss" not in metrics:
            return
        loss = float(metrics["eval_loss"])
        self.reporter.on_val_report({"iteration": state.global_step, "val_loss": loss})
        if self.best is None or loss < self.best:
            self.best, self.best_step = loss, state.global_step
            with self.trainer.full_weights():
                if is_main_process():
                    self.trainer.save_reward(self.output_dir / BEST,
                                             extra={"training": {"iteration": state.global_step, "val_loss": loss}})


def train(source, reward, data: dict, config: TrainingConfig, output_dir, *, iters: int, resume: bool = False,
          reporter=None) -> dict:
    from prtcore.reporting import TrainingReporter

    output_dir = Path(output_dir)
    if not data.get("train"):
        raise TrainingError("no training examples (data['train'] is empty)")
    reporter = reporter or TrainingReporter(output_dir, total_steps=iters, quiet=True, resume=resume)
    valid = data.get("valid")
    args = training_arguments(config, output_dir / CHECKPOINT, max_steps=iters, save_total_limit=1,
                              eval_strategy="steps" if valid else "no", disable_tqdm=True,
                              logging_strategy="steps", save_strategy="steps",
                              **trainer_overrides(config, source.device, len(data["train"])))
    callback = ReportCallback(reporter, output_dir)
    trainer = PRTTrainer(reward, source, args=args, train_dataset=list(data["train"]),
                         eval_dataset=list(valid) if valid else None, callbacks=[callback, FiniteGuard()])
    callback.trainer = trainer
    trainer.remove_callback(PrinterCallback)  # the reporter prints progress
    checkpoint = None
    if resume:  # the last checkpoint written to the end (a killed save leaves a half-written one behind)
        if is_main_process():
            repair_checkpoint(output_dir)
        args.distributed_state.wait_for_everyone()
        done = trainer_checkpoints(output_dir / CHECKPOINT)
        checkpoint = str(done[-1]) if done else None
    if resume:  # keep the metrics up to the checkpoint (none when the run starts over)
        reporter.resume_from(int(Path(checkpoint).name.rsplit("-", 1)[-1]) if checkpoint else 0)
    trainer.train(resume_from_checkpoint=checkpoint)
    extra = run_record(reporter, data, iters=iters, trained_tokens=trainer.trained_tokens(),
                       best_val_loss=callback.best, best_iteration=callback.best_step)
    with trainer.full_weights():
        if is_main_process():
            write_into(output_dir, lambda staging: trainer.save_reward(staging, extra=extra))
    args.distributed_state.wait_for_everyone()  # the artifact is complete when any rank returns
    return reporter.finish(best_iteration=callback.best_step, artifact=str(output_dir))
