"""The model-swapping experiment: a reward trained on the source, evaluated on the source and another target."""

import math

import pytest
import torch
from transformers import TrainingArguments

from prtcore import RewardConfig
from prtcore.data import Example

TEXTS = ["The capital of Avalon is Brightwater.", "The capital of Corvia is Dunmere.", "Mira works as a baker.",
         "Hello world! How are you today?"]


@pytest.mark.parametrize("kind", ["linear", "twin"])
def test_evaluate_on_targets(backend, source_dir, target_dir, tmp_path, kind):
    from prt_torch import PRTTrainer, evaluate_on_targets

    source = backend.load_base(source_dir)
    tok = source.tokenizer
    data = [Example(list(tok.encode(t)) + [tok.eos_token_id], [1] * (len(tok.encode(t)) + 1)) for t in TEXTS]
    reward = backend.create_reward(RewardConfig(kind=kind, lora={"rank": 4, "num_layers": 1}), source)
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=15, per_device_train_batch_size=4,
                             learning_rate=2e-2, report_to="none", use_cpu=True, disable_tqdm=True, save_strategy="no")
    trainer = PRTTrainer(reward, source, args=args, train_dataset=data)
    trainer.train()
    path = trainer.save_reward(tmp_path / "reward")

    results = evaluate_on_targets(path, [source_dir, target_dir], data, batch_size=3)
    assert [r["target"] for r in results] == [str(source_dir), str(target_dir)]
    for r in results:
        assert r["ntokens"] == sum(len(e.ids) - 1 for e in data)
        for side in ("base", "prt"):
            assert math.isclose(r[side]["perplexity"], math.exp(r[side]["nll"]), rel_tol=1e-9)
            assert 0.0 <= r[side]["accuracy"] <= 1.0
        assert r["prt"]["nll"] < r["base"]["nll"]  # the reward helps on the data it was trained on
    # on the source, PRT is the trainer's own evaluation
    with torch.no_grad():
        want = trainer.evaluate(eval_dataset=data)["eval_nll"]
    assert abs(results[0]["prt"]["nll"] - want) < 1e-4
