"""Training: the loss falls, resumed runs equal uninterrupted ones, trained rewards move to another target."""

from __future__ import annotations

import json
import math

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_testutil import reward_config
from prtcore import PRTForCausalLM, RewardArtifact, TrainingConfig
from prtcore.data import load_dataset
from prtcore.tokens import pad_id_of
from prtcore.reporting import TrainingReporter
from prtcore.testing import reference
from prtcore.training import train_reward

REPORT_KEYS = {"iteration", "train_loss", "learning_rate", "iterations_per_second", "tokens_per_second",
               "trained_tokens", "peak_memory"}


def initial_val_loss(backend, ckpts, name, config, **load):
    from prt_mlx.training import evaluate

    source = backend.load_base(ckpts["source"], **load)
    data = load_dataset(ckpts["data"], source.tokenizer, mask_prompt=config.mask_prompt)
    reward = backend.create_reward(reward_config(name), source, seed=config.seed)
    return evaluate(reward, source, data["valid"], config, pad_id_of(source.tokenizer, source.vocab_size), 384)


@pytest.mark.parametrize("name,lr", [("linear", 1e-2), ("transformer", 3e-3), ("lora", 3e-3), ("full", 1e-3)])
def test_training_lowers_validation_loss(backend, ckpts, tmp_path, name, lr):
    config = TrainingConfig(iters=24, batch_size=4, learning_rate=lr, steps_per_eval=12, steps_per_report=6,
                            save_every=12, mask_prompt=True, warmup_steps=2, lr_schedule="cosine")
    before = initial_val_loss(backend, ckpts, name, config)
    reporter = TrainingReporter(tmp_path / "out", total_steps=24, quiet=True)
    summary = train_reward(ckpts["source"], ckpts["data"], tmp_path / "out", reward_config(name), config,
                           backend="mlx", reporter=reporter)
    assert summary["best_val_loss"] < before - 0.1, (before, summary)
    assert len(reporter.train) == 4 and set(reporter.train[-1]) == REPORT_KEYS
    assert reporter.train[-1]["trained_tokens"] > 0 and reporter.train[-1]["tokens_per_second"] > 0
    assert [r["iteration"] for r in reporter.val] == [0, 12, 24]  # 0: before training, as mlx-lm validates
    assert reporter.val[0]["val_loss"] == pytest.approx(before, rel=1e-5)
    best = RewardArtifact.open(tmp_path / "out" / "best")
    assert best.meta["training"]["val_loss"] == pytest.approx(summary["best_val_loss"])
    final = RewardArtifact.open(tmp_path / "out")
    assert final.kind == reward_config(name).kind
    assert (tmp_path / "out" / "metrics.jsonl").exists() and (tmp_path / "out" / "checkpoint" / "state.json").exists()


class Interrupt(Exception):
    pass


class InterruptingReporter(TrainingReporter):
    def __init__(self, *args, stop_at, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_at = stop_at

    def on_train_report(self, info):
        super().on_train_report(info)
        if info["iteration"] == self.stop_at:
            raise Interrupt


def final_weights(backend, ckpts, out, name):
    source = backend.load_base(ckpts["source"])
    reward = backend.load_reward(RewardArtifact.open(out), source)
    return {k: np.array(v) for k, v in tree_flatten(reward.module.trainable_parameters())}


@pytest.mark.parametrize("name", ["lora", "transformer"])
def test_resumed_run_equals_uninterrupted(backend, ckpts, tmp_path, name):
    rc = reward_config(name, lora={"rank": 4, "num_layers": 2, "dropout": 0.1}) if name == "lora" else reward_config(name)
    config = TrainingConfig(iters=12, batch_size=3, learning_rate=3e-3, grad_accumulation_steps=2, warmup_steps=2,
                            lr_schedule="cosine", optimizer="adamw", weight_decay=0.01, save_every=4, steps_per_eval=6,
                            steps_per_report=1, seed=3)
    train_reward(ckpts["source"], ckpts["data"], tmp_path / "a", rc, config, backend="mlx",
                 reporter=TrainingReporter(tmp_path / "a", quiet=True))
    with pytest.raises(Interrupt):
        train_reward(ckpts["source"], ckpts["data"], tmp_path / "b", rc, config, backend="mlx",
                     reporter=InterruptingReporter(tmp_path / "b", quiet=True, stop_at=10))
    assert json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())["iteration"] == 8
    resumed = TrainingReporter(tmp_path / "b", quiet=True, resume=True)
    train_reward(ckpts["source"], ckpts["data"], tmp_path / "b", rc, config, backend="mlx", resume=True, reporter=resumed)
    assert [r["iteration"] for r in resumed.train] == list(range(1, 13))  # 1-8 kept from the first run, 9-12 new
    a, b = final_weights(backend, ckpts, tmp_path / "a", name), final_weights(backend, ckpts, tmp_path / "b", name)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("name", ["transformer", "lora"])
def test_gradient_checkpointing_gives_the_same_run(backend, ckpts, tmp_path, name):
    outs = []
    for flag in (False, True):
        config = TrainingConfig(iters=4, batch_size=2, learning_rate=1e-2, grad_checkpoint=flag, steps_per_eval=100)
        train_reward(ckpts["source"], ckpts["data"], tmp_path / str(flag), reward_config(name), config, backend="mlx",
                     reporter=TrainingReporter(tmp_path / str(flag), quiet=True))
        outs.append(final_weights(backend, ckpts, tmp_path / str(flag), name))
    for k in outs[0]:
        np.testing.assert_allclose(outs[0][k], outs[1][k], atol=1e-6, err_msg=k)


@pytest.mark.parametrize("bits,name", [(4, "lora"), (8, "linear")])
def test_quantized_source_trains(backend, ckpts, tmp_path, bits, name):
    config = TrainingConfig(iters=16, batch_size=4, learning_rate=1e-2 if name == "linear" else 3e-3, steps_per_eval=16,
                            mask_prompt=True)
    before = initial_val_loss(backend, ckpts, name, config, quantize=bits)
    summary = train_reward(ckpts["source"], ckpts["data"], tmp_path / "out", reward_config(name), config, backend="mlx",
                           quantize=bits, reporter=TrainingReporter(tmp_path / "out", quiet=True))
    assert summary["best_val_loss"] < before - 0.1
    model = PRTForCausalLM.from_pretrained(ckpts["source"], tmp_path / "out", backend="mlx", quantize=bits)
    assert model.rewards[0].config.kind == reward_config(name).kind and len(model.generate([3, 4, 5], max_tokens=4)) >= 0


def test_schedules():
    from prt_mlx.training import make_schedule

    def lrs(**kw):
        s = make_schedule(TrainingConfig(learning_rate=1.0, **kw), 10)
        return [s(i).item() for i in range(10)]

    assert lrs() == [1.0] * 10
    assert lrs(warmup_steps=4, lr_schedule="constant")[:5] == [0.25, 0.5, 0.75, 1.0, 1.0]
    cosine = lrs(warmup_steps=2, lr_schedule="cosine")
    assert cosine[2] == 1.0 and cosine[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)), abs=1e-6)
    linear = lrs(lr_schedule="linear")
    assert linear[0] == 1.0 and linear[-1] == pytest.approx(0.1, abs=1e-6)


@pytest.mark.parametrize("name", ["linear", "transformer", "lora"])
def test_trained_reward_transfers_to_another_target(backend, ckpts, tmp_path, name):
    """Train on the source, apply to a target of other depth/width whose head has 64 padding rows."""
    config = TrainingConfig(iters=8, batch_size=4, learning_rate=1e-2, steps_per_eval=100, mask_prompt=True)
    train_reward(ckpts["source"], ckpts["data"], tmp_path / "r", reward_config(name), config, backend="mlx",
                 reporter=TrainingReporter(tmp_path / "r", quiet=True))
    model = PRTForCausalLM.from_pretrained(ckpts["target"], tmp_path / "r", backend="mlx")
    assert model.target.vocab_size == 384 + 64 and model.target.hidden_size == 96 and model.vocab_size == 384
    prompt = model.encode("Question: What is the capital of Avalon? Answer:")
    steps = list(model.stream_steps(prompt, max_tokens=6))
    tokens = [s.token for s in steps]
    assert all(t < 384 for t in tokens)
    # every greedy token is the argmax of the composition, computed here independently of the decoding loop
    artifact = RewardArtifact.open(tmp_path / "r")
    source = backend.load_base(ckpts["source"])
    target = backend.load_base(ckpts["target"])
    twin = backend.load_reward(artifact, backend.load_base(ckpts["source"])) if name == "lora" else None
    sequence = list(prompt)
    for token in tokens:
        ids = mx.array([sequence])
        base = np.array(target.forward(ids).logits)[0, -1, :384]
        if twin is not None:
            r = np.array(twin.forward(ids))[0, -1, :384]
        else:
            hidden = np.array(source.forward(ids, hidden=True).hidden)
            r = reference.reward_logits(artifact.tensors(), hidden, artifact.config)[0, -1, :384]
        composed = reference.log_softmax(reference.log_softmax(base) + r / artifact.config.lam)
        assert token == int(np.argmax(composed))
        sequence.append(token)
    if steps[-1].finish_reason == "length":
        assert len(tokens) == 6


@pytest.mark.parametrize("kind", ["linear", "transformer"])
@pytest.mark.parametrize("base_name,lam,dtype", [("source", 1.0, None), ("source", 0.5, None), ("target", 0.5, None),
                                                 ("source", 0.5, "bfloat16")])
def test_reward_composes_its_logits_with_the_sources(backend, ckpts, base_name, lam, dtype, kind, monkeypatch):
    """With the fused loss and no entropy term a `linear` or `transformer` reward on a plain output layer computes
    r + λ·b itself from the source's hidden states: the loss and gradients of the general path (the same loss given
    as another function takes that path), also where the output layer has rows past the vocabulary (the target: 64;
    they get no gradient) and where the source is bfloat16 (its product in bfloat16, as its own logits). The
    trainer's step gets a `linear` reward's the same, computed directly in blocks of tokens (here 5)."""
    import functools

    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from mlx_testutil import perturb
    from prt_mlx.loss import fused_prt_loss
    import prt_mlx.training
    from prt_mlx.training import batch_loss, composable_weight, reward_step
    from prtcore.data import collate

    composed_calls, direct_calls = [], []
    composed_loss = prt_mlx.training.composed_prt_loss
    monkeypatch.setattr(prt_mlx.training, "composed_prt_loss",
                        lambda *a, **kw: composed_calls.append(1) or composed_loss(*a, **kw))
    direct = functools.partial(prt_mlx.training.composed_head_gradient, rows=5)
    monkeypatch.setattr(prt_mlx.training, "composed_head_gradient",
                        lambda *a, **kw: direct_calls.append(1) or direct(*a, **kw))

    source = backend.load_base(ckpts[base_name], **({"dtype": dtype} if dtype else {}))
    data = load_dataset(ckpts["data"], source.tokenizer)
    batch = collate(data["train"][:4], pad_id_of(source.tokenizer, source.vocab_size))
    reward = backend.create_reward(reward_config(kind, lam=lam), source, seed=0)
    perturb(reward)
    vocab = len(source.tokenizer)
    weight = composable_weight(reward, source, vocab)
    assert weight is not None and str(weight.dtype) == f"mlx.core.{dtype or 'float32'}"
    value_and_grad = nn.value_and_grad(reward.module, lambda fn: fn())
    results = []
    for loss in (fused_prt_loss, lambda *a, **kw: fused_prt_loss(*a, **kw)):
        (value, ntokens), grads = value_and_grad(batch_loss(reward, source, batch, vocab, lam=lam, entropy_coeff=0.0,
                                                            loss=loss))
        results.append((float(value), int(ntokens), {k: np.array(v) for k, v in tree_flatten(grads)}))
    assert composed_calls == [1]  # the fused loss composed; the other function took the general path
    (value, ntokens), grads = reward_step(reward, source, vocab, {"loss": fused_prt_loss, "lam": lam,
                                                                  "entropy_coeff": 0.0})(batch)
    results.append((float(value), int(ntokens), {k: np.array(v) for k, v in tree_flatten(grads)}))
    assert len(direct_calls) == (kind == "linear") and len(composed_calls) == 1 + (kind == "transformer")
    general, n_b, grads_b = results[1]
    for composed, n_a, grads_a in results[::2]:
        assert n_a == n_b and composed == pytest.approx(general, rel=1e-6)
        assert sorted(grads_a) == sorted(grads_b) and (len(grads_a) > 1) == (kind == "transformer")
        for name, grad in grads_a.items():
            np.testing.assert_allclose(grad, grads_b[name], rtol=1e-4, atol=1e-6, err_msg=name)
            assert np.abs(grads_b[name]).max() > 1e-5, name
        assert not grads_a["head.weight"][vocab:].any()


@pytest.mark.parametrize("model_type,extra_rows,plain", [("llama", 0, True), ("qwen2", 6, True),
                                                         ("gemma2", 0, False), ("cohere", 0, False)])
def test_plain_output_weight_only_where_the_logits_are_hidden_times_weight(backend, ckpts, tmp_path, model_type,
                                                                          extra_rows, plain):
    """Soft-capped (gemma2) and scaled (cohere) logits are not `hidden @ weightᵀ`; tied (qwen2's tiny config) and
    padded output layers are."""
    from prt_mlx.training import composable_weight
    from prtcore.testing.checkpoints import make_tiny_checkpoint

    path = make_tiny_checkpoint(tmp_path / model_type, model_type, tokenizer_dir=ckpts["tok"],
                                extra_vocab_rows=extra_rows, family_overrides=True)
    base = backend.load_base(path)
    weight = base.plain_output_weight()
    assert (weight is not None) == plain
    reward = backend.create_reward(reward_config("linear"), base, seed=0)
    vocab = len(base.tokenizer)
    assert (composable_weight(reward, base, vocab) is not None) == plain
    if plain:
        out = base.forward([[5, 9, 14, 3]], hidden=True)
        np.testing.assert_allclose(np.array(out.hidden @ weight.T), np.array(out.logits), rtol=1e-5, atol=1e-6)
        assert composable_weight(reward, base, weight.shape[0] + 1) is None


def test_heads_the_probe_cannot_see_reading_the_hidden_states_are_not_plain():
    """mlx-lm's minicpm divides the trunk's output by hidden_size / dim_model_base before its untied head (the
    output layer does not read the hidden states a linear reward reads, so its logits are not `hidden @ weightᵀ`),
    and multiplies by its tied embedding's weight directly (no layer call the probe could see): neither is plain."""
    from mlx_lm.models import minicpm

    from prt_mlx.base import forward_with_hidden, plain_head_weight

    for tied in (False, True):
        args = minicpm.ModelArgs(model_type="minicpm", hidden_size=32, dim_model_base=8, num_hidden_layers=1,
                                 intermediate_size=64, num_attention_heads=4, rms_norm_eps=1e-5, vocab_size=50,
                                 num_key_value_heads=2, scale_depth=1.4, scale_emb=12.0, tie_word_embeddings=tied)
        model = minicpm.Model(args)
        assert plain_head_weight(model) is None
        if not tied:
            logits, hidden = forward_with_hidden(model, mx.array([[1, 7, 3]]))
            assert not np.allclose(np.array(hidden @ model.lm_head.weight.T), np.array(logits), rtol=1e-3)


def test_new_weights_frees_the_old_moments_as_it_makes_the_new_ones():
    """The optimiser's state evaluated apart from the weights: the update of a large parameter needs two
    temporaries of its size (one graph: four), the update itself unchanged."""
    import mlx.nn as nn
    import mlx.optimizers as optim

    from prt_mlx.training import new_weights

    def updated(staged):
        module = nn.Linear(1024, 1024, bias=False)
        module.weight = mx.random.normal((1024, 1024), key=mx.random.key(0))
        optimizer = optim.Adam(learning_rate=1e-2, bias_correction=True)
        optimizer.init(module.trainable_parameters())
        grads = {"weight": mx.random.normal((1024, 1024), key=mx.random.key(1))}
        for _ in range(2):  # the second update has moments to free
            mx.eval(module.parameters(), optimizer.state, grads)
            mx.clear_cache()
            mx.reset_peak_memory()
            before = mx.get_active_memory()
            if staged:
                module.update(new_weights(optimizer, module, grads))
                mx.eval(module.parameters())
            else:
                optimizer.update(module, grads)
                mx.eval(module.parameters(), optimizer.state)
            extra = (mx.get_peak_memory() - before) / module.weight.nbytes
        return module.weight, extra

    staged, staged_extra = updated(True)
    one_graph, one_graph_extra = updated(False)
    np.testing.assert_array_equal(np.array(staged), np.array(one_graph))
    # the meter sees the one graph's temporaries (4.0 with mlx 0.32), so it would see the staged update's
    assert staged_extra <= 2.01 < one_graph_extra, (staged_extra, one_graph_extra)


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "gemma2", "gemma3_text", "granite", "phi3"])
def test_twin_starts_after_the_blocks_it_shares_with_the_source(backend, ckpts, tmp_path, model_type, monkeypatch):
    """A LoRA twin on the last 2 of 4 blocks: the source's pass records the state after the first 2, and the
    twin's pass starts from it; loss and gradients equal those of two full passes (families with sliding and full
    attention per block, scaled embeddings and residuals, partial rotary)."""
    import mlx.nn as nn

    from mlx_testutil import perturb
    import prt_mlx.training
    from prt_mlx.training import batch_loss
    from prtcore.data import collate
    from prtcore.testing.checkpoints import make_tiny_checkpoint

    path = make_tiny_checkpoint(tmp_path / model_type, model_type, tokenizer_dir=ckpts["tok"], seed=0,
                                family_overrides=True, num_hidden_layers=4)
    source = backend.load_base(path)
    data = load_dataset(ckpts["data"], source.tokenizer)
    batch = collate(data["train"][:4], pad_id_of(source.tokenizer, source.vocab_size))
    reward = backend.create_reward(reward_config("lora", lora={"rank": 4, "num_layers": 2}), source, seed=0)
    perturb(reward)
    vocab = len(source.tokenizer)
    made, shared_blocks = [], prt_mlx.training.shared_blocks
    monkeypatch.setattr(prt_mlx.training, "shared_blocks", lambda *a: made.append(shared_blocks(*a)) or made[-1])
    calls = []  # calls of the first block
    first = source.model.layers[0]
    block_call = type(first).__call__  # (an instance cannot shadow __call__: counted through its class)

    def counted(self, *args, **kwargs):
        if self is first:
            calls.append(1)
        return block_call(self, *args, **kwargs)

    monkeypatch.setattr(type(first), "__call__", counted)
    value_and_grad = nn.value_and_grad(reward.module, lambda fn: fn())
    results = []
    for share in (True, False):
        if not share:
            monkeypatch.setattr(prt_mlx.training, "shared_blocks", lambda *a: None)
        calls.clear()
        (value, ntokens), grads = value_and_grad(batch_loss(reward, source, batch, vocab, lam=1.0,
                                                            entropy_coeff=0.0))
        results.append((float(value), int(ntokens), {k: np.array(v) for k, v in tree_flatten(grads)}))
        assert len(calls) == (1 if share else 2)  # shared: the source's pass alone runs the first block
    assert made[0].count == 2 and made[0].state is not None
    (shared_loss, n_a, grads_a), (full_loss, n_b, grads_b) = results
    assert n_a == n_b and shared_loss == pytest.approx(full_loss, rel=1e-6)
    assert sorted(grads_a) == sorted(grads_b) and grads_a
    for name, grad in grads_a.items():
        np.testing.assert_allclose(grad, grads_b[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_shared_blocks_keep_the_trunks_mask_choice_and_leave_looped_trunks_alone():
    """A trunk that picks a block's mask by its class sees the block's class in the stand-in; a trunk that runs its
    blocks more than once records nothing, so the twin's pass is a full one."""
    import mlx.nn as nn

    from prt_mlx.prefix import SharedBlocks

    class Causal(nn.Module):
        def __call__(self, x, causal):
            return x + (mx.cumsum(x, axis=1) if causal else mx.sum(x, axis=1, keepdims=True))

    class Plain(Causal):
        pass

    class Trunk(nn.Module):
        def __init__(self, loops):
            super().__init__()
            self.layers, self.loops = [Plain(), Causal(), Plain()], loops

        def __call__(self, x):
            for _ in range(self.loops):
                for layer in self.layers:
                    x = layer(x, isinstance(layer, Causal) and not isinstance(layer, Plain))
            return x

    x = mx.arange(12, dtype=mx.float32).reshape(1, 4, 3)
    for loops in (1, 2):
        trunk = Trunk(loops)
        shared = SharedBlocks(trunk, 2)
        with shared.recording():
            recorded = trunk(x)
        np.testing.assert_array_equal(np.array(recorded), np.array(trunk(x)))
        assert (shared.state is None) == (loops == 2) and "layers" not in vars(trunk)
        with shared.replaying():
            replayed = trunk(x)
        np.testing.assert_array_equal(np.array(replayed), np.array(trunk(x)))
