"""prtcore.loop: the bookkeeping the backends' training loops share."""

from __future__ import annotations

import pytest

from prtcore.errors import TrainingError
from prtcore.loop import new_state, open_run, record_validation, train_report, training_splits, validator
from prtcore.reporting import TrainingReporter


class Reporter:
    def __init__(self):
        self.val, self.resumed = [], None

    def on_val_report(self, info):
        self.val.append(info)

    def resume_from(self, step):
        self.resumed = step


def test_training_splits():
    assert training_splits({"train": [1], "valid": [2]}) == ([1], [2])
    assert training_splits({"train": [1]}) == ([1], None)
    with pytest.raises(TrainingError, match="no training examples"):
        training_splits({"train": [], "valid": [2]})


def test_train_report_rates():
    record = train_report(6, 1.5, 1e-3, steps=3, tokens=120, seconds=2.0, trained_tokens=500, peak_memory=0.25)
    assert record == {"iteration": 6, "train_loss": 1.5, "learning_rate": 1e-3, "iterations_per_second": 1.5,
                      "tokens_per_second": 60.0, "trained_tokens": 500, "peak_memory": 0.25}


def test_record_validation_keeps_the_first_of_equal_best_losses():
    state, reporter, saved = new_state(), Reporter(), []
    save = lambda it, loss: saved.append((it, loss))  # noqa: E731
    assert record_validation(state, reporter, 3, 2.0, save, val_time=0.1)
    assert not record_validation(state, reporter, 6, 2.0, save)
    assert record_validation(state, reporter, 9, 1.0, save)
    assert not record_validation(state, reporter, 12, 1.5, save)
    assert (state["best_val_loss"], state["best_iteration"]) == (1.0, 9) and saved == [(3, 2.0), (9, 1.0)]
    assert reporter.val[0] == {"iteration": 3, "val_loss": 2.0, "val_time": 0.1} and len(reporter.val) == 4


def test_validator_times_the_evaluation():
    state, reporter = new_state(), Reporter()
    validator(state, reporter, lambda: 0.5)(4)
    assert reporter.val[0]["val_loss"] == 0.5 and reporter.val[0]["val_time"] >= 0 and state["best_iteration"] == 4


def test_open_run(tmp_path):
    waits = []
    state, reporter = open_run(tmp_path, iters=10, resume=False, load_state=lambda: {"iteration": 7},
                               wait=lambda: waits.append(1))
    assert state == new_state() and isinstance(reporter, TrainingReporter) and waits == [1]
    given = Reporter()
    state, reporter = open_run(tmp_path, iters=10, resume=True, reporter=given, load_state=lambda: {"iteration": 7})
    assert reporter is given and state == {"iteration": 7} and given.resumed == 7
    state, _ = open_run(tmp_path, iters=10, resume=True, reporter=given, load_state=lambda: None)
    assert state == new_state() and given.resumed == 0
