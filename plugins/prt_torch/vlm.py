"""Vision-language bases on torch through transformers, and LoRA twins of their language model through peft.

Qwen2-VL and Qwen2.5-VL have their own encoder (the vision tower called directly, multimodal rope positions);
other families go through `ProcessorVisionEncoder`: the checkpoint's processor expands one image's placeholder
and prepares its pixels, and the features are the input embeddings the model hands its language model, read at
the image tokens (the language model itself does not run). Their positions come from the cache, as for text.

The twin's adapters sit in the source's own module (language model layers only), so base and reward share the
vision tower and the token embeddings: `Images` computes an image's features once for both. Every forward passes
`inputs_embeds` (token embeddings with the image features at the image tokens) and explicit multimodal rope
positions (transformers' `get_rope_index` at the prefill; afterwards the cache length plus the rope delta kept
on the cache), so nothing depends on the rope state transformers keeps on the model between calls.
"""

from __future__ import annotations

from pathlib import Path

import torch

from prtcore.config import RewardConfig
from prtcore.errors import BackendError, ModelLoadError
from prtcore.model import ForwardOutput
from prtcore.vision import (QWEN_VL_TYPES, ProcessorEncoderBase, QwenEncoderBase, VisionEncoder, check_lora_twin,
                            qwen_placeholder, uses_mrope)

from . import base, rewards
from .base import TorchBaseLM, _one_line, cache_keyword, forward_kwargs, from_pretrained, load_tokenizer, resolve_dtype


class QwenVisionEncoder(QwenEncoderBase):
    """Qwen2-VL / Qwen2.5-VL's vision tower in a transformers model, with transformers' image processor."""

    mrope = True

    @property
    def key(self):
        return ("torch", id(self.model.model.visual))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, images):
        out = self.image_processor(images=list(images), return_tensors="pt")
        return {"pixel_values": out["pixel_values"].to(self.device), "image_grid_thw": out["image_grid_thw"].to(self.device)}

    def num_tokens(self, inputs) -> list[int]:
        return (inputs["image_grid_thw"].prod(-1) // self.merge**2).tolist()

    @torch.no_grad()
    def features(self, inputs):
        out = self.model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
        return torch.cat(list(out.pooler_output), dim=0)


class _Captured(Exception):
    """Stops a forward once the language model's input embeddings are captured."""


class ProcessorVisionEncoder(ProcessorEncoderBase):
    """Any transformers VLM whose model hands merged input embeddings to a `language_model` submodule."""

    mrope = False

    @property
    def key(self):
        return ("torch", id(self.model))

    def preprocess(self, images):
        device = next(self.model.parameters()).device
        return [{k: v.to(device) for k, v in self.processor(images=[image], text=[self.placeholder],
                                                           return_tensors="pt").items()} for image in images]

    def num_tokens(self, inputs) -> list[int]:
        return [int((x["input_ids"] == self.image_token_id).sum()) for x in inputs]

    @torch.no_grad()
    def features(self, inputs):
        captured = []

        def capture(module, args, kwargs):
            captured.append(kwargs["inputs_embeds"])
            raise _Captured

        out = []
        for x in inputs:
            hook = self.model.model.language_model.register_forward_pre_hook(capture, with_kwargs=True)
            try:
                self.model.model(**x)
            except _Captured:
                pass
            finally:
                hook.remove()
            out.append(captured.pop()[0][x["input_ids"][0] == self.image_token_id])
        return torch.cat(out)


def input_embeddings(model, vision, ids: torch.Tensor, cache, images):
    """(inputs_embeds, position ids or None) for ids continuing `cache` (images only at the prefill); mrope
    positions (3, B, T) for Qwen."""
    embeds = model.get_input_embeddings()(ids)
    rows = [] if images is None else [x for x in images if x is not None]
    if rows:
        features = torch.cat([x.features(vision) for x in rows]).to(embeds.device, embeds.dtype)
        is_image = ids == vision.image_token_id
        if int(is_image.sum()) != features.shape[0]:
            raise BackendError(f"{int(is_image.sum())} image tokens for {features.shape[0]} image features")
        embeds = embeds.masked_scatter(is_image[..., None], features)
        if not vision.mrope:
            return embeds, None
        grid = torch.cat([x.inputs(vision)["image_grid_thw"] for x in rows])
        positions, delta = model.model.get_rope_index(ids, mm_token_type_ids=is_image.int(), image_grid_thw=grid)
        if cache is not None:
            cache.prt_rope_delta = delta
        return embeds, positions
    if not vision.mrope:
        return embeds, None
    offset = cache.get_seq_length() if cache is not None else 0
    delta = getattr(cache, "prt_rope_delta", None)
    text = torch.arange(offset, offset + ids.shape[1], device=ids.device)[None, :].expand(ids.shape[0], -1)
    if delta is not None:
        text = text + delta.to(ids.device)
    return embeds, text[None].expand(3, -1, -1)


def vlm_inputs(model, vision, ids, cache, images, attention_mask=None) -> dict:
    """Keyword arguments of the model's forward for ids (and images)."""
    embeds, positions = input_embeddings(model, vision, ids, cache, images)
    kwargs = forward_kwargs(cache_keyword(model), embeds.device, cache, attention_mask, inputs_embeds=embeds)
    if positions is not None:
        kwargs["position_ids"] = positions
    return kwargs


# ------------------------------------------------------------------------------------------------ bases
class TorchVLMBaseLM(TorchBaseLM):
    """A frozen transformers vision-language model with its tokenizer and `vision` encoder."""

    def __init__(self, backend, model, tokenizer, path, config, vision: VisionEncoder):
        super().__init__(backend, model, tokenizer, path, config)
        self.vision = vision

    def plain_output_weight(self):
        """None: a vision-language model's language model runs inside its own forward (images or not), so its
        linear rewards take the general path."""
        return None

    @torch.no_grad()
    def forward(self, ids, cache=None, *, hidden: bool = False, attention_mask=None, position_ids=None,
                images=None) -> ForwardOutput:
        if position_ids is not None:
            raise BackendError("vision-language bases compute their own (multimodal) position ids")
        kwargs = vlm_inputs(self.model, self.vision, self.asarray(ids), cache, images, attention_mask)
        return self._forward_output(kwargs, hidden)


def load_vlm(backend, path, config: dict, *, device=None, dtype=None, attn_implementation=None,
             trust_remote_code: bool = False) -> TorchVLMBaseLM:
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor

    path = Path(path)
    qwen = config.get("model_type") in QWEN_VL_TYPES
    device = torch.device(device) if device is not None else base.default_device()
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    model = from_pretrained(AutoModelForImageTextToText, path, dtype=resolve_dtype(dtype, device),
                            attn_implementation=attn_implementation, trust_remote_code=trust_remote_code)
    try:
        processor = (AutoImageProcessor if qwen else AutoProcessor).from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers raises many types
        raise ModelLoadError(f"{path}: cannot load the image processor ({_one_line(e)})") from None
    model.to(device).eval().requires_grad_(False)
    if qwen:
        vision = QwenVisionEncoder(model, processor, config, qwen_placeholder(tokenizer, config))
    else:
        vision = _processor_encoder(model, processor, tokenizer, config, path)
    return TorchVLMBaseLM(backend, model, tokenizer, path, config, vision)


def _processor_encoder(model, processor, tokenizer, config: dict, path) -> ProcessorVisionEncoder:
    if uses_mrope(config):
        raise ModelLoadError(f"{path}: {config.get('model_type')!r} uses multimodal rope, which prtcore supports for "
                             f"{', '.join(QWEN_VL_TYPES)} only")
    if not hasattr(getattr(model, "model", None), "language_model"):
        raise ModelLoadError(f"{path}: {type(model).__name__} has no `model.language_model` to read image features at")
    token = config.get("image_token_id", config.get("image_token_index"))
    if token is None:
        raise ModelLoadError(f"{path}: the config names no image token (image_token_id / image_token_index)")
    placeholder = getattr(processor, "image_token", None) or tokenizer.convert_ids_to_tokens(int(token))
    return ProcessorVisionEncoder(model, processor, int(token), placeholder)


# ------------------------------------------------------------------------------------------------ rewards
class TorchVLMReward(rewards.TorchRewardModel):
    """A LoRA twin of a vision-language base: adapters on the language model, the source's vision tower shared."""

    @property
    def vision(self):
        return self.source.vision

    def forward(self, ids, cache=None, *, source_hidden=None, attention_mask=None, position_ids=None, module=None,
                images=None):
        if position_ids is not None:
            raise BackendError("vision-language rewards compute their own (multimodal) position ids")
        grad = torch.is_grad_enabled() and cache is None and (self.trainable or module is not None)
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        with torch.set_grad_enabled(grad):
            kwargs = vlm_inputs(self.hf_model, self.vision, ids, cache, images, attention_mask)
            net = module if module is not None else self.hf_model
            with self.active():
                return net(**kwargs).logits.float()


def _as_vlm_reward(reward: rewards.TorchRewardModel) -> TorchVLMReward:
    return TorchVLMReward(reward.config, reward.backend, reward.module, source=reward.source, adapter=reward.adapter,
                          trainable=reward.trainable)


def create_reward(backend, config: RewardConfig, source: TorchVLMBaseLM, seed: int = 0) -> TorchVLMReward:
    check_lora_twin(config)
    return _as_vlm_reward(rewards.create_reward(backend, config, source, seed))


def load_reward(backend, artifact, source: TorchVLMBaseLM) -> TorchVLMReward:
    check_lora_twin(artifact.config)
    return _as_vlm_reward(rewards.load_reward(backend, artifact, source))
