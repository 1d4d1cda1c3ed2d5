"""The `twin` reward: a model of the source's architecture, fully fine-tuned or with LoRA.

A LoRA twin adapts the source's own mlx model in place, so the frozen weights exist once: the source registers
the LoRA layers as `adapter_layers` and switches them off (scale 0) for its own passes. In a training step the
twin's pass starts after the blocks it leaves unadapted, from the source pass's state there (prt_mlx.prefix).
With init "zero_head" the twin reads its logits through its own zero-initialised output layer (`prt_head`)
instead of the source's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from prtcore import adapters
from prtcore.artifacts import ArtifactWriter, non_finite_error, reward_meta
from prtcore.config import RewardConfig
from prtcore.errors import ArtifactError, ConfigError
from prtcore.model import RewardModel

from .base import as_ids, load_model, text_config
from .lora import HEAD, add_zero_head, adapter_tensors, apply_lora, check_head_swappable, head_swapped, lora_layers

FULL_WEIGHTS = "model.safetensors"


class TwinReward(RewardModel):
    def __init__(self, backend, config: RewardConfig, model: nn.Module, model_config: dict, *, source=None,
                 shared: bool = False, shared_vocab: int | None = None):
        self.backend, self.config, self.module, self.model_config = backend, config, model, model_config
        self.source, self.shared, self.shared_vocab = source, shared, shared_vocab
        self.lora_layers = lora_layers(model)
        if shared:
            source.adapter_layers = self.lora_layers

    # ------------------------------------------------------------------------------------------ creation
    @classmethod
    def create(cls, backend, config: RewardConfig, source, *, seed: int = 0, shared_vocab=None) -> "TwinReward":
        """A new twin of `source`: a copy ("full"), or LoRA on the source's weights (shared when free)."""
        if config.fine_tune_type == "full":
            model, _ = load_model(source.path, dtype=source.options.get("dtype"))
            if any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules()):
                raise ConfigError(f"fine_tune_type='full': {source.path} is a quantised checkpoint; use LoRA or an unquantised source")
            model.unfreeze()
            shared = False
        else:
            model, shared = _lora_base(source)
            apply_lora(model, config.lora, seed=seed)
        twin = cls(backend, config, model, source.config, source=source, shared=shared, shared_vocab=shared_vocab)
        if config.init == "zero_head":
            twin._add_head()
        mx.eval(model.parameters())
        return twin

    def _add_head(self):
        cfg = text_config(self.model_config)
        head = add_zero_head(self.module, int(cfg["vocab_size"]), int(cfg["hidden_size"]))
        if "lm_head" in self.module and not self.shared:
            self.module.pop("lm_head")  # a private copy's own output layer no longer feeds anything
        check_head_swappable(self.module, head, self.model_config.get("model_type", "?"))

    # ------------------------------------------------------------------------------------------ RewardModel
    @property
    def head(self):
        return self.module[HEAD] if HEAD in self.module else None

    @property
    def vocab_size(self) -> int:
        return int(text_config(self.model_config)["vocab_size"])

    def forward(self, ids, cache=None, *, source_hidden=None, attention_mask=None, position_ids=None):
        """Reward logits of (B, T) ids; `attention_mask` / `position_ids`: a left-padded batch (prt_mlx.batching)."""
        ids = as_ids(ids)
        if attention_mask is not None:
            from .batching import batched_cache

            cache = batched_cache(cache, attention_mask, position_ids, ids.shape[1], self.make_batch_cache)
        with head_swapped(self.module, self.head):
            return self.module(ids, cache=cache).astype(mx.float32)

    def make_cache(self):
        from mlx_lm.models.cache import make_prompt_cache

        return make_prompt_cache(self.module)

    def fuse(self) -> bool:
        """Fold the LoRA layers into the weights they adapt (mlx-lm's `fuse`): one plain model per token. Those
        weights must be this twin's alone (PRTForCausalLM gives it its own copy of the source). Quantised weights
        keep the adapter unfused."""
        if not self.lora_layers or any(isinstance(m.linear, nn.QuantizedLinear) for m in self.lora_layers):
            return False
        fused = [(name, m.fuse()) for name, m in self.module.named_modules() if "lora_a" in m and "lora_b" in m]
        self.module.update_modules(tree_unflatten(fused))
        mx.eval(self.module.parameters())
        if self.shared:
            self.source.adapter_layers = []
        self.lora_layers = []
        return True

    def make_batch_cache(self, left_padding):
        """A cache for left-padded rows (see prt_mlx.base.batch_cache)."""
        from .base import batch_cache

        return batch_cache(self.module, left_padding)

    def parameter_count(self) -> tuple[int, int]:
        trainable = sum(v.size for _, v in tree_flatten(self.module.trainable_parameters()))
        return trainable, total_parameters(self.module)

    # ------------------------------------------------------------------------------------------ artifacts
    def trained_tensors(self) -> dict[str, mx.array]:
        """What the artifact stores: adapters (+ head) in mlx-lm naming, or every weight of a full twin."""
        if self.config.fine_tune_type == "lora":
            out = dict(adapter_tensors(self.module))
        else:
            out = per_expert({k: v for k, v in tree_flatten(self.module.parameters()) if not k.startswith(HEAD + ".")})
            if self.head is not None:
                out.pop("lm_head.weight", None)
        if self.head is not None:
            out["lm_head.weight"] = self.head.weight
        return out

    def save(self, path, *, source, vocab_size: int, extra: dict | None = None) -> Path:
        if self.config.fine_tune_type == "lora" and not self.lora_layers:
            raise ConfigError("this LoRA twin's adapter was fused into its weights for inference; save the reward it "
                              "was loaded from instead")
        tensors = self.trained_tensors()
        with ArtifactWriter(path) as writer:
            if self.config.fine_tune_type == "lora":
                np_tensors = {k: np.array(v.astype(mx.float32)) for k, v in tensors.items()}
                lora = adapters.settings_from_tensors(np_tensors, scale=self.config.lora.scale,
                                                      dropout=self.config.lora.dropout,
                                                      num_hidden_layers=len(self.module.layers))
                base_name = str(source.path) if source.path is not None else None
                adapters.write_peft(writer.dir, np_tensors, lora, base_model_name_or_path=base_name)
                weights = [adapters.PEFT_WEIGHTS]
            else:
                mx.save_safetensors(str(writer.dir / FULL_WEIGHTS), tensors, metadata={"format": "pt"})
                _write_hf_config(writer.dir, self.model_config, untie=self.head is not None)
                if source.path is not None and (Path(source.path) / "generation_config.json").is_file():
                    shutil.copy2(Path(source.path) / "generation_config.json", writer.dir)
                weights = [FULL_WEIGHTS]
            if source.path is not None:
                writer.copy_tokenizer(source.path)
            return writer.commit(reward_meta(self.config, source=source, tokenizer=source.tokenizer,
                                             vocab_size=vocab_size, output_size=self.vocab_size, weights=weights,
                                             backend="mlx", extra=extra))

    def load_trained(self, artifact) -> None:
        """Start from saved twin `artifact` (its configuration is this one's): its adapter (and head) into this
        twin's LoRA layers, or, for a full twin, its weights as this twin's model, trainable."""
        from .lora import load_adapter_tensors

        if self.config.fine_tune_type == "full":
            saved = TwinReward.from_checkpoint(self.backend, self.config, artifact.path,
                                               options={"dtype": self.source.options.get("dtype")})
            saved.module.unfreeze()
            self.module, self.model_config = saved.module, saved.model_config
            mx.eval(self.module.parameters())
            return
        _, tensors, _ = adapters.read_adapter(artifact.path, num_hidden_layers=len(self.module.layers))
        head = tensors.pop("lm_head.weight", None)
        file = str(artifact.path / adapters.PEFT_WEIGHTS)
        if (head is None) != (self.head is None):
            raise ArtifactError(f"{file}: {'has' if head is not None else 'lacks'} a tensor 'lm_head.weight', "
                                f"which a LoRA twin of init {self.config.init!r} {'lacks' if head is not None else 'has'}")
        load_adapter_tensors(self.module, tensors, file)
        if head is not None:
            self._set_head(head, file)
        mx.eval(self.module.parameters())

    def _set_head(self, head: np.ndarray, file) -> None:
        """Saved output head `head` (from `file`, named in errors) as this twin's head."""
        if head.shape != self.head.weight.shape:
            raise ArtifactError(f"{file}: tensor 'lm_head.weight' has shape {head.shape}, "
                                f"expected {tuple(self.head.weight.shape)}")
        self.head.weight = mx.array(np.asarray(head, dtype=np.float32))

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_adapter(cls, backend, config: RewardConfig, adapter_dir, source, *, shared_vocab=None) -> "TwinReward":
        """A LoRA twin from an adapter directory in PEFT's or mlx-lm's layout, on `source`'s weights."""
        from .lora import load_adapter_tensors

        model, shared = _lora_base(source)
        layout, tensors, lora = adapters.read_adapter(adapter_dir, num_hidden_layers=len(model.layers))
        head = tensors.pop("lm_head.weight", None)
        apply_lora(model, lora)
        load_adapter_tensors(model, tensors, str(adapter_dir))
        twin = cls(backend, config, model, source.config, source=source, shared=shared, shared_vocab=shared_vocab)
        if head is not None:
            twin._add_head()
            twin._set_head(head, Path(adapter_dir) / (adapters.PEFT_WEIGHTS if layout == "peft" else adapters.MLX_WEIGHTS))
        mx.eval(model.parameters())
        return twin

    @classmethod
    def from_checkpoint(cls, backend, config: RewardConfig, path, *, options=None, shared_vocab=None) -> "TwinReward":
        """A fully fine-tuned twin saved as a checkpoint."""
        from .base import read_config

        options = {k: v for k, v in (options or {}).items() if k in ("dtype", "quantize", "trust_remote_code")}
        model, _ = load_model(path, **options)
        floats = [(k, v) for k, v in tree_flatten(model.parameters()) if mx.issubdtype(v.dtype, mx.floating)]
        finite = mx.stack([mx.isfinite(v).all() for _, v in floats]).tolist()
        if not all(finite):
            raise non_finite_error(path, floats[finite.index(False)][0])
        return cls(backend, config, model, read_config(path), shared_vocab=shared_vocab)


# mlx-lm's stacked expert weights (experts, out, in) → transformers' checkpoint names, one tensor per expert
# (mlx-lm's sanitize stacks them again when it loads): qwen2_moe / qwen3_moe / olmoe, and mixtral.
_EXPERTS = {".mlp.switch_mlp.": (".mlp.experts.{}.", {"gate_proj": "gate_proj", "up_proj": "up_proj", "down_proj": "down_proj"}),
            ".block_sparse_moe.switch_mlp.": (".block_sparse_moe.experts.{}.", {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"})}


def per_expert(tensors: dict) -> dict:
    """`tensors` with mlx-lm's stacked expert weights split into the per-expert tensors of transformers' layout."""
    out = {}
    for name, value in tensors.items():
        for stacked, (each, names) in _EXPERTS.items():
            prefix, found, rest = name.partition(stacked)
            projection, _, leaf = rest.partition(".")
            if found and projection in names:
                out.update({f"{prefix}{each.format(e)}{names[projection]}.{leaf}": value[e] for e in range(len(value))})
                break
        else:
            out[name] = value
    return out


def _lora_base(source) -> tuple[nn.Module, bool]:
    """The source's own model when no other twin adapts it yet (shared), else a fresh copy of it."""
    if not source.adapter_layers:
        return source.model, True
    model, _ = load_model(source.path, **{k: v for k, v in source.options.items() if k in ("dtype", "quantize")})
    model.freeze()
    return model, False


def total_parameters(model: nn.Module) -> int:
    """Parameters a model stands for (a quantised layer counts its unpacked weights, not scales and biases)."""
    from mlx_lm.utils import get_total_parameters

    # get_total_parameters counts leaf modules only, which leaves out the LoRA layers' own tensors.
    return int(get_total_parameters(model)) + sum(v.size for v in adapter_tensors(model).values())


def _write_hf_config(directory: Path, config: dict, *, untie: bool) -> None:
    from prtcore.artifacts import write_json_atomic

    config = dict(config)
    if untie:
        config["tie_word_embeddings"] = False
        if isinstance(config.get("text_config"), dict):
            config["text_config"] = {**config["text_config"], "tie_word_embeddings": False}
    write_json_atomic(directory / "config.json", config)
