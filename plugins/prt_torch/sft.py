"""Plain fine-tuning of a base model (SFT) on torch: LoRA through peft, or every weight, with transformers' Trainer.

The seed's LoRA baseline, and the fine-tuned source that EFT / proxy-tuning compose. Layout of `output_dir`:

    adapter_config.json + adapter_model.safetensors   LoRA, in PEFT's layout (`PeftModel.from_pretrained`)
    config.json + model.safetensors + tokenizer       a full fine-tune: a checkpoint either backend's load_base reads
    best/                                             the same, with the best validation loss
    checkpoint/checkpoint-N/                          the Trainer's checkpoint (weights, optimiser, scheduler, RNG)
    metrics.jsonl, summary.json, loss_curve.png       (prtcore.reporting.TrainingReporter)

`SFTTrainer` is PRTTrainer with the loss swapped for the cross-entropy of the masked target tokens (so gradient
accumulation, token counting and token-weighted evaluation are shared). `load_adapted` is the other direction:
an adapter directory (either layout) merged into its base, so a LoRA fine-tune can stand wherever a model is
expected (`prt generate --compose eft --ft ADAPTER_DIR`).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch
from transformers import PrinterCallback, Trainer

from prtcore import adapters
from prtcore.config import LoRAConfig, RewardConfig, TrainingConfig
from prtcore.tokens import pad_id_of
from prtcore.errors import ArtifactError, TrainingError
from prtcore.loop import training_splits
from prtcore.training import copy_model_files, publish_dir, publish_into

from . import base
from .distributed import world_size
from .trainer import PRTCollator, PRTTrainer, training_arguments
from .training import CHECKPOINT, FiniteGuard, ReportCallback, fit


def sft_loss(model, inputs) -> tuple[torch.Tensor, dict]:
    """(mean cross-entropy over the masked target tokens, metrics) of one batch {"ids", "mask"} of `model`."""
    ids, mask = inputs["ids"], inputs["mask"]
    x, targets, weights = ids[:, :-1], ids[:, 1:], mask[:, 1:]
    logits = model(input_ids=x).logits.float()
    logprobs = torch.log_softmax(logits, dim=-1)
    weights = weights.to(logprobs.dtype)
    n = weights.sum()
    nll = -logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    loss = (nll * weights).sum() / n.clamp(min=1.0)
    with torch.no_grad():
        accuracy = ((logits.argmax(-1) == targets).to(weights.dtype) * weights).sum() / n.clamp(min=1.0)
        entropy = (-(logprobs.exp() * logprobs).sum(-1) * weights).sum() / n.clamp(min=1.0)
    return loss, {"ntokens": n, "nll": loss.detach(), "accuracy": accuracy, "entropy": entropy}


class SFTTrainer(PRTTrainer):
    """A Trainer for the model itself, minimising `loss(model, inputs)` → (loss, metrics) (default: `sft_loss`, the
    mean cross-entropy over the masked target tokens).

    `save_reward(path, extra)` (what prt_torch.training.ReportCallback calls for `best/`) writes the fine-tune.
    """

    def __init__(self, model, tokenizer, model_path, args=None, train_dataset=None, eval_dataset=None, *,
                 loss=sft_loss, **kwargs):
        self.reward = self.source = None
        self.loss_fn = loss
        self.tokenizer_, self.model_path = tokenizer, Path(model_path)
        self.vocab_size = len(tokenizer)
        Trainer.__init__(self, model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         data_collator=PRTCollator(pad_id_of(tokenizer, model.get_input_embeddings().num_embeddings)),
                         **self.init_counts(kwargs))
        self.model_accepts_loss_kwargs = True

    def prt_loss(self, model, inputs, entropy_metric: bool = True):
        return self.loss_fn(model, inputs)  # its metrics always hold the entropy

    # ------------------------------------------------------------------------------------------ saving
    def write_output(self, directory) -> None:
        """The fine-tune into existing directory `directory`: PEFT's adapter files, or a complete checkpoint."""
        model = self.model
        if hasattr(model, "peft_config"):
            for config in model.peft_config.values():
                config.base_model_name_or_path = str(self.model_path)
            model.save_pretrained(str(directory))
        else:
            base.save_checkpoint(model, directory)
            copy_model_files(self.model_path, directory, configs=False)

    def save_reward(self, path, extra: dict | None = None):
        return publish_dir(path, self.write_output)


def train_sft(backend, model_path, data: dict, config: TrainingConfig, output_dir, *, lora: LoRAConfig | None,
              iters: int, resume: bool = False, reporter=None, loss=sft_loss, **options) -> dict:
    """Fine-tune the checkpoint in `model_path` on `data["train"]` (prtcore.data Examples), minimising `loss(model,
    inputs)` → (loss, metrics) (default: `sft_loss`); returns the summary."""
    from peft import get_peft_model

    from prtcore.reporting import TrainingReporter

    from .rewards import lora_config

    if options.get("quantize"):
        raise TrainingError("--quantize-base: the torch backend does not quantise bases (the mlx backend does)")
    options.pop("quantize", None)
    model_path, output_dir = Path(model_path).resolve(), Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train_set, valid = training_splits(data)
    if world_size() > 1:
        raise TrainingError("--method sft trains in one process; start it without torchrun or accelerate launch (a "
                            "launch of several processes trains rewards, --method prt)")
    lm = base.load_base(backend, model_path, **options)
    model = lm.model
    if lora is not None:
        peft_config = lora_config(RewardConfig(kind="twin", fine_tune_type="lora", lora=lora), model, model_path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = get_peft_model(model, peft_config)
    else:
        model.requires_grad_(True)
    reporter = reporter or TrainingReporter(output_dir, total_steps=iters, quiet=True, resume=resume)
    args = training_arguments(config, output_dir / CHECKPOINT, max_steps=iters, save_total_limit=1,
                              eval_strategy="steps" if valid else "no", disable_tqdm=True, logging_strategy="steps",
                              save_strategy="steps", dataloader_pin_memory=False)
    callback = ReportCallback(reporter, output_dir)
    trainer = SFTTrainer(model, lm.tokenizer, model_path, args=args, train_dataset=list(train_set),
                         eval_dataset=list(valid) if valid else None, callbacks=[callback, FiniteGuard()], loss=loss)
    callback.trainer = trainer
    trainer.remove_callback(PrinterCallback)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pin_memory.*")
        fit(trainer, output_dir, reporter, resume)
    model.eval()
    publish_into(output_dir, trainer.write_output)
    return reporter.finish(best_iteration=callback.best_step, artifact=str(output_dir), method="sft",
                           fine_tune_type="lora" if lora is not None else "full")


# ------------------------------------------------------------------------------------------------ adapters as bases
def load_adapted(backend, path, adapter_base=None, **options):
    """A base with the LoRA adapter in directory `path` (PEFT's or mlx-lm's layout) merged into its weights.

    `adapter_base`: the model the adapter applies to (default: the path its adapter_config.json records).
    """
    from peft import PeftModel

    from prtcore.training import adapter_base_path

    path = Path(path).resolve()
    lm = base.load_base(backend, adapter_base_path(path, adapter_base), **options)
    layers = lm.model.config.get_text_config().num_hidden_layers
    with tempfile.TemporaryDirectory() as tmp:
        source = path
        if adapters.detect_layout(path) == "mlx_lm":
            adapters.convert(path, tmp, "peft", num_hidden_layers=layers, base_model_name_or_path=str(lm.path))
            source = Path(tmp)
        weights = source / "adapter_model.safetensors"
        if not weights.is_file():  # PEFT would ask the Hub for it
            raise ArtifactError(f"{path / weights.name}: missing; an adapter directory needs its weights")
        try:
            merged = PeftModel.from_pretrained(lm.model, str(source)).merge_and_unload()
        except (ValueError, KeyError, RuntimeError, OSError) as e:
            raise ArtifactError(f"{path}: cannot apply the adapter to {lm.path} ({e})".splitlines()[0]) from None
    merged.eval().requires_grad_(False)
    return base.TorchBaseLM(backend, merged, lm.tokenizer, path, lm.config)
