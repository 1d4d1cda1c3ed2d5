"""The bookkeeping every backend's training loop does the same way, with no arrays in it: the loop's state, the start
of a run (new or resumed), the validation before training, the training report of a window of steps, and the best
validation loss.

prt_mlx.training and prt_mlx.sft (their own loop), prt_torch.training and prt_torch.sft (a transformers Trainer) use
it; so can a third-party backend's loop, so that its reports and artifacts record what the built-in ones do.
"""

from __future__ import annotations

import time
from typing import Callable

from .errors import TrainingError


def training_splits(data: dict) -> tuple:
    """(training examples, validation examples or None) of `data` (prtcore.data splits); TrainingError when there
    are no training examples."""
    train, valid = data.get("train"), data.get("valid")
    if not train:
        raise TrainingError("no training examples (data['train'] is empty)")
    return train, valid


def new_state() -> dict:
    """A loop's state at the start of a run, what its checkpoints and artifacts record: the last iteration, the
    target tokens trained on, the best validation loss and its iteration."""
    return {"iteration": 0, "trained_tokens": 0, "best_val_loss": None, "best_iteration": None}


def open_run(output_dir, *, iters: int, resume: bool, reporter=None, load_state: Callable[[], dict | None],
             main: bool = True, wait: Callable[[], None] | None = None) -> tuple[dict, object]:
    """(state, reporter) at the start of a run in `output_dir`:

    - with `resume`, the main process repairs a checkpoint replacement that a kill left half done
      (prtcore.checkpoints.repair_checkpoint); then every process waits for it (`wait()`, None with one process);
    - with `resume`, `load_state()` gives the checkpoint's state (None: there is none, the run starts over);
      otherwise, or without one, the state is `new_state()`;
    - `reporter` (default: a quiet prtcore.reporting.TrainingReporter over `iters` steps) keeps, when resuming,
      the metrics up to the state's iteration (none when the run starts over).
    """
    from .checkpoints import repair_checkpoint
    from .reporting import TrainingReporter

    if resume and main:
        repair_checkpoint(output_dir)
    if wait is not None:
        wait()
    state = (load_state() if resume else None) or new_state()
    if reporter is None:
        reporter = TrainingReporter(output_dir, total_steps=iters, quiet=True, resume=resume)
    if resume:
        reporter.resume_from(state["iteration"])
    return state, reporter


def train_report(iteration: int, train_loss: float, learning_rate: float, *, steps: int, tokens: int, seconds: float,
                 trained_tokens: int, peak_memory: float) -> dict:
    """The record prtcore.reporting.TrainingReporter.on_train_report takes, at `iteration`: `train_loss` (the mean
    since the last report), the rates of the `steps` iterations and `tokens` target tokens trained in `seconds`
    since then, all target tokens so far, and the peak memory in GB."""
    return {"iteration": iteration, "train_loss": train_loss, "learning_rate": learning_rate,
            "iterations_per_second": steps / seconds, "tokens_per_second": tokens / seconds,
            "trained_tokens": trained_tokens, "peak_memory": peak_memory}


def record_validation(state: dict, reporter, iteration: int, val_loss: float,
                      save_best: Callable[[int, float], None] | None = None, **extra) -> bool:
    """Report a validation loss (with `extra`, e.g. `val_time`). When it is a trained step's (iteration > 0; the
    one before training is the starting point, not a result) and lower than the best so far (of equal ones the
    first stays), record it in `state` (best_val_loss, best_iteration) and call `save_best(iteration, val_loss)`;
    returns whether it did."""
    reporter.on_val_report({"iteration": iteration, "val_loss": val_loss, **extra})
    if iteration == 0:
        return False
    if state["best_val_loss"] is not None and not val_loss < state["best_val_loss"]:
        return False
    state.update(best_val_loss=val_loss, best_iteration=iteration)
    if save_best is not None:
        save_best(iteration, val_loss)
    return True


def validator(state: dict, reporter, evaluate: Callable[[], float],
              save_best: Callable[[int, float], None] | None = None) -> Callable[[int], None]:
    """`validate(iteration)` for a loop: `evaluate()` (the validation loss), reported with the seconds it took, and
    kept when it is the best (`record_validation`)."""

    def validate(iteration: int) -> None:
        start = time.perf_counter()
        val_loss = evaluate()
        record_validation(state, reporter, iteration, val_loss, save_best, val_time=time.perf_counter() - start)

    return validate


def validates_before_training(start_iteration: int, has_validation: bool) -> bool:
    """Whether a loop validates at iteration 0, before its first update (mlx-lm's "Iter 1: Val loss"): a run that
    starts at step 0 and has validation data. A resumed run has that record in its metrics already."""
    return has_validation and start_iteration == 0


def validate_before_training(state: dict, validate: Callable[[int], None] | None) -> None:
    """For a loop of its own: `validate(0)` when `validates_before_training` says so (`validate` None: no data)."""
    if validates_before_training(state["iteration"], validate is not None):
        validate(0)
