"""The `twin` reward kind (PRT3): a model of the source's architecture, fine-tuned fully or with LoRA.

Settings: RewardConfig's fine_tune_type ("lora" or "full"), init ("copy" or "zero_head") and, for LoRA, `lora`.
Stored as a model: a LoRA twin in PEFT's layout (adapter_config.json + adapter_model.safetensors; mlx-lm's
adapters.safetensors is read too), a fully fine-tuned twin as a checkpoint transformers and mlx-lm load as is. A LoRA
twin needs its source at inference (the frozen weights under the adapter); a full twin needs none.

The LoRA parameter counts of a dry run (`count_lora_parameters`) live here too: they read only config.json.
"""

from __future__ import annotations

from typing import Mapping

import attrs

from . import RewardKind

PEFT_FILES = [("adapter_config.json",), ("adapter_model.safetensors", "adapters.safetensors")]
FULL_FILES = [("config.json",)]


@attrs.frozen(kw_only=True, eq=False)
class TwinKind(RewardKind):
    """The twin: its storage, source and card depend on `fine_tune_type`."""

    def settings(self, config) -> dict:
        out = {"fine_tune_type": config.fine_tune_type, "init": config.init}
        if config.fine_tune_type == "lora":
            out["lora"] = attrs.asdict(config.lora)
            if out["lora"]["keys"] is not None:
                out["lora"]["keys"] = list(out["lora"]["keys"])
        return out

    def needs_source(self, config) -> bool:
        return config.fine_tune_type == "lora"

    def files(self, config) -> list[tuple[str, ...]]:
        return list(PEFT_FILES if config.fine_tune_type == "lora" else FULL_FILES)

    def storage(self, config) -> str:
        return config.fine_tune_type

    def card_text(self, settings: Mapping) -> str:
        lora = settings.get("fine_tune_type") == "lora"
        return self.description + (" (LoRA, stored in PEFT's layout)" if lora else " (all weights)")

    def card_tags(self, settings: Mapping) -> list[str]:
        return ["lora", "peft"] if settings.get("fine_tune_type") == "lora" else ["full-fine-tune"]

    def card_source_use(self, settings: Mapping) -> str | None:
        return "the frozen weights under its LoRA adapter" if settings.get("fine_tune_type") == "lora" else None


TWIN = TwinKind(
    name="twin",
    description="a twin of the source model's architecture",
    stored_as="model",
    reads_source_hidden=False,
    fields=("fine_tune_type", "init", "lora"),
)


def lora_targets(model_config: dict) -> dict[str, tuple[int, int]]:
    """(in, out) features of every linear in one block of a llama-style decoder, by module path.

    Used to count LoRA parameters without materialising weights.
    """
    h = model_config["hidden_size"]
    heads = model_config["num_attention_heads"]
    kv = model_config.get("num_key_value_heads") or heads
    head_dim = model_config.get("head_dim") or h // heads
    inter = model_config["intermediate_size"]
    return {
        "self_attn.q_proj": (h, heads * head_dim),
        "self_attn.k_proj": (h, kv * head_dim),
        "self_attn.v_proj": (h, kv * head_dim),
        "self_attn.o_proj": (heads * head_dim, h),
        "mlp.gate_proj": (h, inter),
        "mlp.up_proj": (h, inter),
        "mlp.down_proj": (inter, h),
    }


def count_lora_parameters(config, model_config: dict) -> int:
    """Trainable parameters of a LoRA twin: rank × (in + out) per targeted linear per adapted layer."""
    lora = config.lora
    layers = model_config["num_hidden_layers"] if lora.num_layers == -1 else min(lora.num_layers, model_config["num_hidden_layers"])
    targets = lora_targets(model_config)
    keys = lora.keys or tuple(targets)
    per_layer = 0
    for key in keys:
        match = [t for t in targets if t == key or t.endswith("." + key)]
        for t in match:
            fan_in, fan_out = targets[t]
            per_layer += lora.rank * (fan_in + fan_out)
    return layers * per_layer
