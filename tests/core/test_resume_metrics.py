"""A resumed run that finds no complete checkpoint (killed before the first one) starts over, and so does its
metrics log: the killed run's reports are not kept in front of the new run's."""

from __future__ import annotations

import json

import pytest

from prtcore.config import RewardConfig, TrainingConfig
from prtcore.plugins import installed_backend_names
from prtcore.training import train_reward

BACKENDS = [b for b in ("mlx", "torch") if b in installed_backend_names()]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from prtcore.testing.checkpoints import make_tiny_checkpoint, make_tokenizer

    root = tmp_path_factory.mktemp("resume-metrics")
    path = make_tiny_checkpoint(root / "base", "llama", tokenizer_dir=make_tokenizer(root / "tok"),
                                hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    data = root / "data"
    data.mkdir()
    rows = [{"text": f"The capital of Avalon is Brightwater {i}."} for i in range(8)]
    for split in ("train", "valid"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, data


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_without_a_checkpoint_starts_the_log_over(base, tmp_path, backend):
    model, data = base
    out = tmp_path / "run"
    out.mkdir()
    killed = [{"iteration": i, "train_loss": 9.0, "trained_tokens": 10 * i} for i in (1, 2)]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in killed))
    train_reward(model, data, out, RewardConfig(kind="linear"),
                 TrainingConfig(iters=3, batch_size=2, steps_per_report=1, steps_per_eval=3, save_every=3),
                 backend=backend, resume=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "train_loss" in r] == [1, 2, 3]
    assert all(r["train_loss"] != 9.0 for r in records if "train_loss" in r)
