"""A resumed run records what an uninterrupted one does: a run stopped after a checkpoint and resumed ends with the
same weights, best/ (weights and step), training record (prt_config.json) and summary as a run that was never
stopped; resuming a finished run changes none of them; and the last step is always reported, even in a run shorter
than --steps-per-report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from prtcore.config import LoRAConfig, RewardConfig, TrainingConfig
from prtcore.reporting import TrainingReporter
from prtcore.training import train_reward, train_sft

from .conftest import BACKENDS

# A high learning rate makes step 2 validate worse than step 1; one report, at the last step, has a loss over
# every step: a run resumed from step 1 reports it only if the checkpoint carries step 1's loss.
CONFIG = TrainingConfig(iters=4, batch_size=4, learning_rate=0.3, steps_per_report=4, steps_per_eval=1,
                        save_every=1, val_batches=1)
REWARD = RewardConfig(kind="linear")
SUMMARY = ("steps", "best_val_loss", "best_val_step", "best_iteration", "final_train_loss")


class StopAt(TrainingReporter):
    """Interrupts the run (as Ctrl-C would) while it validates `step`: after checkpoint `step - 1`, before best/
    could take `step`."""

    def __init__(self, out: Path, step: int):
        super().__init__(out, total_steps=CONFIG.iters, quiet=True)
        self.step = step

    def on_val_report(self, info: dict) -> None:
        if info["iteration"] == self.step:
            raise KeyboardInterrupt
        super().on_val_report(info)


def weights(directory: Path) -> dict:
    return {f"{p.name}:{k}": v for p in sorted(directory.glob("*.safetensors")) for k, v in load_file(str(p)).items()}


def recorded(out: Path) -> dict:
    """What the run recorded of itself, weights aside."""
    config = json.loads((out / "prt_config.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    return {"training": config["training"], "data": config["data"],
            "best": json.loads((out / "best" / "prt_config.json").read_text())["training"],
            "summary": {k: summary.get(k) for k in SUMMARY}}


def assert_same_weights(got: Path, want: Path, backend: str) -> None:
    a, b = weights(got), weights(want)
    assert a.keys() == b.keys() and a
    for name in b:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=0 if backend == "mlx" else 1e-6, err_msg=name)


def train(rws, out: Path, backend: str, **options) -> dict:
    return train_reward(rws["source"], rws["data"], out, REWARD, CONFIG, backend=backend, **options)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_resumed_run_records_what_an_uninterrupted_one_does(rws, backend, tmp_path):
    ref, out = tmp_path / "reference", tmp_path / "resumed"
    train(rws, ref, backend)
    want = recorded(ref)
    val = [r["val_loss"] for r in map(json.loads, (ref / "metrics.jsonl").read_text().splitlines()) if "val_loss" in r]
    # val[0] is before training; step 2 validates worse than step 1: what best/ must not take after a resume
    assert len(val) == CONFIG.iters + 1 and val[2] > val[1]

    with pytest.raises(KeyboardInterrupt):
        train(rws, out, backend, reporter=StopAt(out, 2))
    assert not (out / "prt_config.json").exists()
    train(rws, out, backend, resume=True)
    assert recorded(out) == want  # best/ is not replaced by the worse step 2; tokens and losses carried over
    assert_same_weights(out, ref, backend)
    assert_same_weights(out / "best", ref / "best", backend)

    # resuming the finished run trains nothing and changes nothing it recorded
    metrics = (out / "metrics.jsonl").read_text()
    train(rws, out, backend, resume=True)
    assert recorded(out) == want
    assert (out / "metrics.jsonl").read_text() == metrics
    assert_same_weights(out, ref, backend)
    assert_same_weights(out / "best", ref / "best", backend)


@pytest.mark.parametrize("method", ["prt", "sft"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_run_shorter_than_the_report_interval_reports_its_last_step(rws, backend, method, tmp_path):
    config = TrainingConfig(iters=2, batch_size=4, steps_per_report=10, steps_per_eval=10, save_every=10,
                            val_batches=1)
    if method == "prt":
        summary = train_reward(rws["source"], rws["data"], tmp_path, REWARD, config, backend=backend)
    else:
        summary = train_sft(rws["source"], rws["data"], tmp_path, config, lora=LoRAConfig(rank=4, num_layers=1),
                            backend=backend)
    assert summary["steps"] == 2 and summary["final_train_loss"] > 0 and summary["best_val_step"] == 2
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "train_loss" in r] == [2]
