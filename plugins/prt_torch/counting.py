"""Dry-run parameter counts: the model is built on the `meta` device, so no weight is ever materialised."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from prtcore.artifacts import check_safetensors
from prtcore.config import RewardConfig
from prtcore.errors import ModelLoadError
from prtcore.rewards import count_lora_parameters, count_reward_parameters

from .base import read_config
from .layers import decoder_layers
from .rewards import lora_config


def meta_model(path: Path, trust_remote_code: bool = False):
    """The checkpoint's architecture with shapes only (device "meta")."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code, local_files_only=True)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def lora_count(config: RewardConfig, model) -> int:
    """rank × (in + out) for every linear that the twin's LoraConfig targets."""
    peft_config = lora_config(config, model, None)
    _, layers = decoder_layers(model)
    total = 0
    for i in peft_config.layers_to_transform:
        for name, m in layers[i].named_modules():
            if isinstance(m, nn.Linear) and any(name == t or name.endswith("." + t) for t in peft_config.target_modules):
                total += config.lora.rank * (m.in_features + m.out_features)
    return total


def _header_total(path: Path) -> int:
    files = sorted(path.glob("model*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path}: cannot build the model on the meta device and it has no model*.safetensors to read")
    return sum(math.prod(info["shape"]) for f in files for k, info in check_safetensors(f).items() if k != "__metadata__")


def count_parameters(source_path, reward_config: RewardConfig, *, trust_remote_code: bool = False,
                     dtype_bytes: int = 4) -> dict[str, int]:
    """{"trainable", "total", "artifact_bytes"} for training `reward_config` on the checkpoint at `source_path`.

    `total` counts what training holds: the frozen source plus the reward's own parameters (a LoRA twin shares the
    source's weights). `artifact_bytes` is the size of the weight tensors written (float32; `dtype_bytes` per value
    for a full twin), without file headers and tokenizer files.
    """
    path = Path(source_path)
    model_config = read_config(path)
    try:
        model = meta_model(path, trust_remote_code)
    except Exception:  # an architecture transformers cannot build: fall back to the config and weight headers
        model = None
    if model is not None:
        source_total = sum(p.numel() for p in model.parameters())
        head = model.get_output_embeddings()
        vocab, hidden = head.weight.shape
        tied = head.weight is model.get_input_embeddings().weight
    else:
        source_total = _header_total(path)
        vocab, hidden = model_config["vocab_size"], model_config["hidden_size"]
        tied = bool(model_config.get("tie_word_embeddings", False))
    if reward_config.reward_kind.stored_as == "tensors":  # linear, transformer, a plugin's (prtcore.kinds)
        trainable = count_reward_parameters(reward_config, hidden, vocab)
        stored = trainable * 4
    elif reward_config.fine_tune_type == "lora":
        trainable = lora_count(reward_config, model) if model is not None else count_lora_parameters(reward_config, model_config)
        if reward_config.init == "zero_head":
            trainable += vocab * hidden
        stored = trainable * 4
    else:
        trainable = source_total + (vocab * hidden if reward_config.init == "zero_head" and tied else 0)
        stored = trainable * dtype_bytes
    return {"trainable": int(trainable), "total": int(source_total + trainable), "artifact_bytes": int(stored)}
