"""PRTTrainer: the loss, learning, gradient accumulation, checkpoints and resuming."""

import numpy as np
import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from prtcore import RewardArtifact, RewardConfig, TrainingConfig
from prtcore.data import Example, load_dataset
from prtcore.testing import reference

TEXTS = [
    "The capital of Avalon is Brightwater.", "The capital of Corvia is Dunmere.", "Mira works as a baker.",
    "Hello world! How are you today?", "I am fine, thank you.", "Portable rewards move between base models.",
    "Question: What is the capital of Avalon? Answer: Brightwater.", "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100.",
]
SMALL = dict(d_model=32, num_layers=1, num_heads=4, ffn_dim=64)


@pytest.fixture(scope="module")
def examples(source):
    tok = source.tokenizer
    out = []
    for i, text in enumerate(TEXTS):
        ids = list(tok.encode(text)) + [tok.eos_token_id]
        mask = [0] * 3 + [1] * (len(ids) - 3) if i % 2 else [1] * len(ids)  # some prompts masked
        out.append(Example(ids, mask))
    return out


def args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=4,
                learning_rate=1e-2, max_steps=12, logging_steps=4, report_to="none", use_cpu=True,
                disable_tqdm=True, save_strategy="no", seed=0, data_seed=0)
    base.update(kw)
    return TrainingArguments(**base)


def trainer_for(backend, source, config, tmp_path, train, evaluation=None, seed=0, **kw):
    from prt_torch import PRTTrainer

    reward = backend.create_reward(config, source, seed=seed)
    return PRTTrainer(reward, source, args=args(tmp_path, **kw), train_dataset=train, eval_dataset=evaluation)


def test_compute_loss_matches_reference(backend, source, examples, tmp_path):
    from prt_torch.trainer import PRTCollator

    config = RewardConfig(kind="linear", lam=0.5, entropy_coeff=0.1)
    trainer = trainer_for(backend, source, config, tmp_path, examples)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        trainer.reward.module.head.weight.copy_(0.1 * torch.randn(trainer.reward.module.head.weight.shape, generator=gen))
    batch = PRTCollator(0)(examples[:4])
    loss, metrics = trainer.prt_loss(trainer.model, batch)
    x = batch["ids"][:, :-1]
    out = source.forward(x, hidden=True)
    r = trainer.reward.forward(x, source_hidden=out.hidden).detach()
    want, want_metrics = reference.prt_loss(out.logits.numpy(), r.numpy(), batch["ids"][:, 1:].numpy(),
                                            batch["mask"][:, 1:].numpy(), lam=0.5, entropy_coeff=0.1)
    assert abs(float(loss.detach()) - want) < 1e-5
    assert float(metrics["ntokens"]) == want_metrics["ntokens"]


@pytest.mark.parametrize("kind,fine_tune_type", [("linear", "lora"), ("transformer", "lora"), ("twin", "lora"),
                                                 ("twin", "full")])
def test_training_lowers_validation_loss(backend, source_dir, examples, tmp_path, kind, fine_tune_type):
    source = backend.load_base(source_dir)  # a LoRA twin adapts the source in place
    config = RewardConfig(kind=kind, fine_tune_type=fine_tune_type, lora={"rank": 4, "num_layers": 1}, **SMALL)
    trainer = trainer_for(backend, source, config, tmp_path, examples, examples[:4])
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < before["eval_loss"] - 0.5, (before, after)
    assert after["eval_accuracy"] > before["eval_accuracy"]
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all(k in logged[0] for k in ("nll", "accuracy", "entropy"))
    path = trainer.save_reward(tmp_path / "reward")
    artifact = RewardArtifact.open(path)
    assert artifact.meta["training"]["global_step"] == 12
    loaded = backend.load_reward(artifact, backend.load_base(source_dir) if fine_tune_type == "lora" else None)
    ids = source.asarray([examples[0].ids])
    hidden = source.forward(ids, hidden=True).hidden
    torch.testing.assert_close(loaded.forward(ids, source_hidden=hidden),
                               trainer.reward.forward(ids, source_hidden=hidden).detach(), atol=1e-5, rtol=0)


def test_gradient_accumulation_equals_a_larger_batch(backend, source, examples, tmp_path):
    """Token-weighted normalisation: 2 × 2 accumulated examples make the same SGD step as one batch of 4."""
    data = examples[:4]
    config = RewardConfig(kind="linear", entropy_coeff=0.05)
    common = dict(max_steps=1, optim="sgd", learning_rate=1.0, lr_scheduler_type="constant")
    one = trainer_for(backend, source, config, tmp_path / "one", data, per_device_train_batch_size=4, **common)
    one.train()
    acc = trainer_for(backend, source, config, tmp_path / "acc", data, per_device_train_batch_size=2,
                      gradient_accumulation_steps=2, **common)
    acc.train()
    w1, w2 = one.reward.module.head.weight, acc.reward.module.head.weight
    assert w1.abs().max() > 1e-3
    torch.testing.assert_close(w1, w2, atol=1e-6, rtol=1e-5)
    # the reported loss is the loss of the whole accumulated batch
    assert abs(one.state.log_history[-1]["train_loss"] - acc.state.log_history[-1]["train_loss"]) < 1e-5


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


@pytest.mark.parametrize("kind", ["transformer", "twin"])
def test_resume_gives_the_same_weights(backend, source_dir, examples, tmp_path, kind):
    config = RewardConfig(kind=kind, lora={"rank": 4, "num_layers": 1}, **SMALL)
    common = dict(max_steps=8, per_device_train_batch_size=2, save_strategy="steps", save_steps=3,
                  lr_scheduler_type="cosine", warmup_steps=2)
    full = trainer_for(backend, backend.load_base(source_dir), config, tmp_path / "full", examples, **common)
    full.train()
    want = {k: v.detach().clone() for k, v in full.reward.trainable_parameters().items()}

    interrupted = trainer_for(backend, backend.load_base(source_dir), config, tmp_path / "run", examples, **common)
    interrupted.add_callback(StopAt(3))  # mid-epoch: resuming must skip the batches already seen
    interrupted.train()
    assert (tmp_path / "run" / "checkpoint-3").is_dir() and interrupted.state.global_step == 3

    resumed = trainer_for(backend, backend.load_base(source_dir), config, tmp_path / "run", examples, seed=7, **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3"))
    assert resumed.state.global_step == 8
    got = resumed.reward.trainable_parameters()
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name].detach(), want[name], atol=1e-6, rtol=0, msg=name)


def test_training_arguments_from_config_and_prtcore_data(backend, source, tmp_path):
    from prt_torch import PRTTrainer, training_arguments

    data = tmp_path / "data"
    data.mkdir()
    lines = "\n".join('{"prompt": "Q%d?", "completion": " A%d."}' % (i, i) for i in range(8))
    (data / "train.jsonl").write_text(lines)
    (data / "valid.jsonl").write_text(lines)
    splits = load_dataset(data, source.tokenizer, max_seq_length=64, mask_prompt=True)
    config = TrainingConfig(iters=3, batch_size=2, learning_rate=1e-3, steps_per_eval=3, save_every=3,
                            lr_schedule="cosine", warmup_steps=1, grad_checkpoint=True)
    targs = training_arguments(config, tmp_path / "out", use_cpu=True, disable_tqdm=True)
    assert (targs.max_steps, targs.per_device_train_batch_size, targs.lr_scheduler_type.value) == (3, 2, "cosine")
    reward = backend.create_reward(RewardConfig(kind="transformer", **SMALL), source)
    trainer = PRTTrainer(reward, source, args=targs, train_dataset=splits["train"], eval_dataset=splits["valid"])
    trainer.train()
    assert reward.module.checkpointing  # blocks recomputed in the backward pass
    assert trainer.state.global_step == 3 and (tmp_path / "out" / "checkpoint-3" / "model.safetensors").exists()
    assert np.isfinite([e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]).all()


def test_entropy_metric_on_the_first_batch_of_each_logging_window(backend, source, examples, tmp_path):
    """Without an entropy term the reward's entropy (as costly as the rest of the loss) is computed on the first
    batch after each log only, and logged as that batch's; loss, nll and accuracy are over every batch. With an
    entropy term every batch computes it (the loss needs it)."""
    from prt_torch.loss import fused_prt_loss

    for coeff, want in ((0.0, [True, False, False, False] * 3), (0.05, [True] * 12)):
        calls = []

        def recording(*a, entropy_metric=True, **kw):
            loss, metrics = fused_prt_loss(*a, entropy_metric=entropy_metric, **kw)
            calls.append(("entropy" in metrics, float(metrics.get("entropy", torch.tensor(float("nan"))))))
            return loss, metrics

        reward = backend.create_reward(RewardConfig(kind="linear", entropy_coeff=coeff), source, seed=0)
        from prt_torch import PRTTrainer

        trainer = PRTTrainer(reward, source, args=args(tmp_path), train_dataset=examples, loss=recording)
        trainer.train()
        assert [has for has, _ in calls] == want
        logged = [entry for entry in trainer.state.log_history if "loss" in entry]
        assert len(logged) == 3
        if not coeff:  # each window's entropy is its first batch's (4 examples each, equal token counts)
            assert [e["entropy"] for e in logged] == pytest.approx([calls[i][1] for i in (0, 4, 8)], rel=1e-6)


def test_fused_loss_without_the_entropy_metric_is_the_same_loss_and_gradient():
    from prt_torch.loss import fused_prt_loss

    gen = torch.Generator().manual_seed(0)
    base, reward = torch.randn(2, 5, 300, generator=gen), torch.randn(2, 5, 300, generator=gen)
    targets = torch.randint(0, 300, (2, 5), generator=gen)
    results = []
    for entropy_metric in (True, False):
        r = reward.clone().requires_grad_(True)
        loss, metrics = fused_prt_loss(base, r, targets, lam=0.5, entropy_metric=entropy_metric)
        loss.backward()
        results.append((loss.detach(), r.grad, metrics))
    (loss_a, grad_a, with_h), (loss_b, grad_b, without_h) = results
    assert torch.equal(loss_a, loss_b) and torch.equal(grad_a, grad_b)
    assert "entropy" in with_h and set(without_h) == {"ntokens", "accuracy", "nll"}
    _, needed = fused_prt_loss(base, reward, targets, entropy_coeff=0.1, entropy_metric=False)
    assert float(needed["entropy"]) == pytest.approx(float(with_h["entropy"]), rel=1e-6)  # the loss needs it


def test_counts_saved_before_the_entropy_had_its_own_count_resume_as_every_batchs():
    from types import SimpleNamespace

    from prt_torch.trainer import CarriedCounts, PRTTrainer

    trainer = SimpleNamespace(carried=None)
    saved = {"trained_tokens": 40, "train": {"ntokens": 40.0, "loss": 80.0, "nll": 80.0, "accuracy": 4.0,
                                             "entropy": 120.0}}
    state = SimpleNamespace(stateful_callbacks={"CarriedCounts": {"attributes": saved}})
    CarriedCounts(trainer).on_train_begin(None, state, None)
    assert trainer.carried["train"]["entropy_tokens"] == 40.0
    means = PRTTrainer._means(SimpleNamespace(carried=trainer.carried, fold_counts=lambda: None), "train")
    assert means == {"nll": 2.0, "accuracy": 0.1, "entropy": 3.0}


COMPOSING = {"linear": RewardConfig(kind="linear", lam=0.5),
             "transformer": RewardConfig(kind="transformer", lam=0.5, d_model=32, num_layers=1, num_heads=4,
                                         ffn_dim=64)}


@pytest.fixture(scope="module")
def bfloat16_source(backend, source_dir):
    return backend.load_base(source_dir, dtype="bfloat16")


@pytest.mark.parametrize("kind", sorted(COMPOSING))
@pytest.mark.parametrize("base_name", ["source", "target", "bfloat16_source"])
def test_reward_composes_its_logits_with_the_sources(backend, examples, request, base_name, kind):
    """Without an entropy metric a `linear` or `transformer` reward on a plain output layer computes r + λ·b itself
    (the source's output layer sees no positions): the loss, metrics and gradients of the general path, also where
    the output layer has rows past the vocabulary (the target: 6; they get no gradient) and where the source is
    bfloat16 (its product in bfloat16, as its own logits; the reward's in float32)."""
    from prt_torch.trainer import PRTCollator, batch_loss

    source = request.getfixturevalue(base_name)

    reward = backend.create_reward(COMPOSING[kind], source, seed=0)
    head = reward.module.head.weight
    params = [p for p in reward.module.parameters() if p.requires_grad]
    with torch.no_grad():
        head.copy_(0.1 * torch.randn(head.shape, generator=torch.Generator().manual_seed(0)))
    batch = PRTCollator(0)(examples[:4])
    vocab = len(source.tokenizer)
    weight = source.plain_output_weight()  # probed (one position) before the hook counts
    assert weight is not None and (weight.dtype == torch.bfloat16) == (base_name == "bfloat16_source")
    positions = []
    hook = source.model.get_output_embeddings().register_forward_hook(
        lambda module, args, output: positions.append(output.shape[1]))
    results = {}
    try:
        for entropy_metric in (True, False):
            positions.clear()
            loss, metrics = batch_loss(reward, source, reward.module, batch, vocab, lam=0.5, entropy_coeff=0.0,
                                       entropy_metric=entropy_metric)
            grads = torch.autograd.grad(loss, params)
            results[entropy_metric] = (loss.detach(), grads, metrics, list(positions))
    finally:
        hook.remove()
    (loss_a, grads_a, general, seen_a), (loss_b, grads_b, composed, seen_b) = results[True], results[False]
    assert seen_a == [batch["ids"].shape[1] - 1] and seen_b == [0]  # the composed path computes no source logits
    assert float(loss_b) == pytest.approx(float(loss_a), rel=1e-6)
    assert (len(params) == 1) == (kind == "linear")
    for grad_a, grad_b in zip(grads_a, grads_b):
        assert torch.allclose(grad_b, grad_a, rtol=1e-4, atol=1e-7) and grad_a.abs().max() > 1e-5
    assert not next(g for p, g in zip(params, grads_b) if p is head)[vocab:].any()

    def mixed_precision(*args, **kwargs):  # the reward's forward as accelerate's mixed precision wraps it
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return reward.module(*args, **kwargs)

    loss_c, _ = batch_loss(reward, source, mixed_precision, batch, vocab, lam=0.5, entropy_coeff=0.0,
                           entropy_metric=False)
    grads_c = torch.autograd.grad(loss_c, params)
    if kind == "linear":  # r + λ·b stays in float32
        assert float(loss_c.detach()) == float(loss_b) and torch.equal(grads_c[0], grads_b[0])
    else:  # the blocks run in bfloat16, the composed logits in float32
        assert float(loss_c.detach()) == pytest.approx(float(loss_b), rel=1e-3)
        hidden = source.hidden_states(batch["ids"][:, :-1])
        assert mixed_precision(hidden, base_weight=source.plain_output_weight()[:vocab], lam=0.5).dtype == torch.float32
    assert set(composed) == {"ntokens", "accuracy", "nll"}
    for key in composed:
        assert float(composed[key]) == pytest.approx(float(general[key]), rel=1e-6)


@pytest.mark.parametrize("model_type,extra_rows,plain", [("llama", 0, True), ("qwen2", 6, True),
                                                         ("gemma2", 0, False), ("cohere", 0, False),
                                                         ("granite", 0, False)])
def test_plain_output_weight_only_where_the_logits_are_hidden_times_weight(backend, tiny_root, tokenizer_dir,
                                                                          model_type, extra_rows, plain):
    """Soft-capped (gemma2) and scaled (cohere, granite) logits are not `hidden @ weightᵀ`: their linear rewards
    take the general path; a padded output layer (qwen2, 6 rows past the tokenizer) composes over the vocabulary."""
    from prt_torch.trainer import composable_weight
    from prtcore.testing.checkpoints import make_tiny_checkpoint

    path = make_tiny_checkpoint(tiny_root / f"head-{model_type}", model_type, tokenizer_dir=tokenizer_dir,
                                extra_vocab_rows=extra_rows, family_overrides=True)
    base = backend.load_base(path)
    weight = base.plain_output_weight()
    assert (weight is base.model.get_output_embeddings().weight) == plain and (weight is None) != plain
    reward = backend.create_reward(RewardConfig(kind="linear"), base, seed=0)
    vocab = len(base.tokenizer)
    composable = composable_weight(reward, base, vocab)
    assert (composable is not None) == plain
    if plain:
        assert composable.shape[0] == vocab
        ids = [[5, 9, 14, 3]]
        assert torch.equal(base.hidden_states(ids), base.forward(ids, hidden=True).hidden)
        rows = weight.shape[0]
        assert rows == vocab + extra_rows and composable_weight(reward, base, rows).shape[0] == rows
        assert composable_weight(reward, base, rows + 1) is None  # a token past the output layer's rows


def test_trainer_composes_a_linear_rewards_logits_on_the_batches_without_the_entropy_metric(
        backend, source, examples, tmp_path, monkeypatch):
    import prt_torch.trainer
    from prt_torch import PRTTrainer

    calls = []
    composed = prt_torch.trainer.composed_prt_loss
    monkeypatch.setattr(prt_torch.trainer, "composed_prt_loss", lambda *a, **kw: calls.append(1) or composed(*a, **kw))
    reward = backend.create_reward(RewardConfig(kind="linear"), source, seed=0)
    trainer = PRTTrainer(reward, source, args=args(tmp_path), train_dataset=examples)
    trainer.train()
    assert len(calls) == 9  # 12 steps, logged every 4: the first batch of each window computes the entropy metric
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 3 and all(np.isfinite([e["loss"], e["nll"], e["entropy"]]).all() for e in logged)


def test_plain_output_weight_is_probed_again_for_another_weight(backend, source_dir):
    base = backend.load_base(source_dir)
    head = base.model.get_output_embeddings()
    assert base.plain_output_weight() is head.weight
    head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=False)  # e.g. replaced by sharding
    assert base.plain_output_weight() is head.weight
    head.register_forward_hook(lambda module, args, output: output * 2.0)  # a hook that scales the logits
    head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    assert base.plain_output_weight() is None
