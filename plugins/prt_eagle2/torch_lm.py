"""Eagle2 as a prtcore base model of the torch backend, native or (on explicit opt-in) through its remote code.

The BaseLM's `model` is the Qwen2 language model, so text-only PRT (rewards, LoRA twins, generation) works
unchanged; `forward(..., pixel_values=...)` and `vision` add the image side.
"""

from __future__ import annotations

from pathlib import Path

import torch

from prt_torch.base import (ATTENTION, TorchBaseLM, default_device, from_pretrained, load_tokenizer,
                            read_config as read_json, resolve_dtype)
from prtcore.errors import ConfigError, ModelLoadError

from .config import Eagle2Config, parse_config
from .torch_model import UNUSED_PREFIXES, Eagle2Model, load_weights, merge_image_features
from .vision import make_encoder


class Eagle2TorchLM(TorchBaseLM):
    """A frozen Eagle2: `vlm` the whole model (`extract_feature`, `language_model`), `vision` its encoder.

    `forward(ids, ..., images=[Images or None per row])` (prtcore's VLM interface) or `pixel_values=` (all
    rows' tiles in order) fills the `<IMG_CONTEXT>` rows of `ids` with image features.
    """

    def __init__(self, backend, vlm, tokenizer, path: Path | None, config: dict, eagle: Eagle2Config):
        text = eagle.text
        config = {**config, **{k: text[k] for k in ("vocab_size", "max_position_embeddings") if k in text}}
        super().__init__(backend, vlm.language_model, tokenizer, path, config)
        self.vlm, self.eagle = vlm, eagle
        self.vision = make_encoder(eagle, tokenizer, self.image_features, key=("eagle2", id(vlm)))
        self.image_token = self.vision.image_token_id
        self._features = None

    def create_reward(self, config, seed: int = 0):
        """A LoRA twin on the language model (the torch backend's `create_reward` calls this)."""
        from .torch_reward import create_reward

        return create_reward(self.backend, config, self, seed)

    def load_reward(self, artifact):
        from .torch_reward import load_reward

        return load_reward(self.backend, artifact, self)

    @torch.no_grad()
    def image_features(self, pixel_values) -> torch.Tensor:
        """(tiles, tokens per tile, hidden) in the model's dtype for NumPy or torch pixel values."""
        return self.vlm.extract_feature(torch.as_tensor(pixel_values).to(self.device, self.dtype))

    def model_inputs(self, ids, cache=None, attention_mask=None, position_ids=None) -> dict:
        kwargs = super().model_inputs(ids, cache, attention_mask, position_ids)
        if self._features is not None:
            ids = kwargs.pop("input_ids")
            embeds = self.model.get_input_embeddings()(ids)
            kwargs["inputs_embeds"] = merge_image_features(embeds, ids, self._features, self.image_token)
        return kwargs

    def forward(self, ids, cache=None, *, hidden: bool = False, attention_mask=None, position_ids=None,
                images=None, pixel_values=None):
        """As TorchBaseLM.forward, with the images' features in place of the `<IMG_CONTEXT>` tokens."""
        if images is not None:
            parts = [row.features(self.vision) for row in images if row is not None]
            self._features = torch.cat(parts) if parts else None
        elif pixel_values is not None:
            self._features = self.image_features(pixel_values)
        try:
            return super().forward(ids, cache, hidden=hidden, attention_mask=attention_mask, position_ids=position_ids)
        finally:
            self._features = None


def _device_dtype(eagle_json: dict, device, dtype):
    try:
        device = torch.device(device) if device is not None else default_device()
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={device!r}: not a torch device (e.g. 'cpu', 'cuda', 'mps')") from None
    dtype = resolve_dtype(dtype, device)
    if dtype == "auto":
        name = eagle_json.get("torch_dtype") or eagle_json.get("dtype") or "float32"
        dtype = resolve_dtype(name, device)
    return device, dtype


def load_torch(path, device=None, dtype=None, attn_implementation=None, trust_remote_code=False):
    """The torch backend's loader for model family eagle2 (see prt_eagle2.plugin)."""
    from prtcore.plugins import get_backend

    path = Path(path)
    raw = read_json(path)
    eagle = parse_config(raw, str(path / "config.json"))
    device, dtype = _device_dtype(raw, device, dtype)
    if attn_implementation is not None and attn_implementation not in ATTENTION:
        raise ConfigError(f"attn_implementation={attn_implementation!r}: Eagle2 runs with one of {', '.join(ATTENTION)}")
    tokenizer = load_tokenizer(path)
    if trust_remote_code:
        vlm = load_remote(path, dtype, attn_implementation)
    else:
        vlm = Eagle2Model(eagle, attn_implementation or "sdpa")
        load_weights(vlm, path, bool(eagle.text.get("tie_word_embeddings")))
    vlm.to(device=device, dtype=dtype).eval().requires_grad_(False)
    lm = Eagle2TorchLM(get_backend("torch"), vlm, tokenizer, path, raw, eagle)
    if hasattr(vlm, "img_context_token_id"):  # the old remote code's own forward/generate read it (chat() sets it)
        vlm.img_context_token_id = lm.image_token
    return lm


def load_remote(path: Path, dtype, attn_implementation=None):
    """The checkpoint's own code (AutoModel + trust_remote_code); the eagle2 plugin's pre-load patch is active."""
    from transformers import AutoModel

    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = from_pretrained(AutoModel, path, what="the remote code", unused=UNUSED_PREFIXES, trust_remote_code=True,
                            dtype=dtype, **kwargs)
    for name in ("extract_feature", "language_model"):
        if not hasattr(model, name):
            raise ModelLoadError(f"{path}: the remote model {type(model).__name__} has no {name!r}: not Eagle2's code")
    return model
