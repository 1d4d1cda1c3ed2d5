"""Plain fine-tuning of a base model (SFT) on mlx: LoRA with mlx-lm's own layers, or every weight.

The seed's LoRA baseline, and the fine-tuned source that EFT / proxy-tuning compose. Layout of `output_dir`:

    adapters.safetensors + adapter_config.json   LoRA, in mlx-lm's layout (`mlx_lm.load(model, adapter_path=DIR)`)
    config.json + model.safetensors + tokenizer  a full fine-tune: a checkpoint either backend's load_base reads
    best/                                        the same, with the best validation loss
    checkpoint/                                  weights.safetensors, optimizer.safetensors, state.json (resume)
    metrics.jsonl, summary.json, loss_curve.png  (prtcore.reporting.TrainingReporter)

The loop is the reward trainer's (prt_mlx.training.run_loop): batches are a pure function of (seed, iteration), the mlx RNG
(LoRA dropout) is reseeded every iteration and the optimiser state is checkpointed, so a resumed run ends with
the weights an uninterrupted one would have. The loss is the cross-entropy of the masked target tokens.

`load_adapted` is the other direction: an adapter directory (either layout) applied to its base and fused, so
that a LoRA fine-tune can stand wherever a model is expected (`prt generate --compose eft --ft ADAPTER_DIR`).
"""

from __future__ import annotations

from pathlib import Path

import attrs
import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from prtcore import adapters
from prtcore.artifacts import read_json, write_json_atomic
from prtcore.config import LoRAConfig, TrainingConfig
from prtcore.data import evaluation_batches, iterate_batches
from prtcore.tokens import checkpoint_rows, pad_id_of
from prtcore.errors import ConfigError, ModelLoadError, TrainingError
from prtcore.loop import open_run, training_splits, validator
from prtcore.training import copy_model_files, publish_dir, publish_into

from .base import load_model
from .lora import adapter_tensors, apply_lora, load_adapter_tensors, num_adapted_layers, resolve_keys
from .training import make_optimizer, restore_checkpoint, run_loop, save_checkpoint, saved_state

CHECKPOINT, BEST = "checkpoint", "best"
FULL_WEIGHTS = "model.safetensors"
SFT_OPTIONS = ("quantize", "group_size", "dtype", "trust_remote_code")


def _quantized(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())


def sft_loss(model, ids, mask):
    """(mean cross-entropy over the masked targets, number of targets) of a (B, L) batch."""
    inputs, targets, weights = ids[:, :-1], ids[:, 1:], mask[:, 1:]
    logits = model(inputs).astype(mx.float32)
    losses = nn.losses.cross_entropy(logits, targets) * weights
    ntok = weights.sum()
    return losses.sum() / mx.maximum(ntok, 1.0), ntok


def evaluate(model, examples, config: TrainingConfig, pad_id: int, loss=sft_loss) -> float:
    """Token-weighted validation loss of `loss(model, ids, mask)` → (mean loss, target tokens)."""
    total = count = 0.0
    for batch in evaluation_batches(examples, config.batch_size, pad_id, max_batches=config.val_batches):
        value, ntok = loss(model, mx.array(batch.ids), mx.array(batch.mask))
        mx.eval(value, ntok)
        total += value.item() * ntok.item()
        count += ntok.item()
    return total / max(count, 1.0)


# ------------------------------------------------------------------------------------------------ outputs
def _adapter_config(lora: LoRAConfig, model: nn.Module, model_path: Path, config: TrainingConfig, iters: int,
                    data=None) -> dict:
    """adapter_config.json as mlx-lm writes it: its LoRA settings plus the run's arguments."""
    out = adapters.mlx_config(lora, model=str(model_path))
    out.update({"num_layers": num_adapted_layers(model, lora), "iters": iters, "learning_rate": config.learning_rate,
                "batch_size": config.batch_size, "max_seq_length": config.max_seq_length, "seed": config.seed,
                "mask_prompt": config.mask_prompt, "grad_accumulation_steps": config.grad_accumulation_steps,
                "optimizer": config.optimizer, "trained_by": "prtcore (prt train --method sft)"})
    return out


def write_output(directory: Path, model: nn.Module, model_path: Path, lora: LoRAConfig | None, adapter_config: dict) -> None:
    """The fine-tune into existing directory `directory`: an mlx-lm adapter, or a complete checkpoint."""
    directory = Path(directory)
    if lora is not None:
        tensors = {k: np.array(v.astype(mx.float32)) for k, v in adapter_tensors(model).items()}
        adapters.write_mlx(directory, tensors, lora, model=str(model_path))
        write_json_atomic(directory / adapters.MLX_CONFIG, adapter_config)
        return
    mx.save_safetensors(str(directory / FULL_WEIGHTS), dict(tree_flatten(model.parameters())), metadata={"format": "pt"})
    copy_model_files(model_path, directory)


# ------------------------------------------------------------------------------------------------ checkpoints
def load_checkpoint(path: Path, model, optimizer, expected: dict) -> dict:
    path = Path(path)
    state = read_json(path / "state.json", "training checkpoint state")
    for key, value in expected.items():
        if state.get(key) != value:
            raise TrainingError(f"{path}: the checkpoint was made with {key}={state.get(key)!r}, this run has "
                                f"{value!r}; pass the same settings or start a new run in another directory")
    restore_checkpoint(path, model, optimizer)
    return state


# ------------------------------------------------------------------------------------------------ loop
def train_sft(backend, model_path, data: dict, config: TrainingConfig, output_dir, *, lora: LoRAConfig | None,
              iters: int, resume: bool = False, reporter=None, loss=sft_loss, **options) -> dict:
    """Fine-tune the model in `model_path` on `data["train"]` (prtcore.data Examples), minimising `loss(model, ids,
    mask)` → (mean loss over the masked targets, target tokens) (default: `sft_loss`, the cross-entropy); returns
    the summary."""
    unknown = sorted(set(options) - set(SFT_OPTIONS))
    if unknown:
        raise ConfigError(f"train_sft: option {unknown[0]!r} is not known to backend 'mlx' (known: {', '.join(SFT_OPTIONS)})")
    model_path, output_dir = Path(model_path).resolve(), Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train_set, val_set = training_splits(data)
    if mx.distributed.init().size() > 1:
        raise TrainingError("--method sft trains in one process; start it without mlx.launch (a launch of several "
                            "ranks trains rewards, --method prt)")
    model, _ = load_model(model_path, **options)
    tokenizer = backend.load_tokenizer(model_path)
    model.freeze()
    if lora is not None:
        lora = attrs.evolve(lora, keys=resolve_keys(model, lora.keys))
        apply_lora(model, lora, seed=config.seed)
    else:
        if _quantized(model):
            raise ConfigError(f"--fine-tune-type full: {model_path} is quantised (or --quantize-base was given); "
                              "a full fine-tune needs unquantised weights, use LoRA")
        model.unfreeze()
    mx.eval(model.parameters())

    pad_id, accum = pad_id_of(tokenizer, checkpoint_rows(model_path)), config.grad_accumulation_steps
    optimizer = make_optimizer(config, -(-iters // accum))
    optimizer.init(model.trainable_parameters())
    settings = {"method": "sft", "fine_tune_type": "lora" if lora is not None else "full",
                "lora": None if lora is None else {**attrs.asdict(lora), "keys": list(lora.keys) if lora.keys else None}}
    state, reporter = open_run(  # a resumed run: its checkpoint's state, the metrics up to it
        output_dir, iters=iters, resume=resume, reporter=reporter,
        load_state=lambda: saved_state(output_dir, lambda path: load_checkpoint(path, model, optimizer, settings)))
    adapter_config = _adapter_config(lora, model, model_path, config, iters) if lora is not None else {}
    meta = {**settings, "training": attrs.asdict(config), "iters": iters, "model": str(model_path)}
    value_and_grad = nn.value_and_grad(model, loss)

    def save(directory):
        write_output(directory, model, model_path, lora, adapter_config)

    def validation_loss():
        model.eval()
        val_loss = evaluate(model, val_set, config, pad_id, loss)
        model.train()
        return val_loss

    validate = validator(state, reporter, validation_loss, lambda it, val_loss: publish_dir(output_dir / BEST, save))

    def checkpoint(it):
        save_checkpoint(output_dir / CHECKPOINT, model, optimizer, {**meta, **state})

    batches = iterate_batches(train_set, config.batch_size, pad_id, seed=config.seed, start_step=state["iteration"])
    run_loop(model, lambda batch: value_and_grad(model, mx.array(batch.ids), mx.array(batch.mask)), batches,
             optimizer, config, iters, state, reporter, output_dir, checkpoint=checkpoint,
             validate=validate if val_set else None)
    publish_into(output_dir, save)
    return reporter.finish(best_iteration=state["best_iteration"], artifact=str(output_dir), method="sft",
                           fine_tune_type=settings["fine_tune_type"])


# ------------------------------------------------------------------------------------------------ adapters as bases
def load_adapted(backend, path, base=None, **options):
    """A base model with the LoRA adapter in directory `path` (mlx-lm's or PEFT's layout) fused into its weights.

    `base`: the model the adapter applies to (default: the path its adapter_config.json records).
    """
    from prtcore.training import adapter_base_path

    path = Path(path).resolve()
    lm = backend.load_base(adapter_base_path(path, base), **options)
    _, tensors, lora = adapters.read_adapter(path, num_hidden_layers=len(lm.model.layers))
    extra = adapters.extra_modules(tensors)
    if extra:
        raise ModelLoadError(f"{path}: the adapter also trains {', '.join(extra)}; only plain LoRA adapters load as a model")
    apply_lora(lm.model, lora)
    load_adapter_tensors(lm.model, tensors, str(path))
    fused = [(name, module.fuse()) for name, module in lm.model.named_modules() if hasattr(module, "fuse")]
    lm.model.update_modules(tree_unflatten(fused))
    lm.model.freeze()
    mx.eval(lm.model.parameters())
    lm.path = path
    return lm
