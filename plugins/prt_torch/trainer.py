"""`PRTTrainer`: a transformers Trainer whose loss is the PRT objective over a frozen source.

    reward = backend.create_reward(RewardConfig(kind="twin"), source)
    trainer = PRTTrainer(reward, source, args=TrainingArguments(...), train_dataset=examples["train"],
                         eval_dataset=examples["valid"])
    trainer.train()
    trainer.save_reward("out/reward")

The model the Trainer trains, checkpoints and restores is the reward's module (a LoRA twin: its PeftModel);
the source runs without gradients inside `compute_loss`. Datasets are sequences of prtcore.data.Example (or
`(ids, mask)` pairs, or dicts with "ids" and "mask").

Under `torchrun` / `accelerate launch` (prt_torch.distributed) the loss of every rank is scaled so that the
gradients DDP averages equal those of one process on the whole batch; logged metrics are summed over the ranks;
each rank evaluates the whole validation set (identical results, no padded shards). Under FSDP (version 2) the
frozen source is sharded too: a LoRA twin's source pass runs through the sharded model with its adapters off, and
another reward's source is sharded on its own (prt_torch.distributed.shard_frozen).
"""

from __future__ import annotations

from functools import partial
from inspect import signature
from typing import Any, Sequence

import contextlib

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ExportableState

from prtcore.config import TrainingConfig
from prtcore.data import Example, collate
from prtcore.tokens import pad_id_of
from prtcore.errors import DataError, TrainingError
from prtcore.model import ForwardOutput
from prtcore.sampling import align_vocab

from .base import TorchBaseLM
from .distributed import fsdp_requested, shard_frozen
from .loss import composed_prt_loss, fused_prt_loss
from .rewards import TorchRewardModel

METRICS = ("nll", "accuracy", "entropy")
TRAIN_SUMS = ("ntokens", "loss") + METRICS + ("entropy_tokens",)  # what `_track` adds up for a training log


def as_example(item) -> Example:
    if isinstance(item, Example):
        return item
    if isinstance(item, dict):
        ids = list(item["ids"])
        return Example(ids, list(item.get("mask", [1] * len(ids))))
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return Example(list(item[0]), list(item[1]))
    raise DataError(f"a training example must be an Example, an (ids, mask) pair or a dict with 'ids', got {type(item).__name__}")


class PRTCollator:
    """Right-pads examples (prtcore.data.collate) into {"ids": (B, L) long, "mask": (B, L) float}."""

    def __init__(self, pad_id: int, pad_to_multiple: int = 8):
        self.pad_id, self.pad_to_multiple = int(pad_id), pad_to_multiple

    def __call__(self, features: Sequence[Any]) -> dict[str, torch.Tensor]:
        batch = collate([as_example(f) for f in features], self.pad_id, pad_to_multiple=self.pad_to_multiple)
        out = {"ids": torch.from_numpy(batch.ids.astype(np.int64)), "mask": torch.from_numpy(batch.mask)}
        if batch.images is not None:  # vision-language bases: prtcore.vision.Images per row
            out["images"] = list(batch.images)
        return out


def training_arguments(config: TrainingConfig, output_dir, **overrides) -> TrainingArguments:
    """TrainingArguments equivalent to prtcore's TrainingConfig (`overrides` win)."""
    schedule = {"constant": "constant_with_warmup" if config.warmup_steps else "constant", "cosine": "cosine",
                "linear": "linear"}[config.lr_schedule]
    kwargs = dict(
        output_dir=str(output_dir), learning_rate=config.learning_rate, per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accumulation_steps,
        optim="adamw_torch_fused", weight_decay=config.weight_decay,
        lr_scheduler_type=schedule, warmup_steps=config.warmup_steps, logging_steps=config.steps_per_report,
        eval_strategy="steps", eval_steps=config.steps_per_eval, save_steps=config.save_every, seed=config.seed,
        data_seed=config.seed, report_to="none", dataloader_pin_memory=torch.cuda.is_available(),
    )
    if config.grad_checkpoint:
        fields = TrainingArguments.__dataclass_fields__
        kwargs["activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"] = True
    if config.iters is not None:
        kwargs["max_steps"] = config.iters
    if config.epochs is not None:
        kwargs["num_train_epochs"] = config.epochs
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def batch_loss(reward: TorchRewardModel, source: TorchBaseLM, model, inputs, vocab: int, *, lam: float,
               entropy_coeff: float, loss=fused_prt_loss, entropy_metric: bool = True,
               sharded: bool = False) -> tuple[torch.Tensor, dict]:
    """(loss, metrics) of one batch {"ids", "mask"[, "images"]}: `loss`, a prtcore.objectives.PRTLoss (default: the
    fused one, prt_torch.loss), over the shared `vocab`, given λ and the entropy coefficient; a mean over the
    batch's masked target tokens. `model` is the reward's module as the Trainer wraps it; `sharded`: a LoRA twin
    under FSDP, whose source pass runs through `model` (`sharded_source_pass`). Without `entropy_metric`, "entropy"
    may be left out of the metrics (when the loss can and does not need it): then a reward module that composes with
    the source (`linear`, `transformer`) on a source with a plain output layer computes r + λ·b itself, and the
    loss reads one logit tensor instead of two (`composable_weight`)."""
    xp = reward.backend.xp
    ids, mask = inputs["ids"], inputs["mask"]
    x, targets, weights = ids[:, :-1], ids[:, 1:], mask[:, 1:]
    images = {"images": inputs["images"]} if "images" in inputs else {}
    if not (entropy_metric or entropy_coeff or images or sharded) and loss is fused_prt_loss:
        base_weight = composable_weight(reward, source, vocab)
        if base_weight is not None:
            composed = model(source.hidden_states(x).to(reward.device), base_weight=base_weight, lam=lam).float()
            return composed_prt_loss(composed, targets.to(composed.device), weights.to(composed.device), lam=lam)
    if not entropy_metric and "entropy_metric" in signature(loss).parameters:
        loss = partial(loss, entropy_metric=False)
    if sharded and not images:
        src = sharded_source_pass(model, source, x)
    else:
        src = source.forward(x, hidden=reward.reads_source_hidden, **images)
    r = reward.forward(x, source_hidden=src.hidden, module=model, **images)
    base = align_vocab(src.logits.to(r.device), vocab, xp=xp)
    r = align_vocab(r, vocab, fill=0.0, xp=xp)
    return loss(base, r, targets.to(r.device), weights.to(r.device), lam=lam, entropy_coeff=entropy_coeff)


def composable_weight(reward: TorchRewardModel, source: TorchBaseLM, vocab: int) -> torch.Tensor | None:
    """The source's output weight over the shared `vocab` when the reward's module can compute r + λ·b
    (`RewardModule.composes_with_source`): the source's logits are `hidden @ weightᵀ` (`plain_output_weight`), both
    output layers have a row for every token of the vocabulary, and they are on one device; else None."""
    if not getattr(reward.module, "composes_with_source", False) or not reward.trainable:
        return None
    weight, head = source.plain_output_weight(), reward.module.head.weight
    if weight is None or min(weight.shape[0], head.shape[0]) < vocab or weight.device != head.device:
        return None
    return weight[:vocab]


def sharded_source_pass(model, source: TorchBaseLM, x) -> ForwardOutput:
    """The source's pass of a LoRA twin under FSDP: its weights are shards inside the trained `model`, so the pass
    runs through `model` (whose hooks gather them) with the adapters off."""
    with torch.no_grad(), source.adapters_off():
        out = model(input_ids=x.to(next(model.parameters()).device), use_cache=False)
    return ForwardOutput(out.logits.float(), None)


class PRTTrainer(Trainer):
    """Trains `reward` on top of the frozen `source`, minimising `loss` (a prtcore.objectives.PRTLoss; default: the
    fused implementation of prtcore.objectives.prt_loss, prt_torch.loss) with the λ and entropy coefficient of the
    reward's config.

    The loss is normalised by the masked target tokens of the whole accumulated batch, so gradient accumulation
    of k batches equals one batch k times larger (hence `loss_is_scaled_for_ga = True`). Logs report the loss,
    `nll` and `accuracy` token-weighted over the steps since the last log (a resumed run's too: `CarriedCounts`),
    and `entropy` (of softmax(r)) over the first batch since the last log: with no entropy term in the loss it
    costs as much as the rest of the loss (with one, every batch's counts). Evaluation reports `eval_loss`
    (token-weighted) and the same metrics over every batch.
    """

    loss_is_scaled_for_ga = True

    def __init__(self, reward: TorchRewardModel, source: TorchBaseLM, args: TrainingArguments | None = None,
                 train_dataset=None, eval_dataset=None, data_collator=None, *, loss=fused_prt_loss, **kwargs):
        self.reward, self.source = reward, source
        self.loss_fn, self.lam, self.entropy_coeff = loss, reward.config.lam, reward.config.entropy_coeff
        self.vocab_size = len(source.tokenizer)
        if args is None:
            args = TrainingArguments(output_dir="prt_output", report_to="none")
        super().__init__(model=reward.module, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         data_collator=data_collator or PRTCollator(pad_id_of(source.tokenizer, source.vocab_size)),
                         **self.init_counts(kwargs))
        # Transformers releases without `loss_is_scaled_for_ga` skip their division by the accumulation steps
        # when this is set and a token count is given (get_batch_samples always gives one).
        self.model_accepts_loss_kwargs = True
        if fsdp_requested() and not self.is_fsdp_enabled:
            kind = self.accelerator.distributed_type.value
            raise TrainingError(f"FSDP was asked for (accelerate launch --use_fsdp), but accelerate enables it only "
                                f"on GPUs and other accelerators and this run is {kind}; launch without --use_fsdp "
                                f"to train with DDP")
        if getattr(self.accelerator, "is_fsdp2", False) and not getattr(reward, "is_lora", False):
            shard_frozen(source.model)  # a LoRA twin's source weights are inside the model FSDP shards

    def init_counts(self, trainer_kwargs: dict) -> dict:
        """Set up the loss and token counters (SFTTrainer's too); returns the Trainer's keyword arguments with
        `CarriedCounts` first among the callbacks (others see the counts it restores)."""
        self._sums = {"train": {}, "eval": {}}  # this rank's, since the last log (train: and the last fold)
        self.local_tokens = 0  # target tokens this rank trained on since the last fold
        self.carried = {"trained_tokens": 0, "train": {}}  # all ranks' up to the last fold (`fold_counts`)
        return {**trainer_kwargs, "callbacks": [CarriedCounts(self), *(trainer_kwargs.get("callbacks") or [])]}

    # ------------------------------------------------------------------------------------------ loss
    def prt_loss(self, model, inputs, entropy_metric: bool = True) -> tuple[torch.Tensor, dict]:
        """(loss, metrics) of one batch: a mean over its masked target tokens (`batch_loss`); without
        `entropy_metric`, "entropy" may be left out of the metrics (when the loss can and does not need it)."""
        sharded = getattr(self, "is_fsdp_enabled", False) and getattr(self.reward, "is_lora", False)
        return batch_loss(self.reward, self.source, model, inputs, self.vocab_size, lam=self.lam,
                          entropy_coeff=self.entropy_coeff, loss=self.loss_fn, entropy_metric=entropy_metric,
                          sharded=sharded)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logged_entropy = self._sums["train"].get("entropy_tokens") or self.carried["train"].get("entropy_tokens")
        loss, metrics = self.prt_loss(model, inputs, entropy_metric=not logged_entropy)
        self._track("train", loss, metrics)
        if num_items_in_batch is not None:
            loss = loss * metrics["ntokens"] / num_items_in_batch
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                loss = loss * self.accelerator.num_processes  # DDP averages the gradients of the ranks
        else:
            loss = loss / getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        return (loss, metrics) if return_outputs else loss

    def get_batch_samples(self, epoch_iterator, num_batches, device=None, *args, **kwargs):
        """The micro-batches of one optimiser step and their masked target tokens (all ranks when averaging)."""
        batch_samples, count = super().get_batch_samples(epoch_iterator, num_batches, device, *args, **kwargs)
        if batch_samples and "mask" in batch_samples[0]:
            count = sum(b["mask"][:, 1:].sum() for b in batch_samples).to(device or self.args.device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                count = self.accelerator.gather(count).sum()
        return batch_samples, count

    def _get_collator_with_removed_columns(self, data_collator, description=None):
        return data_collator  # the batches are not model keyword arguments

    def get_eval_dataloader(self, eval_dataset=None):
        """Every example in order, the last batch kept; each rank of a launch evaluates the whole set (accelerate
        would pad uneven shards with repeated examples)."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        return DataLoader(dataset, batch_size=self.args.eval_batch_size, collate_fn=self.data_collator, shuffle=False)

    # ------------------------------------------------------------------------------------------ evaluation
    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, metrics = self.prt_loss(model, inputs)
        self._track("eval", loss, metrics)
        return loss.detach(), None, None

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        self._sums["eval"] = {}
        output = super().evaluation_loop(dataloader, description, prediction_loss_only=prediction_loss_only,
                                         ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in self._means("eval", with_loss=True).items()})
        return output

    # ------------------------------------------------------------------------------------------ logging
    def _track(self, split: str, loss, metrics) -> None:
        keys = ("loss",) + tuple(k for k in METRICS if k in metrics)
        tensors = [metrics["ntokens"], loss] + [metrics[k] for k in keys[1:]]
        # one host synchronisation for all of them (float32 → float64 is exact: the values float() gave)
        n, *values = torch.stack([t.detach().to(torch.float64) for t in tensors]).tolist()
        if split == "train":
            self.local_tokens += int(n)
        sums = self._sums[split]
        sums["ntokens"] = sums.get("ntokens", 0.0) + n
        for key, value in zip(keys, values):
            sums[key] = sums.get(key, 0.0) + value * n
        if "entropy" in metrics:
            sums["entropy_tokens"] = sums.get("entropy_tokens", 0.0) + n

    def _means(self, split: str, with_loss: bool = False) -> dict[str, float]:
        """Token-weighted means since the last call; training sums are added up over the ranks (a collective:
        every rank calls `log` at the same steps) and to the carried ones, evaluation ones are already whole on
        each rank."""
        if split == "train":
            self.fold_counts()
            sums, self.carried["train"] = self.carried["train"], {}
        else:
            sums, self._sums[split] = self._sums[split], {}
        n = sums.get("ntokens", 0.0)
        keys = (("loss",) if with_loss else ()) + METRICS
        counts = {"entropy": sums.get("entropy_tokens", 0.0)}
        return {k: sums[k] / counts.get(k, n) for k in keys if counts.get(k, n)} if n else {}

    def fold_counts(self) -> None:
        """Add all ranks' training counts since the last fold to `carried` (a collective: every rank folds at
        each log and checkpoint)."""
        sums, self._sums["train"] = self._sums["train"], {}
        tokens, *totals = self.sum_over_ranks([float(self.local_tokens)] + [sums.get(k, 0.0) for k in TRAIN_SUMS])
        self.local_tokens = 0
        window = self.carried["train"]
        self.carried = {"trained_tokens": self.carried["trained_tokens"] + int(tokens),
                        "train": {k: window.get(k, 0.0) + v for k, v in zip(TRAIN_SUMS, totals)}}

    def sum_over_ranks(self, values: list[float]) -> list[float]:
        if self.args.world_size <= 1:
            return list(values)
        total = self.accelerator.reduce(torch.tensor(values, dtype=torch.float64, device=self.args.device), "sum")
        return total.tolist()

    def trained_tokens(self) -> int:
        """Target tokens trained on so far, all ranks together (a collective under a launcher)."""
        return self.carried["trained_tokens"] + int(self.sum_over_ranks([float(self.local_tokens)])[0])

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # the token-weighted loss and metrics since the last log, across a resume too
            logs = {**logs, **self._means("train", with_loss=True)}
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------ saving
    @contextlib.contextmanager
    def full_weights(self):
        """Within: the reward's module returns its whole weights from `state_dict()` (under FSDP they are shards,
        gathered here: a collective, so every rank enters it, then rank 0 saves)."""
        if not self.is_fsdp_enabled:
            yield
            return
        state = self.accelerator.get_state_dict(self.model)
        module = self.reward.module
        module.state_dict = lambda *args, **kwargs: state
        try:
            yield
        finally:
            del module.state_dict

    def save_reward(self, path, extra: dict | None = None):
        """Write the reward artifact (prtcore.artifacts), recording the training step."""
        info = {"training": {"global_step": int(self.state.global_step), "backend": "torch"}}
        return self.reward.save(path, source=self.source, vocab_size=self.vocab_size, extra={**info, **(extra or {})})


class CarriedCounts(TrainerCallback, ExportableState):
    """Keeps a PRTTrainer's counts in its checkpoints: at each one, all ranks' trained tokens and the training sums
    not logged yet are folded into `trainer.carried`, which the checkpoint's trainer_state.json records; a resumed
    run starts from them, so that it reports and counts what an uninterrupted run would."""

    def __init__(self, trainer: PRTTrainer):
        self.trainer = trainer

    def state(self) -> dict:
        return {"args": {}, "attributes": self.trainer.carried}

    def on_train_begin(self, args, state, control, **kwargs):
        saved = state.stateful_callbacks.get(type(self).__name__, {}).get("attributes", {})
        train = dict(saved.get("train", {}))
        if "entropy" in train and "entropy_tokens" not in train:  # saved before the entropy had its own count
            train["entropy_tokens"] = train.get("ntokens", 0.0)
        self.trainer.carried = {"trained_tokens": int(saved.get("trained_tokens", 0)), "train": train}

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            self.trainer.fold_counts()
