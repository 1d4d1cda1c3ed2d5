"""`TorchBackend.train`: prtcore's training contract on top of PRTTrainer.

Output directory: the final reward artifact, `best/` (best validation loss), `checkpoint/` (Trainer's own
checkpoint: reward, optimiser, scheduler, RNG, step, and the counts of prt_torch.trainer.CarriedCounts, for
`resume=True`: a resumed run records what an uninterrupted one would), and the reporter's metrics.

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
from prtcore.loop import record_validation, train_report, training_splits, validates_before_training
from prtcore.reporting import is_main_process
from prtcore.training import repair_checkpoint, run_record, trainer_checkpoints, what_to_change

from .distributed import trainer_overrides
from .loss import fused_prt_loss
from .trainer import PRTTrainer, training_arguments

CHECKPOINT, BEST = "checkpoint", "best"


def peak_memory_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


class FiniteGuard(TrainerCallback):
    """Stops the run before the optimiser applies a NaN or inf gradient (a non-finite loss gives one), so that no
    checkpoint holds non-finite weights (the last good checkpoint stays as it is), or a gradient that is zero
    everywhere, which would train nothing: e.g. a λ so small or an entropy coefficient so large that the
    gradient's norm overflows float32 and clipping scales every gradient to 0. `reward_config`: the trained
    reward's (None for a fine-tune), named in the error."""

    def __init__(self, reward_config=None):
        self.reward_config = reward_config

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.grad is not None] if model is not None else []
        if not grads:
            return
        finite, moving = torch.stack([torch.stack([torch.isfinite(g).all() for g in grads]).all(),
                                      torch.stack([g.any() for g in grads]).any()]).tolist()  # one synchronisation
        step, kept = state.global_step + 1, f"(the last good checkpoint in {args.output_dir} is kept)"
        if not finite:
            raise TrainingError(f"step {step}: the loss or a gradient is not finite; lower the learning rate {kept}")
        if not moving:
            raise TrainingError(f"step {step}: every gradient is zero, so training changes nothing"
                                f"{what_to_change(self.reward_config)} {kept}")


class Finished(Exception):
    """A resumed run's checkpoint is at its last step: nothing is left to train."""


class ReportCallback(TrainerCallback):
    """Forwards Trainer logs to a prtcore TrainingReporter (always at the last step) and keeps the best validation
    artifact; a resumed run takes the best validation loss so far from the checkpoint's log history."""

    def __init__(self, reporter, output_dir: Path):
        self.reporter, self.output_dir = reporter, output_dir
        self.trainer: PRTTrainer | None = None
        self.record = {"best_val_loss": None, "best_iteration": None}  # prtcore.loop.record_validation keeps it
        self.last = (time.perf_counter(), 0, 0)

    @property
    def best(self) -> float | None:
        return self.record["best_val_loss"]

    @property
    def best_step(self) -> int | None:
        return self.record["best_iteration"]

    def on_train_begin(self, args, state, control, **kwargs):
        evaluations = [(entry["eval_loss"], entry["step"]) for entry in state.log_history
                       if "eval_loss" in entry and entry["step"] > 0]  # the one before training is no result
        if evaluations:  # the first of equal losses, as `on_evaluate` keeps it
            self.record["best_val_loss"], self.record["best_iteration"] = min(evaluations, key=lambda e: e[0])
        self.last = (time.perf_counter(), state.global_step, self.trainer.trained_tokens())

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:  # transformers would train past the end of a finished run
            raise Finished

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        now, tokens = time.perf_counter(), self.trainer.trained_tokens()
        then, step0, tokens0 = self.last
        elapsed = max(now - then, 1e-9)
        self.reporter.on_train_report(train_report(
            state.global_step, float(logs["loss"]), float(logs.get("learning_rate", 0.0)),
            steps=state.global_step - step0, tokens=tokens - tokens0, seconds=elapsed, trained_tokens=int(tokens),
            peak_memory=peak_memory_gb()))
        self.last = (now, state.global_step, tokens)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or "eval_loss" not in metrics:
            return
        record_validation(self.record, self.reporter, state.global_step, float(metrics["eval_loss"]), self.save_best)

    def save_best(self, step: int, loss: float) -> None:
        with self.trainer.full_weights():  # a collective under FSDP: every rank enters
            if is_main_process():
                self.trainer.save_reward(self.output_dir / BEST,
                                         extra={"training": {"iteration": step, "val_loss": loss}})


def fit(trainer: PRTTrainer, output_dir: Path, reporter, resume: bool) -> None:
    """Train; with `resume`, from the last checkpoint in `output_dir` written to the end (a killed save leaves a
    half-written one behind), keeping the metrics up to it (none when the run starts over)."""
    checkpoint = None
    if resume:
        if is_main_process():
            repair_checkpoint(output_dir)
        trainer.args.distributed_state.wait_for_everyone()
        done = trainer_checkpoints(output_dir / CHECKPOINT)
        checkpoint = str(done[-1]) if done else None
        reporter.resume_from(int(done[-1].name.rsplit("-", 1)[-1]) if done else 0)
    trainer.args.eval_on_start = validates_before_training(reporter.first_step, trainer.eval_dataset is not None)
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    except Finished:
        pass


def train(source, reward, data: dict, config: TrainingConfig, output_dir, *, iters: int, resume: bool = False,
          reporter=None, loss=fused_prt_loss) -> dict:
    """Train `reward` with PRTTrainer, minimising `loss` (a prtcore.objectives.PRTLoss; default: the fused one,
    prt_torch.loss) with the λ and entropy coefficient of the reward's config."""
    from prtcore.reporting import TrainingReporter

    output_dir = Path(output_dir)
    train_set, valid = training_splits(data)
    reporter = reporter or TrainingReporter(output_dir, total_steps=iters, quiet=True, resume=resume)
    args = training_arguments(config, output_dir / CHECKPOINT, max_steps=iters, save_total_limit=1,
                              eval_strategy="steps" if valid else "no", disable_tqdm=True,
                              logging_strategy="steps", save_strategy="steps",
                              **trainer_overrides(config, source.device, len(train_set)))
    callback = ReportCallback(reporter, output_dir)
    trainer = PRTTrainer(reward, source, args=args, train_dataset=list(train_set),
                         eval_dataset=list(valid) if valid else None, callbacks=[callback, FiniteGuard(reward.config)],
                         loss=loss)
    callback.trainer = trainer
    trainer.remove_callback(PrinterCallback)  # the reporter prints progress
    fit(trainer, output_dir, reporter, resume)
    extra = run_record(reporter, data, iters=iters, trained_tokens=trainer.trained_tokens(),
                       best_val_loss=callback.best, best_iteration=callback.best_step)
    with trainer.full_weights():
        if is_main_process():
            write_into(output_dir, lambda staging: trainer.save_reward(staging, extra=extra))
    args.distributed_state.wait_for_everyone()  # the artifact is complete when any rank returns
    return reporter.finish(best_iteration=callback.best_step, artifact=str(output_dir))
