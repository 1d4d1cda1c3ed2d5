"""Training a reward with the source frozen (mlx).

One iteration reads one batch; the optimiser steps every `grad_accumulation_steps` iterations (and at the last)
with the mean of their gradients, so `warmup_steps` and the schedule count optimiser updates. Adam and AdamW use
bias correction (as torch.optim does). Layout of `output_dir`:

    prt_config.json, weights, tokenizer   the final reward artifact
    best/                                 the artifact with the best validation loss
    checkpoint/                           weights.safetensors, optimizer.safetensors, state.json (resume=True)
    metrics.jsonl, summary.json, loss_curve.png   (prtcore.reporting.TrainingReporter)

A resumed run continues exactly: batches are a pure function of (seed, iteration) (prtcore.data), the global
mlx RNG (LoRA dropout) is reseeded from (seed, iteration) every iteration, and the optimiser state is restored.

Launched with `mlx.launch -n N`, the ranks share each global batch (prt_mlx.distributed): the run makes the
updates of one process, and rank 0 alone writes checkpoints, artifacts and metrics.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import time
from pathlib import Path

import attrs
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map, tree_map_with_path

from prtcore.artifacts import read_json, replace_dir, write_into, write_json_atomic
from prtcore.config import TrainingConfig
from prtcore.data import Batch, evaluation_batches, iterate_batches
from prtcore.tokens import pad_id_of
from prtcore.errors import TrainingError
from prtcore.loop import open_run, train_report, training_splits, validate_before_training, validator
from prtcore.sampling import align_vocab
from prtcore.training import run_record, what_to_change

from .base import shared_vocab_size
from .distributed import DataParallel
from .loss import composed_head_gradient, composed_prt_loss, fused_prt_loss
from .namespace import MLX
from .prefix import shared_blocks
from .rewards import LinearNet

CHECKPOINT, BEST = "checkpoint", "best"


# ------------------------------------------------------------------------------------------------ pieces
def make_schedule(config: TrainingConfig, total_updates: int):
    """Learning rate per optimiser update: linear warm-up to the peak, then constant / cosine / linear decay."""
    lr, warm = config.learning_rate, config.warmup_steps
    rest = max(1, total_updates - warm)

    def schedule(step):
        s = mx.array(step).astype(mx.float32)
        progress = mx.minimum(mx.maximum(s - warm, 0.0), rest) / rest
        if config.lr_schedule == "cosine":
            main = lr * 0.5 * (1.0 + mx.cos(math.pi * progress))
        elif config.lr_schedule == "linear":
            main = lr * (1.0 - progress)
        else:
            main = mx.array(lr, dtype=mx.float32)
        return mx.where(s < warm, lr * (s + 1.0) / max(warm, 1), main) if warm else main

    return schedule


def make_optimizer(config: TrainingConfig, total_updates: int) -> optim.Optimizer:
    schedule = make_schedule(config, total_updates)
    if config.optimizer == "adamw":
        return optim.AdamW(learning_rate=schedule, weight_decay=config.weight_decay, bias_correction=True)
    return optim.Adam(learning_rate=schedule, bias_correction=True)


def next_token_arrays(batch: Batch):
    """(inputs, targets, weights) of a batch: each position predicts the next token, where the mask keeps it."""
    ids, mask = mx.array(batch.ids), mx.array(batch.mask)
    return ids[:, :-1], ids[:, 1:], mask[:, 1:]


def batch_loss(reward, source, batch: Batch, vocab: int, *, lam: float, entropy_coeff: float, loss=fused_prt_loss):
    """A function of nothing that builds the PRT loss of `batch` (the source pass is outside the gradient) with
    `loss`, a prtcore.objectives.PRTLoss (default: the fused one, prt_mlx.loss), given λ and the entropy
    coefficient; it returns (loss, target tokens). A reward net that composes with the source (`linear`,
    `transformer`) on a source with a plain output layer computes r + λ·b itself, and the loss reads one logit
    tensor instead of two (`composition_weight`). A LoRA twin's pass starts after the blocks it leaves unadapted,
    from the source pass's state there (prt_mlx.prefix)."""
    inputs, targets, weights = next_token_arrays(batch)
    images = {} if batch.images is None else {"images": batch.images}  # vision-language bases (prtcore.vision)
    shared = shared_blocks(reward, source) if batch.images is None else None
    with shared.recording() if shared else contextlib.nullcontext():
        src = source.forward(inputs, hidden=reward.reads_source_hidden, **images)
    hidden = None if src.hidden is None else mx.stop_gradient(src.hidden)
    base_weight = composition_weight(reward, source, batch, vocab, loss=loss, entropy_coeff=entropy_coeff)
    if base_weight is not None:  # the source's logits stay an unevaluated part of the graph

        def objective():
            composed = reward.module(hidden.astype(mx.float32), base_weight=base_weight, lam=lam)
            value, metrics = composed_prt_loss(composed, targets, weights, lam=lam)
            return value, metrics["ntokens"]

        return objective
    base = mx.stop_gradient(align_vocab(src.logits, vocab, xp=MLX))

    def objective():
        with shared.replaying() if shared else contextlib.nullcontext():
            r = align_vocab(reward.forward(inputs, source_hidden=hidden, **images), vocab, fill=0.0, xp=MLX)
        value, metrics = loss(base, r, targets, weights, lam=lam, entropy_coeff=entropy_coeff)
        return value, metrics["ntokens"]

    return objective


def reward_step(reward, source, vocab: int, objective: dict):
    """The training step of `reward` with `objective` (`reward_objective`): step(batch) → ((loss, target tokens),
    gradients of reward.module), what `train` and the bench run. A `linear` reward composed with its source gets
    its gradient directly (`prt_mlx.loss.composed_head_gradient`: a third of autodiff's memory for the loss), any
    other through autodiff of `batch_loss`."""
    value_and_grad = nn.value_and_grad(reward.module, lambda fn: fn())

    def step(batch):
        base_weight = None
        if isinstance(reward.module, LinearNet):
            base_weight = composition_weight(reward, source, batch, vocab, loss=objective["loss"],
                                             entropy_coeff=objective["entropy_coeff"])
        if base_weight is None:
            return value_and_grad(batch_loss(reward, source, batch, vocab, **objective))
        inputs, targets, weights = next_token_arrays(batch)
        hidden = mx.stop_gradient(source.forward(inputs, hidden=True).hidden).astype(mx.float32)
        value, ntokens, grad = composed_head_gradient(
            hidden.reshape(-1, hidden.shape[-1]), reward.module.head.weight, base_weight, targets.reshape(-1),
            weights.reshape(-1), lam=objective["lam"])
        return (value, ntokens), {"head": {"weight": grad}}

    return step


def composition_weight(reward, source, batch: Batch, vocab: int, *, loss, entropy_coeff: float):
    """`composable_weight` where the step may compose (the fused loss without an entropy term, a text batch)."""
    if loss is not fused_prt_loss or entropy_coeff or batch.images is not None:
        return None
    return composable_weight(reward, source, vocab)


def composable_weight(reward, source, vocab: int):
    """The source's output weight over the shared `vocab` when the reward's net can compute r + λ·b
    (`RewardNet.composes_with_source`): the source's logits are `hidden @ weightᵀ` (`plain_output_weight`), both
    output layers have a row for every token of the vocabulary; else None."""
    if not getattr(reward.module, "composes_with_source", False):
        return None
    weight, head = source.plain_output_weight(), reward.module.head.weight
    if weight is None or min(weight.shape[0], head.shape[0]) < vocab:
        return None
    return weight[:vocab]


@contextlib.contextmanager
def training_mode(module: nn.Module, enabled: bool):
    """Train mode (dropout) and, if `enabled`, gradient checkpointing of the module's blocks, undone afterwards."""
    module.train()
    patched = []
    if enabled:
        if hasattr(module, "checkpoint"):
            module.checkpoint = True
        elif hasattr(module, "layers"):
            cls = type(module.layers[0])
            original = cls.__call__

            def call(self, *args, **kwargs):
                def inner(params, *a):
                    self.update(params)
                    return original(self, *a, **kwargs)

                return mx.checkpoint(inner)(self.trainable_parameters(), *args)

            cls.__call__ = call
            patched.append((cls, original))
    try:
        yield
    finally:
        for cls, original in patched:
            cls.__call__ = original
        if hasattr(module, "checkpoint"):
            module.checkpoint = False
        module.eval()


def reward_objective(reward, loss=fused_prt_loss) -> dict:
    """`batch_loss`'s keyword arguments for training `reward`: `loss` with its config's λ and entropy coefficient."""
    return {"loss": loss, "lam": reward.config.lam, "entropy_coeff": reward.config.entropy_coeff}


def evaluate(reward, source, examples, config: TrainingConfig, pad_id: int, vocab: int,
             dp: DataParallel | None = None, *, objective: dict | None = None) -> float:
    """Token-weighted validation loss of `batch_loss` with `objective` (default: `reward_objective(reward)`); under
    data parallelism each rank evaluates every size-th batch."""
    objective = reward_objective(reward) if objective is None else objective
    rank, size = (dp.rank, dp.size) if dp is not None else (0, 1)
    total = count = 0.0
    for i, batch in enumerate(evaluation_batches(examples, config.batch_size, pad_id, max_batches=config.val_batches)):
        if i % size != rank:
            continue
        value, ntok = batch_loss(reward, source, batch, vocab, **objective)()
        mx.eval(value, ntok)
        total += value.item() * ntok.item()
        count += ntok.item()
    if dp is not None and dp.size > 1:
        total, count = dp.total(mx.array([total, count], dtype=mx.float32)).tolist()
    return total / max(count, 1.0)


def new_weights(optimizer, module: nn.Module, grads) -> dict:
    """The optimiser's update of `module`, not yet applied: its new state evaluated, the new weights lazy.

    The state is evaluated apart from the weights so that each old moment is freed as its new one is made: the
    update then needs two temporaries the size of a parameter, against four as one graph (Adam, mlx 0.32). For a
    reward with a (hidden x V) head that is its peak: at a 0.5B source's shape, 152k x 512 tokens, the `linear`
    reward's step peaked at 1.20 of LoRA's memory with one graph, 1.06 staged."""
    weights = optimizer.apply_gradients(grads, module)
    mx.eval(optimizer.state)
    return weights


def check_step(step: int, loss, grads, output_dir, *, new_state=None, reward_config=None) -> None:
    """Stop on a NaN or inf loss or gradient, before the optimiser or a checkpoint sees it (the last checkpoint,
    written at a good step, stays as it is), and at an update that would train nothing: every gradient zero, or
    an optimiser state that overflowed (Adam squares the gradients: above about 2e19, e.g. with a λ so small or
    an entropy coefficient so large, that is inf and the update 0). `new_state`: the optimiser's state after an
    update not yet applied; `reward_config`: the trained reward's (None for a fine-tune). One host
    synchronisation."""
    finite = [mx.isfinite(loss)] + [mx.all(mx.isfinite(g)) for _, g in tree_flatten(grads or {})]
    checks = [mx.all(mx.stack(finite))]
    if new_state is not None:
        checks.append(mx.any(mx.stack([mx.any(g != 0) for _, g in tree_flatten(grads)])))
        checks.append(mx.all(mx.stack([mx.all(mx.isfinite(s)) for _, s in tree_flatten(new_state)])))
    finite, *update_ok = mx.stack(checks).tolist()
    kept = f"(the last good checkpoint in {Path(output_dir) / CHECKPOINT} is kept)"
    if not finite:
        value = loss.item()
        what = f"the loss is {value}" if not math.isfinite(value) else "a gradient is not finite"
        raise TrainingError(f"step {step}: {what}; lower the learning rate {kept}")
    if update_ok and not update_ok[0]:
        raise TrainingError(f"step {step}: every gradient is zero, so training changes nothing"
                            f"{what_to_change(reward_config)} {kept}")
    if update_ok and not update_ok[1]:
        raise TrainingError(f"step {step}: the gradients overflow the optimiser's state, so its update changes "
                            f"nothing{what_to_change(reward_config)} {kept}")


# ------------------------------------------------------------------------------------------------ checkpoints
def save_checkpoint(path: Path, module: nn.Module, optimizer, state: dict) -> None:
    """`module`'s trainable weights, the optimiser state and `state` into directory `path`, replaced whole."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
    try:
        mx.save_safetensors(str(tmp / "weights.safetensors"), dict(tree_flatten(module.trainable_parameters())))
        mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
        write_json_atomic(tmp / "state.json", state)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def saved_state(output_dir, load) -> dict | None:
    """`load(output_dir/checkpoint)` (the state it restores) when a checkpoint is there to resume from, else None."""
    path = Path(output_dir) / CHECKPOINT
    return load(path) if (path / "state.json").exists() else None


def load_checkpoint(path: Path, reward, optimizer) -> dict:
    path = Path(path)
    state = read_json(path / "state.json", "training checkpoint state")
    if state.get("reward") != reward.config.to_dict():
        raise TrainingError(f"{path}: the checkpoint is of another reward configuration; start a new run or pass the same settings")
    restore_checkpoint(path, reward.module, optimizer)
    return state


def restore_checkpoint(path: Path, module: nn.Module, optimizer) -> None:
    """The trainable weights of `module` and the optimiser state from checkpoint directory `path`."""
    weights = mx.load(str(path / "weights.safetensors"))
    module.load_weights(list(weights.items()), strict=False)
    saved = mx.load(str(path / "optimizer.safetensors"))
    optimizer.init(module.trainable_parameters())

    def restore(name, value):
        if name not in saved:
            raise TrainingError(f"{path}: optimiser state {name!r} is missing")
        return saved[name]

    optimizer.state = tree_map_with_path(restore, optimizer.state)
    mx.eval(module.parameters(), optimizer.state)


# ------------------------------------------------------------------------------------------------ loop
def run_loop(module: nn.Module, step, batches, optimizer, config: TrainingConfig, iters: int, state: dict, reporter,
             output_dir, *, checkpoint, validate=None, dp: DataParallel | None = None, reward_config=None) -> None:
    """The iterations after `state["iteration"]` up to `iters`, shared by the reward and the SFT trainers.

    `step(batch)` returns `((loss, target tokens), gradients of module)`; `state` (iteration, trained_tokens,
    and the train losses since the last report, so that a resumed run reports what an uninterrupted one would)
    is updated in place; `checkpoint(it)` and `validate(it)` (None: no validation) are called on optimiser-update
    boundaries once due. With `dp`, the ranks share each global batch (see prt_mlx.distributed). Every step is
    checked (`check_step`), naming `reward_config` (None for a fine-tune) when it trains nothing.
    """
    if dp is None:
        dp = DataParallel()  # one process: every dp step below leaves its input as it is
    accum = config.grad_accumulation_steps
    grads, pending, window = None, 0, {"n": 0, "tokens": 0, "time": 0.0}  # this process's, for the rates
    unreported = state.setdefault("unreported", {"loss": 0.0, "n": 0})
    eval_due = save_due = False
    lr = optimizer.learning_rate.item()
    validate_before_training(state, validate)
    mx.reset_peak_memory()
    with training_mode(module, config.grad_checkpoint):
        for it in range(state["iteration"] + 1, iters + 1):
            tic = time.perf_counter()
            mx.random.seed(config.seed * 1_000_003 + it)
            (loss, ntok), g = step(next(batches))
            loss, batch_tokens = dp.batch_loss(loss, ntok)  # the whole global batch's (this rank's when alone)
            g = dp.weigh(g, ntok, batch_tokens)
            ntok = batch_tokens
            grads = g if grads is None else tree_map(mx.add, grads, g)
            pending += 1
            mx.eval(loss, ntok, grads)
            update = pending == accum or it == iters
            if update:
                grads = dp.average(grads)
                lr = optimizer.learning_rate.item()
                mean = grads if pending == 1 else tree_map(lambda x: x / pending, grads)  # one batch: no copy
                weights = new_weights(optimizer, module, mean)
            check_step(it, loss, grads if update or dp.size == 1 else None, output_dir,  # the same on every rank
                       new_state=optimizer.state if update else None, reward_config=reward_config)
            if update:
                module.update(weights)
                mx.eval(module.parameters())
                grads, pending = None, 0
            window["time"] += time.perf_counter() - tic
            window["n"] += 1
            unreported["loss"] += loss.item()
            unreported["n"] += 1
            tokens = int(ntok.item())
            window["tokens"] += tokens
            state["trained_tokens"] += tokens
            state["iteration"] = it
            if it % config.steps_per_report == 0 or it == iters:
                reporter.on_train_report(train_report(
                    it, unreported["loss"] / unreported["n"], lr, steps=window["n"], tokens=window["tokens"],
                    seconds=window["time"], trained_tokens=state["trained_tokens"],
                    peak_memory=mx.get_peak_memory() / 1e9))
                window = {"n": 0, "tokens": 0, "time": 0.0}
                unreported.update(loss=0.0, n=0)
            # Validation and saving fall on optimiser-update boundaries (the first one at or after they are due).
            eval_due = eval_due or it % config.steps_per_eval == 0 or it == iters
            save_due = save_due or it % config.save_every == 0 or it == iters
            if grads is None and eval_due and validate is not None:
                validate(it)
                eval_due = False
            if grads is None and save_due:
                checkpoint(it)
                save_due = False


def train(source, reward, data: dict, config: TrainingConfig, output_dir, *, iters: int, resume: bool = False,
          reporter=None, loss=fused_prt_loss) -> dict:
    """Train `reward` on `data["train"]` (prtcore.data Examples), validating on `data.get("valid")`, minimising
    `loss` (a prtcore.objectives.PRTLoss; default: the fused one, prt_mlx.loss) with the λ and entropy coefficient
    of the reward's config."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train_set, val_set = training_splits(data)
    dp = DataParallel()
    dp.check_batch(config.batch_size, len(train_set))
    vocab, pad_id, accum = shared_vocab_size(source.tokenizer), pad_id_of(source.tokenizer, source.vocab_size), config.grad_accumulation_steps
    total_updates = -(-iters // accum)
    optimizer = make_optimizer(config, total_updates)
    optimizer.init(reward.module.trainable_parameters())
    state, reporter = open_run(  # a resumed run: its checkpoint's state, the metrics up to it
        output_dir, iters=iters, resume=resume, reporter=reporter, main=dp.main, wait=dp.barrier,
        load_state=lambda: saved_state(output_dir, lambda path: load_checkpoint(path, reward, optimizer)))
    meta = {"reward": reward.config.to_dict(), "training": attrs.asdict(config), "iters": iters, "data_position": None}
    objective = reward_objective(reward, loss)

    def checkpoint(it):
        if dp.main:
            save_checkpoint(output_dir / CHECKPOINT, reward.module, optimizer, {**meta, **state, "data_position": it})

    def save_best(it, val_loss):
        if dp.main:
            reward.save(output_dir / BEST, source=source, vocab_size=vocab,
                        extra={"training": {"iteration": it, "val_loss": val_loss}})

    validate = validator(state, reporter, lambda: evaluate(reward, source, val_set, config, pad_id, vocab, dp,
                                                           objective=objective), save_best)

    batches = iterate_batches(train_set, config.batch_size, pad_id, seed=config.seed, start_step=state["iteration"],
                              rank=dp.rank, world_size=dp.size)

    step = reward_step(reward, source, vocab, objective)
    run_loop(reward.module, step, batches, optimizer, config, iters, state, reporter, output_dir, checkpoint=checkpoint,
             validate=validate if val_set else None, dp=dp, reward_config=reward.config)
    extra = run_record(reporter, data, iters=iters, trained_tokens=state["trained_tokens"],
                       best_val_loss=state["best_val_loss"], best_iteration=state["best_iteration"])
    if dp.main:
        write_into(output_dir, lambda staging: reward.save(staging, source=source, vocab_size=vocab, extra=extra))
    dp.barrier()  # the artifact is complete when any rank returns
    return reporter.finish(best_iteration=state["best_iteration"], artifact=str(output_dir))
