"""Vision-language bases on mlx through mlx-vlm, and LoRA twins of their language model.

Qwen2-VL and Qwen2.5-VL have their own encoder (the vision tower called directly, multimodal rope positions);
every other family mlx-vlm loads goes through `ProcessorVisionEncoder`: mlx-vlm's processor expands one image's
placeholder and prepares its pixels, and the features are the rows of the model's own merged input embeddings
at the image tokens (DeepSeek-VL2's tiles, separators and newlines included). Such a family's prompt gets one
image token repeated per feature; tokens a family's processor puts around them (begin/end of image) are not added.

The base and its LoRA twin share one mlx-vlm model (the adapters sit in the language model only), so they share
the vision tower: `Images` computes an image's features once for both. Each forward builds the input embeddings
itself (token embeddings with the image features at the image tokens) and, for Qwen, the rope positions
(mlx-vlm's `get_rope_index` at the prefill; afterwards the cache offset plus the rope delta kept on the cache),
so nothing depends on the state mlx-vlm's language model keeps between calls.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import mlx.core as mx
import numpy as np

from prtcore.config import RewardConfig
from prtcore.errors import BackendError, ConfigError, ModelLoadError
from prtcore.vision import (QWEN_VL_TYPES, ProcessorEncoderBase, QwenEncoderBase, VisionEncoder, check_lora_twin,
                            qwen_placeholder, uses_mrope)

from .base import DTYPES, MLXBaseLM, _Tap, adapters_off, as_ids, quantize_model, read_config
from .lora import apply_lora
from .twin import TwinReward


class VLMCache(list):
    """The language model's per-layer caches, plus the rope delta of the sequence (set at the prefill)."""

    rope_delta = None


class QwenVisionEncoder(QwenEncoderBase):
    """Qwen2-VL / Qwen2.5-VL's vision tower in an mlx-vlm model, with mlx-vlm's image processor."""

    @property
    def key(self):
        return ("mlx", id(self.model.vision_tower))

    def positions(self, ids, cache, rows):
        """Rope positions (3, B, T): mlx-vlm's `get_rope_index` at the prefill (its delta kept on the cache),
        then the cache offset plus that delta."""
        lm = self.model.language_model
        if rows:
            grid = mx.concatenate([x.inputs(self)["image_grid_thw"] for x in rows], axis=0)
            positions, delta = lm.get_rope_index(ids, grid, None, None)
            if cache is not None:
                cache.rope_delta = delta
            return positions
        offset = cache[0].offset if cache else 0
        delta = cache.rope_delta if cache is not None and cache.rope_delta is not None else mx.zeros((ids.shape[0], 1), mx.int32)
        text = mx.arange(offset, offset + ids.shape[1])[None, :] + delta
        return mx.broadcast_to(text[None], (3,) + text.shape)

    def preprocess(self, images):
        out = self.image_processor(images=list(images))
        return {"pixel_values": mx.array(np.asarray(out["pixel_values"])),
                "image_grid_thw": mx.array(np.asarray(out["image_grid_thw"]))}

    def num_tokens(self, inputs) -> list[int]:
        return (np.prod(np.array(inputs["image_grid_thw"]), axis=-1) // self.merge**2).tolist()

    def features(self, inputs):
        tower = self.model.vision_tower
        pixels = inputs["pixel_values"].astype(tower.patch_embed.proj.weight.dtype)
        return tower(pixels, inputs["image_grid_thw"], output_hidden_states=False)


class ProcessorVisionEncoder(ProcessorEncoderBase):
    """Any mlx-vlm family: its processor prepares each image (with a one-image prompt), and the features are the
    model's merged input embeddings at that prompt's image tokens."""

    SKIP = ("input_ids", "pixel_values", "attention_mask", "labels")

    @property
    def key(self):
        return ("mlx", id(self.model))

    def positions(self, ids, cache, rows):
        return None  # the language model counts positions from its cache

    def preprocess(self, images):
        from mlx_vlm.utils import prepare_inputs

        return [pad_tile_grid(prepare_inputs(self.processor, images=[image], prompts=[self.placeholder]))
                for image in images]

    def num_tokens(self, inputs) -> list[int]:
        return [int((np.array(x["input_ids"]) == self.image_token_id).sum()) for x in inputs]

    def features(self, inputs):
        out = []
        for x in inputs:
            extra = {k: v for k, v in x.items() if k not in self.SKIP and isinstance(v, mx.array)}
            embeds = self.model.get_input_embeddings(x["input_ids"], x["pixel_values"], **extra).inputs_embeds
            out.append(embeds[0][mx.array(np.flatnonzero(np.array(x["input_ids"][0]) == self.image_token_id))])
        return mx.concatenate(out, axis=0)


def pad_tile_grid(inputs: dict) -> dict:
    """DeepSeek-VL2 inputs with `images_spatial_crop` (B, images, 2) zero-padded to (B, tiles, 2).

    mlx-vlm 0.7.10's DeepSeek-VL2 `get_input_embeddings` counts tiles with `images_spatial_crop[idx][jdx]` for
    jdx up to `pixel_values.shape[1]`, the number of tiles, not of images: it reads past the array (mlx does not
    check bounds), and whatever lies there decides whether the image features are merged at all or the call fails
    ("Slice indices must be 32-bit integers"). Zero rows end its loop where the images end."""
    crop, pixels = inputs.get("images_spatial_crop"), inputs.get("pixel_values")
    if crop is None or pixels is None or pixels.ndim != 5 or crop.shape[1] >= pixels.shape[1]:
        return inputs
    pad = mx.zeros((crop.shape[0], pixels.shape[1] - crop.shape[1], crop.shape[2]), dtype=crop.dtype)
    return {**inputs, "images_spatial_crop": mx.concatenate([crop, pad], axis=1)}


def input_embeddings(model, vision, ids: mx.array, cache, images):
    """(inputs_embeds, position ids or None) for ids continuing `cache` (images only at the prefill)."""
    embeds = model.language_model.model.embed_tokens(ids)
    rows = [] if images is None else [x for x in images if x is not None]
    if rows:
        features = mx.concatenate([x.features(vision) for x in rows], axis=0).astype(embeds.dtype)
        where = np.flatnonzero(np.array(ids).reshape(-1) == vision.image_token_id)
        if len(where) != features.shape[0]:
            raise BackendError(f"{len(where)} image tokens for {features.shape[0]} image features")
        B, T, H = embeds.shape
        flat = embeds.reshape(B * T, H)
        flat[mx.array(where)] = features
        embeds = flat.reshape(B, T, H)
    return embeds, vision.positions(ids, cache, rows)


def vlm_forward(model, vision, ids, cache=None, images=None, hidden: bool = False):
    """(logits float32, last hidden states or None) of the mlx-vlm `model` for ids (and images)."""
    ids = as_ids(ids)
    embeds, positions = input_embeddings(model, vision, ids, cache, images)
    lm = model.language_model
    tap = _Tap(lm.model) if hidden else None
    if tap is not None:
        object.__setattr__(lm, "model", tap)
    try:
        extra = {} if positions is None else {"position_ids": positions}
        out = lm(ids, inputs_embeds=embeds, cache=cache, **extra)
        logits = getattr(out, "logits", out)
    finally:
        if tap is not None:
            object.__delattr__(lm, "model")
    return logits.astype(mx.float32), (tap.hidden if tap is not None else None)


def make_vlm_cache(model) -> VLMCache:
    from mlx_lm.models.cache import make_prompt_cache

    return VLMCache(make_prompt_cache(model.language_model))


# ------------------------------------------------------------------------------------------------ bases
class MLXVLMBaseLM(MLXBaseLM):
    """A frozen mlx-vlm model (vision tower + language model) with its tokenizer and `vision` encoder."""

    def __init__(self, backend, model, tokenizer, config, path, options, vision: VisionEncoder):
        super().__init__(backend, model, tokenizer, config, path, options)
        self.vision = vision

    def plain_output_weight(self):
        """None: a vision-language model's language model runs inside its own forward (images or not), so its
        linear rewards take the general path."""
        return None

    def forward(self, ids, cache=None, *, hidden: bool = False, images=None):
        from prtcore.model import ForwardOutput

        with adapters_off(self.adapter_layers):
            logits, h = vlm_forward(self.model, self.vision, ids, cache, images, hidden)
        return ForwardOutput(logits, h)

    def make_cache(self):
        return make_vlm_cache(self.model)

    def make_batch_cache(self, left_padding):
        raise BackendError("batched decoding of vision-language models is not supported; decode prompts one by one")


def load_vlm(backend, path, *, quantize: int | None = None, group_size: int = 64, dtype: str | None = None,
             lazy: bool = False, trust_remote_code: bool = False) -> MLXVLMBaseLM:
    """A vision-language checkpoint through mlx-vlm; `quantize` (4|8) quantises the language model only."""
    from mlx_lm.utils import load_config
    from mlx_vlm.utils import load_model, load_processor

    path = Path(path).resolve()
    config = read_config(path)
    if isinstance(config.get("language_config"), dict) and "text_config" not in config:  # DeepSeek-VL2's name
        config = {**config, "text_config": config["language_config"]}
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: must be one of {', '.join(DTYPES)}")
    try:
        model = load_model(path, lazy=True, trust_remote_code=trust_remote_code)
        with contextlib.redirect_stdout(io.StringIO()):  # some processors print what they add to the tokenizer
            processor = load_processor(path, add_detokenizer=False, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, TypeError, FileNotFoundError, OSError, AttributeError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{path}: mlx-vlm cannot load this model ({message})") from None
    if dtype is not None:
        model.set_dtype(DTYPES[dtype])
    if quantize:
        quantize_model(model.language_model, int(quantize), group_size)
    if not lazy:
        mx.eval(model.parameters())
    tokenizer = backend.load_tokenizer(path, eos_token_ids=load_config(path).get("eos_token_id"))
    vision = make_encoder(model, processor, tokenizer, config, path)
    options = {"quantize": quantize, "group_size": group_size, "dtype": dtype}
    return MLXVLMBaseLM(backend, model, tokenizer, config, path, {k: v for k, v in options.items() if v}, vision)


def make_encoder(model, processor, tokenizer, config: dict, path) -> VisionEncoder:
    if config.get("model_type") in QWEN_VL_TYPES:
        return QwenVisionEncoder(model, processor.image_processor, config, qwen_placeholder(tokenizer, config))
    if uses_mrope(config):
        raise ModelLoadError(f"{path}: {config.get('model_type')!r} uses multimodal rope, which prtcore supports for "
                             f"{', '.join(QWEN_VL_TYPES)} only")
    token = config.get("image_token_id", config.get("image_token_index", getattr(processor, "image_token_id", None)))
    if token is None:
        raise ModelLoadError(f"{path}: the config names no image token (image_token_id / image_token_index)")
    placeholder = getattr(processor, "image_token", None) or tokenizer.convert_ids_to_tokens(int(token))
    if len(tokenizer.encode(placeholder, add_special_tokens=False)) != 1:
        raise ModelLoadError(f"{path}: the image placeholder {placeholder!r} is not one token of the tokenizer")
    return ProcessorVisionEncoder(model, processor, int(token), placeholder)


def build_vlm(config: dict):
    """The mlx-vlm model a config describes, unevaluated (no weights read): for parameter counts."""
    import json

    from mlx_vlm.utils import get_model_and_args, update_module_configs

    config = json.loads(json.dumps(config))
    arch, _ = get_model_and_args(config)
    config.setdefault("text_config", config.pop("llm_config", {}))
    config.setdefault("vision_config", {})
    model_config = update_module_configs(arch.ModelConfig.from_dict(config), arch, config,
                                         ["text", "vision", "perceiver", "projector", "audio"])
    return arch.Model(model_config)


# ------------------------------------------------------------------------------------------------ rewards
# Adapter tensors are stored under transformers' module names, so the torch backend reads the artifact too.
MLX_PREFIX, HF_PREFIX = "language_model.model.", "model.language_model."


class VLMTwinReward(TwinReward):
    """A LoRA twin of a vision-language base: adapters on the language model, the source's vision tower shared."""

    @property
    def vision(self):
        return self.source.vision

    @classmethod
    def create(cls, backend, config: RewardConfig, source, *, seed: int = 0, shared_vocab=None) -> "VLMTwinReward":
        model = _check_lora(config, source)
        apply_lora(model, config.lora, seed=seed)
        twin = cls(backend, config, model, source.config, source=source, shared=True, shared_vocab=shared_vocab)
        mx.eval(model.parameters())
        return twin

    @classmethod
    def from_adapter(cls, backend, config: RewardConfig, adapter_dir, source, *, shared_vocab=None) -> "VLMTwinReward":
        from prtcore import adapters

        from .lora import load_adapter_tensors

        model = _check_lora(config, source)
        _, tensors, lora = adapters.read_adapter(adapter_dir, num_hidden_layers=len(model.layers))
        tensors = {_rename(k, HF_PREFIX, MLX_PREFIX): v for k, v in tensors.items()}
        apply_lora(model, lora)
        load_adapter_tensors(model, tensors, str(adapter_dir))
        twin = cls(backend, config, model, source.config, source=source, shared=True, shared_vocab=shared_vocab)
        mx.eval(model.parameters())
        return twin

    def trained_tensors(self):
        return {_rename(k, MLX_PREFIX, HF_PREFIX): v for k, v in super().trained_tensors().items()}

    def forward(self, ids, cache=None, *, source_hidden=None, images=None):
        return vlm_forward(self.module, self.vision, ids, cache, images)[0]

    def make_cache(self):
        return make_vlm_cache(self.module)

    def make_batch_cache(self, left_padding):
        raise BackendError("batched decoding of vision-language models is not supported; decode prompts one by one")


def _rename(name: str, old: str, new: str) -> str:
    return new + name[len(old):] if name.startswith(old) else name


def _check_lora(config: RewardConfig, source):
    check_lora_twin(config)
    if source.adapter_layers:
        raise ConfigError(f"{source.path}: the base already carries a LoRA twin; load it again for another one")
    return source.model
