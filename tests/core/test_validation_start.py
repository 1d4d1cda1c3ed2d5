"""The validation before training (mlx-lm's first "Val loss"), the closing lines of a run and of the demo."""

from __future__ import annotations

import io
import json
from pathlib import Path

from prtcore.loop import new_state, record_validation, validate_before_training, validates_before_training
from prtcore.reporting import MATPLOTLIB_MISSING, TrainingReporter


def test_the_loss_before_training_is_reported_but_never_the_best(tmp_path):
    stream = io.StringIO()
    reporter = TrainingReporter(tmp_path, total_steps=4, stream=stream, progress=False)
    state, saved = new_state(), []
    validate_before_training(state, lambda it: record_validation(state, reporter, it, 1.0,
                                                                 lambda i, v: saved.append((i, v))))
    assert (state["best_val_loss"], saved) == (None, [])  # 1.0 is lower than what follows, yet no result
    record_validation(state, reporter, 2, 3.0, lambda i, v: saved.append((i, v)))
    reporter.on_train_report({"iteration": 2, "train_loss": 2.5, "trained_tokens": 10})
    assert saved == [(2, 3.0)] and state["best_iteration"] == 2
    summary = reporter.finish()
    assert (summary["initial_val_loss"], summary["best_val_loss"], summary["best_val_step"]) == (1.0, 3.0, 2)
    assert "step 0  val loss 1.0000  (before training)" in stream.getvalue()
    assert "step 2  val loss 3.0000  (best)" in stream.getvalue()
    assert "val loss 1.0000 before training" in stream.getvalue().splitlines()[-1]
    assert json.loads((tmp_path / "summary.json").read_text())["initial_val_loss"] == 1.0


def test_only_a_run_starting_at_step_0_with_validation_data_validates_first():
    assert validates_before_training(0, True)
    assert not validates_before_training(0, False) and not validates_before_training(5, True)
    state = {**new_state(), "iteration": 5}
    validate_before_training(state, lambda it: (_ for _ in ()).throw(AssertionError("validated a resumed run")))


def test_a_run_that_starts_over_keeps_no_earlier_record(tmp_path):
    first = TrainingReporter(tmp_path, quiet=True)
    first.on_val_report({"iteration": 0, "val_loss": 2.0})
    again = TrainingReporter(tmp_path, quiet=True, resume=True)
    again.resume_from(0)  # no checkpoint: the run starts over and validates at 0 again
    again.on_val_report({"iteration": 0, "val_loss": 2.0})
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_the_demo_names_what_it_wrote_and_a_missing_chart(tmp_path):
    from prtcore.apps.demo.run import wrote_line

    files = [tmp_path / "demo.json", tmp_path / "demo.md"]
    line = wrote_line(tmp_path, files, seeds=[0, 1])
    assert line.startswith(f"prt demo: wrote {files[0]} (every figure), {files[1]} (the table)")
    assert f"demo.png not written: {MATPLOTLIB_MISSING}" in line and str(Path(tmp_path) / "seed1") in line
    assert "not written" not in wrote_line(tmp_path, files + [tmp_path / "demo.png"], seeds=[0])
