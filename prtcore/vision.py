"""Images for vision-language bases: loading, the `VisionEncoder` interface, and where images enter the tokens.

A prompt or a training row carries one *placeholder* per image (the encoder's `placeholder` text, e.g. Qwen-VL's
"<|vision_start|><|image_pad|><|vision_end|>"; the marker "<image>" in data or prompts is replaced by it). After
tokenisation each image's single `image_token_id` is expanded to as many copies as the image has feature
vectors; the model's forward puts the features at those positions. Those positions are never loss targets.

    images = Images(["cat.png"])                      # paths, PIL images or arrays
    ids = expand_image_tokens(ids, encoder.image_token_id, images.num_tokens(encoder))
    feats = images.features(encoder)                  # computed once per encoder (see `VisionEncoder.key`)

A backend's vision-language base sets `BaseLM.vision` to its encoder and accepts `forward(ids, cache=None, *,
hidden=False, images=None)`, `images` holding one `Images` (or None) per row: it embeds the ids, puts
`images[i].features(self.vision)` at row i's `image_token_id` positions (rows in order), and runs its language
model on those embeddings; a cached call without images continues the sequence. Its rewards take the same
`images=`. `PRTForCausalLM.prepare` builds such ids from a prompt and images.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np

from .errors import ConfigError, DataError, GenerationError

IMAGE_MARKER = "<image>"


class VisionEncoder(ABC):
    """A vision tower as a backend gives it for a vision-language base (`BaseLM.vision`).

    Implementations provide:
    - `image_token_id`: the token that stands for one feature vector in the sequence;
    - `placeholder`: the prompt text for one image before expansion (contains `image_token_id` once);
    - `key`: encoders with equal keys compute the same features from the same inputs (the same tower, e.g. a
      base and its LoRA twin), so `Images` computes them once for both;
    - `preprocess(images)`: RGB PIL images → model inputs (pixel values, grid sizes) as backend arrays;
    - `num_tokens(inputs)`: feature vectors per image (how far each placeholder expands);
    - `features(inputs)`: the features of all images, concatenated, (sum(num_tokens), hidden) as the language
      model consumes them.
    """

    image_token_id: int
    placeholder: str

    @property
    @abstractmethod
    def key(self) -> Hashable: ...

    @abstractmethod
    def preprocess(self, images: Sequence[Any]) -> Any: ...

    @abstractmethod
    def num_tokens(self, inputs: Any) -> list[int]: ...

    @abstractmethod
    def features(self, inputs: Any) -> Any: ...


QWEN_VL_TYPES = ("qwen2_vl", "qwen2_5_vl")


def is_vlm_config(config: dict) -> bool:
    """A vision-language checkpoint's config.json: it has a `vision_config`."""
    return isinstance(config.get("vision_config"), dict)


def qwen_placeholder(tokenizer, config: dict) -> str:
    """"<|vision_start|><|image_pad|><|vision_end|>", from the ids the config names."""
    ids = [config["vision_start_token_id"], config["image_token_id"], config["vision_end_token_id"]]
    return "".join(tokenizer.convert_ids_to_tokens(ids))


class QwenEncoderBase(VisionEncoder):
    """What the backends' Qwen2-VL / Qwen2.5-VL encoders share: the model and its image processor, the image token
    the config names, and the vision tower's spatial merge (merge² patches make one feature vector)."""

    def __init__(self, model, image_processor, config: dict, placeholder: str):
        self.model, self.image_processor = model, image_processor
        self.image_token_id, self.placeholder = int(config["image_token_id"]), placeholder
        self.merge = int(config["vision_config"].get("spatial_merge_size", 2))


class ProcessorEncoderBase(VisionEncoder):
    """What the backends' encoders through a checkpoint's own processor share: the model, the processor, and the
    image token with its placeholder."""

    def __init__(self, model, processor, image_token_id: int, placeholder: str):
        self.model, self.processor = model, processor
        self.image_token_id, self.placeholder = int(image_token_id), placeholder


def check_lora_twin(config) -> None:
    """A vision-language base's reward (a prtcore.config.RewardConfig) must be a LoRA twin initialised as a copy."""
    if config.kind != "twin" or config.fine_tune_type != "lora" or config.init != "copy":
        raise ConfigError("vision-language bases take twin rewards with LoRA and init 'copy' "
                          f"(got kind={config.kind!r}, fine_tune_type={config.fine_tune_type!r}, init={config.init!r})")


def load_image(source, base_dir: Path | None = None):
    """An RGB PIL image from a path (relative to `base_dir` when given), a PIL image or an array.

    Arrays are (H, W, 3) or (H, W), uint8, or float in [0, 1]."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except FileNotFoundError:
            raise DataError(f"{path}: image not found") from None
        except OSError as e:
            raise DataError(f"{path}: cannot read the image ({e})") from None
    array = np.asarray(source)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 3, 4)):
        raise DataError(f"an image array must be (H, W) or (H, W, 3), got shape {array.shape}")
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float64), 0.0, 1.0) * 255).round().astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array).convert("RGB")


class Images:
    """The images of one sequence, with each encoder's inputs and features computed once and kept.

    Features stay cached as long as the object lives: a training example's images are encoded once per run.
    """

    def __init__(self, images: Sequence[Any], base_dir: Path | None = None):
        self.images = [load_image(x, base_dir) for x in images]
        self._inputs: dict = {}
        self._features: dict = {}

    def __len__(self) -> int:
        return len(self.images)

    def inputs(self, encoder: VisionEncoder):
        if encoder.key not in self._inputs:
            self._inputs[encoder.key] = encoder.preprocess(self.images)
        return self._inputs[encoder.key]

    def num_tokens(self, encoder: VisionEncoder) -> list[int]:
        return [int(n) for n in encoder.num_tokens(self.inputs(encoder))]

    def features(self, encoder: VisionEncoder):
        if encoder.key not in self._features:
            self._features[encoder.key] = encoder.features(self.inputs(encoder))
        return self._features[encoder.key]


def as_images(images) -> Images | None:
    """None, an `Images`, or a list of images (paths, PIL images, arrays) → Images or None."""
    if images is None or isinstance(images, Images):
        return images
    if isinstance(images, (str, Path, np.ndarray)) or hasattr(images, "convert"):  # one image
        images = [images]
    return Images(list(images)) if len(images) else None


def with_placeholders(text: str, count: int, placeholder: str) -> str:
    """`text` with each "<image>" marker replaced by `placeholder`; without markers, `count` placeholders are
    put in front. The markers must number `count`."""
    marked = text.count(IMAGE_MARKER)
    if marked == 0:
        return placeholder * count + text
    if marked != count:
        raise DataError(f"the text has {marked} {IMAGE_MARKER} markers for {count} images")
    return text.replace(IMAGE_MARKER, placeholder)


def messages_with_placeholders(messages: list[dict], count: int, placeholder: str) -> list[dict]:
    """Chat messages with string contents where images are placeholders: "<image>" markers and
    {"type": "image"} content parts become `placeholder`; without either, the first user message gets them all."""
    out, marked = [], 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):  # mlx-vlm / transformers content parts
            parts = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "image":
                    parts.append(IMAGE_MARKER)
                elif kind == "text":
                    parts.append(str(part.get("text", "")))
            content = "".join(parts)
        content = content or ""
        marked += content.count(IMAGE_MARKER)
        out.append({**m, "content": content})
    if marked == 0 and count:
        first = next((i for i, m in enumerate(out) if m["role"] == "user"), None)
        if first is None:
            raise DataError(f"{count} images but no user message to put them in")
        out[first] = {**out[first], "content": IMAGE_MARKER * count + out[first]["content"]}
        marked = count
    if marked != count:
        raise DataError(f"the messages have {marked} images marked ({IMAGE_MARKER} or image parts) for {count} images")
    return [{**m, "content": m["content"].replace(IMAGE_MARKER, placeholder)} for m in out]


def uses_mrope(config: dict) -> bool:
    """Multimodal rope (Qwen-VL style 3-D positions): the generic vision path's positions would be wrong."""
    import json

    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    return any("mrope" in json.dumps(c.get(k)) for c in (config, text) for k in ("rope_scaling", "rope_parameters"))


def expand_image_tokens(ids: Sequence[int], image_token_id: int, counts: Sequence[int]) -> list[int]:
    """Token ids with the i-th occurrence of `image_token_id` repeated `counts[i]` times."""
    found = sum(1 for i in ids if i == image_token_id)
    if found != len(counts):
        raise GenerationError(f"the tokens hold {found} image placeholders for {len(counts)} images")
    out, k = [], 0
    for token in ids:
        if token == image_token_id:
            out.extend([token] * counts[k])
            k += 1
        else:
            out.append(int(token))
    return out


def image_token_counts(encoders: Sequence[VisionEncoder], images: Images) -> list[int]:
    """Feature vectors per image, which every model composed over one sequence must agree on."""
    counts = [images.num_tokens(e) for e in encoders]
    if any(c != counts[0] for c in counts[1:]):
        raise GenerationError(f"the models encode these images into different numbers of tokens ({counts}); "
                              "PRT composes models position by position and needs the same sequence")
    ids = {e.image_token_id for e in encoders}
    if len(ids) > 1:
        raise GenerationError(f"the models use different image tokens ({sorted(ids)})")
    return counts[0]
