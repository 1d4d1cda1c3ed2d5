"""Native Eagle2 for the torch backend: transformers' SigLIP + pixel shuffle + `mlp1` + Qwen2, no remote code.

The module tree (`vision_model`, `mlp1`, `language_model`) and its parameter names equal the official
checkpoint's, so model.safetensors loads as is, in either config format.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from prtcore.errors import ConfigError, ModelLoadError

from .config import Eagle2Config
from .vision import IMG_CONTEXT

UNUSED_PREFIXES = ("vision_model.vision_model.head.", "vision_model.head.")  # SigLIP's pooling head, never used
TIED_HEAD = "language_model.lm_head.weight"
NESTED, FLAT = "vision_model.vision_model.", "vision_model."  # SigLIP in transformers 4.x / 5.x module trees


def pixel_shuffle(x: torch.Tensor, scale: int) -> torch.Tensor:
    """(T, h, w, C) patches → (T, h/s · w/s, s² · C) tokens: token (p, q) holds the s×s block at rows s·p…,
    columns s·q…, its channels ordered by row offset, then column offset (InternVL's "v2" shuffle)."""
    t, h, w, c = x.shape
    x = x.reshape(t, h // scale, scale, w // scale, scale, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(t, (h // scale) * (w // scale), scale * scale * c)


def projector(config: Eagle2Config) -> nn.Sequential:
    """`mlp1`: LayerNorm(eps 1e-5) → Linear → GELU (erf) → Linear, from shuffled vision width to LLM width."""
    width = config.vision_hidden * config.shuffle ** 2
    return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, config.text_hidden), nn.GELU(),
                         nn.Linear(config.text_hidden, config.text_hidden))


class Eagle2Model(nn.Module):
    """Eagle2 from stock transformers parts; `extract_feature` and `embed` follow the official forward pass."""

    def __init__(self, config: Eagle2Config, attn_implementation: str = "sdpa"):
        super().__init__()
        from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

        self.config = config
        vision = SiglipVisionConfig(**config.vision, vision_use_head=False)
        text = Qwen2Config(**config.text)
        vision._attn_implementation = text._attn_implementation = attn_implementation
        self.vision_model = SiglipVisionModel(vision)
        self.mlp1 = projector(config)
        self.language_model = Qwen2ForCausalLM(text)

    def extract_feature(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(tiles, 3, S, S) → (tiles, tokens_per_tile, LLM hidden)."""
        if self.config.select_layer == -1:  # after post_layernorm
            hidden = self.vision_model(pixel_values=pixel_values).last_hidden_state
        else:
            out = self.vision_model(pixel_values=pixel_values, output_hidden_states=True)
            hidden = out.hidden_states[self.config.select_layer]
        tiles, patches, width = hidden.shape
        side = math.isqrt(patches)
        return self.mlp1(pixel_shuffle(hidden.reshape(tiles, side, side, width), self.config.shuffle))


def merge_image_features(embeds: torch.Tensor, ids: torch.Tensor, features: torch.Tensor, image_token: int):
    """`embeds` with the rows of `<IMG_CONTEXT>` tokens replaced by `features` in order (counts must match)."""
    mask = ids == image_token
    rows = features.reshape(-1, embeds.shape[-1])
    if int(mask.sum()) != rows.shape[0]:
        raise ConfigError(f"the prompt has {int(mask.sum())} {IMG_CONTEXT} tokens but the images give {rows.shape[0]} "
                          "features (tiles × tokens per tile): build the prompt with the vision encoder's placeholders")
    out = embeds.clone()
    out[mask] = rows.to(out.dtype)
    return out


def siglip_names(state: dict, expected: set) -> dict:
    """Checkpoint names for the installed SigLIP tree: the official nested `vision_model.vision_model.*` becomes
    `vision_model.*` where transformers' SiglipVisionModel is flat (5.x), and back for 4.x."""
    flat = any(k.startswith(FLAT) and not k.startswith(NESTED) for k in expected)
    rename = (lambda k: FLAT + k[len(NESTED):] if k.startswith(NESTED) else k) if flat else \
        (lambda k: NESTED + k[len(FLAT):] if k.startswith(FLAT) and not k.startswith(NESTED) else k)
    return {rename(k): v for k, v in state.items()}


def load_weights(model: nn.Module, path, tied: bool) -> None:
    """model*.safetensors of `path` into `model`: only the tied head may be missing; unused SigLIP head dropped."""
    from safetensors.torch import load_file

    files = sorted(path.glob("model*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path}: no model*.safetensors")
    state = {}
    for file in files:
        state.update({k: v for k, v in load_file(str(file)).items() if not k.startswith(UNUSED_PREFIXES)})
    state = siglip_names(state, set(model.state_dict()))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (tied and k == TIED_HEAD)]
    if unexpected:
        raise ModelLoadError(f"{path}: unexpected weights for Eagle2 ({len(unexpected)}), e.g. {unexpected[0]}")
    if missing:
        raise ModelLoadError(f"{path}: weights missing for Eagle2 ({len(missing)}), e.g. {missing[0]}")
    if tied:
        model.language_model.tie_weights()
