"""Native Eagle2 in MLX: a SigLIP vision tower written here, pixel shuffle, `mlp1`, and mlx-lm's Qwen2; and the
language model's forward with image features in place of the `<IMG_CONTEXT>` embeddings (`embed_forward`), which
the base (prt_eagle2.mlx_lm) and its twin rewards (prt_eagle2.mlx_reward) share.

Parameter names equal the official checkpoint's (`vision_model.vision_model.*`, `mlp1.{0,1,3}.*`,
`language_model.model.*`); only the patch embedding is stored channels-last, as MLX convolutions want.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from prtcore.errors import ConfigError, ModelLoadError

from .config import Eagle2Config
from .vision import IMG_CONTEXT

ACTIVATIONS = {"gelu_pytorch_tanh": nn.gelu_approx, "gelu": nn.gelu, "gelu_new": nn.gelu_approx,
               "gelu_fast": nn.gelu_approx}
UNUSED_PREFIXES = ("vision_model.vision_model.head.",)
PATCH_WEIGHT = "vision_model.vision_model.embeddings.patch_embedding.weight"


# ------------------------------------------------------------------------------------------------ SigLIP
class SiglipAttention(nn.Module):
    def __init__(self, dims: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dims // heads) ** -0.5
        self.q_proj, self.k_proj = nn.Linear(dims, dims), nn.Linear(dims, dims)
        self.v_proj, self.out_proj = nn.Linear(dims, dims), nn.Linear(dims, dims)

    def __call__(self, x):
        b, n, d = x.shape
        q, k, v = (p(x).reshape(b, n, self.heads, -1).transpose(0, 2, 1, 3) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(b, n, d))


class SiglipMLP(nn.Module):
    def __init__(self, dims: int, hidden: int, act: str):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ConfigError(f"vision_config.hidden_act={act!r}: one of {', '.join(ACTIVATIONS)}")
        self.fc1, self.fc2, self.act = nn.Linear(dims, hidden), nn.Linear(hidden, dims), ACTIVATIONS[act]

    def __call__(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SiglipLayer(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        dims, eps = int(v["hidden_size"]), float(v.get("layer_norm_eps", 1e-6))
        self.layer_norm1, self.layer_norm2 = nn.LayerNorm(dims, eps=eps), nn.LayerNorm(dims, eps=eps)
        self.self_attn = SiglipAttention(dims, int(v["num_attention_heads"]))
        self.mlp = SiglipMLP(dims, int(v["intermediate_size"]), v.get("hidden_act", "gelu_pytorch_tanh"))

    def __call__(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEmbeddings(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        dims, patch = int(v["hidden_size"]), int(v["patch_size"])
        self.patch_embedding = nn.Conv2d(int(v.get("num_channels", 3)), dims, kernel_size=patch, stride=patch)
        self.position_embedding = nn.Embedding((int(v["image_size"]) // patch) ** 2, dims)

    def __call__(self, pixels):  # (T, S, S, C) channels-last
        x = self.patch_embedding(pixels)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        return x + self.position_embedding.weight[None, : x.shape[1]]


class SiglipEncoder(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        self.layers = [SiglipLayer(v) for _ in range(int(v["num_hidden_layers"]))]


class SiglipTransformer(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        self.embeddings = SiglipEmbeddings(v)
        self.encoder = SiglipEncoder(v)
        self.post_layernorm = nn.LayerNorm(int(v["hidden_size"]), eps=float(v.get("layer_norm_eps", 1e-6)))

    def __call__(self, pixels, select_layer: int = -1):
        """`select_layer` -1: the last layer's output after post_layernorm; else that hidden state (as
        transformers' `hidden_states[select_layer]`: index 0 is the embeddings)."""
        x = self.embeddings(pixels)
        states = [x]
        for layer in self.encoder.layers:
            x = layer(x)
            states.append(x)
        return self.post_layernorm(x) if select_layer == -1 else states[select_layer]


class SiglipVisionModel(nn.Module):
    """Same nesting as transformers' SiglipVisionModel (`vision_model.vision_model.*` in the checkpoint)."""

    def __init__(self, v: dict):
        super().__init__()
        self.vision_model = SiglipTransformer(v)


# ------------------------------------------------------------------------------------------------ Eagle2
def pixel_shuffle(x, scale: int):
    """(T, h, w, C) → (T, h/s · w/s, s² · C), the same token and channel order as the torch implementation."""
    t, h, w, c = x.shape
    x = x.reshape(t, h // scale, scale, w // scale, scale, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(t, (h // scale) * (w // scale), scale * scale * c)


class Eagle2Model(nn.Module):
    def __init__(self, config: Eagle2Config, language_model: nn.Module):
        super().__init__()
        self.config = config
        width = config.vision_hidden * config.shuffle ** 2
        self.vision_model = SiglipVisionModel(config.vision)
        self.mlp1 = [nn.LayerNorm(width, eps=1e-5), nn.Linear(width, config.text_hidden), nn.GELU(),
                     nn.Linear(config.text_hidden, config.text_hidden)]
        self.language_model = language_model

    def extract_feature(self, pixel_values) -> mx.array:
        """(tiles, 3, S, S) channels-first pixels (NumPy or mx) → (tiles, tokens per tile, LLM hidden)."""
        pixels = mx.array(pixel_values).astype(self.mlp1[1].weight.dtype).transpose(0, 2, 3, 1)
        hidden = self.vision_model.vision_model(pixels, self.config.select_layer)
        tiles, patches, width = hidden.shape
        side = math.isqrt(patches)
        x = pixel_shuffle(hidden.reshape(tiles, side, side, width), self.config.shuffle)
        for layer in self.mlp1:
            x = layer(x)
        return x


def language_model(config: Eagle2Config) -> nn.Module:
    """mlx-lm's Qwen2 from the text config (rope settings read as transformers does)."""
    from mlx_lm.models import qwen2

    from prt_mlx.base import normalize_config

    text = {**config.text, **normalize_config(config.text)}
    return qwen2.Model(qwen2.ModelArgs.from_dict(text))


def sanitize(weights: dict, config: Eagle2Config) -> dict:
    """Checkpoint tensors → this module's: unused SigLIP head dropped, patch embedding channels-last."""
    out = {k: v for k, v in weights.items() if not k.startswith(UNUSED_PREFIXES)}
    if PATCH_WEIGHT in out and out[PATCH_WEIGHT].shape[1] == int(config.vision.get("num_channels", 3)):
        out[PATCH_WEIGHT] = out[PATCH_WEIGHT].transpose(0, 2, 3, 1)
    if config.text.get("tie_word_embeddings"):
        out.pop("language_model.lm_head.weight", None)
    return out


def load_model(path, config: Eagle2Config, dtype=None, lazy: bool = False) -> Eagle2Model:
    files = sorted(path.glob("model*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path}: no model*.safetensors")
    weights = {}
    for file in files:
        weights.update(mx.load(str(file)))
    model = Eagle2Model(config, language_model(config))
    weights = sanitize(weights, config)
    expected = {k for k, _ in tree_flatten(model.parameters())}
    unexpected, missing = sorted(set(weights) - expected), sorted(expected - set(weights))
    if unexpected:
        raise ModelLoadError(f"{path}: unexpected weights for Eagle2 ({len(unexpected)}), e.g. {unexpected[0]}")
    if missing:
        raise ModelLoadError(f"{path}: weights missing for Eagle2 ({len(missing)}), e.g. {missing[0]}")
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as e:  # shapes
        raise ModelLoadError(f"{path}: the weights do not fit Eagle2 ({str(e).splitlines()[0]})") from None
    if dtype is not None:
        model.set_dtype(dtype)
    if not lazy:
        mx.eval(model.parameters())
    return model


# ------------------------------------------------------------------------------------------------ images in the prompt
def merge_image_features(embeds: mx.array, ids: mx.array, features: mx.array, image_token: int) -> mx.array:
    """`embeds` with the `<IMG_CONTEXT>` rows replaced by `features` in order (counts must match)."""
    positions = np.flatnonzero(np.array(ids).reshape(-1) == image_token)
    rows = features.reshape(-1, embeds.shape[-1])
    if positions.size != rows.shape[0]:
        raise ConfigError(f"the prompt has {positions.size} {IMG_CONTEXT} tokens but the images give {rows.shape[0]} "
                          "features (tiles × tokens per tile): build the prompt with the vision encoder's placeholders")
    flat = embeds.reshape(-1, embeds.shape[-1])
    flat[mx.array(positions)] = rows.astype(flat.dtype)
    return flat.reshape(embeds.shape)


def image_features_of(images, vision):
    """The features of every row's Images (prtcore.vision), concatenated; None without images."""
    parts = [] if images is None else [row.features(vision) for row in images if row is not None]
    return mx.concatenate(parts) if parts else None


def embed_forward(lm, ids, cache, features, image_token: int):
    """(logits, hidden) of mlx-lm's Qwen2 `lm` with `features` in place of the `<IMG_CONTEXT>` embeddings."""
    embeds = merge_image_features(lm.model.embed_tokens(ids), ids, features, image_token)
    h = lm.model(ids, cache, input_embeddings=embeds)
    logits = lm.model.embed_tokens.as_linear(h) if lm.args.tie_word_embeddings else lm.lm_head(h)
    return logits.astype(mx.float32), h
