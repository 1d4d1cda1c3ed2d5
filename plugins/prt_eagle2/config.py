"""Eagle2's config.json in either format (`eagle_chat`, `eagle_2_5_vl`) read into one validated `Eagle2Config`."""

from __future__ import annotations

import json
from pathlib import Path

import attrs

from prtcore.errors import ConfigError, ModelLoadError

# model_type: (key of the language model's config, min-tiles key, max-tiles key)
FORMATS = {
    "eagle_chat": ("llm_config", "min_dynamic_patch", "max_dynamic_patch"),
    "eagle_2_5_vl": ("text_config", "min_dynamic_tiles", "max_dynamic_tiles"),
}
# Defaults where config.json leaves a field out: the format's config class (eagle_2_5_vl's differ from its JSON)
DEFAULTS = {"eagle_chat": {"select_layer": -1, "max_tiles": 12}, "eagle_2_5_vl": {"select_layer": -4, "max_tiles": 6}}
VISION_TYPE = "siglip_vision_model"
TEXT_TYPE = "qwen2"
# Fields of the SigLIP vision config the native towers read (the rest are PaliGemma leftovers or training-only).
VISION_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
               "patch_size", "num_channels", "hidden_act", "layer_norm_eps", "attention_dropout")
# Attention settings the checkpoints carry ("flash_attention_2"), dropped for the native build.
ATTENTION_KEYS = ("attn_implementation", "_attn_implementation", "_attn_implementation_autoset", "auto_map")


@attrs.frozen
class Eagle2Config:
    """What the native Eagle2 needs: the two sub-configs and the image settings shared by both formats."""

    model_type: str
    vision: dict  # SigLIP vision config (transformers field names)
    text: dict  # Qwen2 config (transformers field names)
    image_size: int  # tile side in pixels
    downsample_ratio: float
    select_layer: int
    min_tiles: int
    max_tiles: int
    use_thumbnail: bool
    image_token_index: int | None  # eagle_2_5_vl: in the config; eagle_chat: from the tokenizer
    source: str = "config.json"

    @property
    def vision_hidden(self) -> int:
        return int(self.vision["hidden_size"])

    @property
    def text_hidden(self) -> int:
        return int(self.text["hidden_size"])

    @property
    def shuffle(self) -> int:
        """Side of the square of patches merged into one token (2 for downsample_ratio 0.5)."""
        return round(1 / self.downsample_ratio)

    @property
    def patches_per_side(self) -> int:
        return self.image_size // int(self.vision["patch_size"])

    @property
    def tokens_per_tile(self) -> int:
        """Image tokens per tile: (image_size / patch_size)² · downsample_ratio² (256 for 448 px, 14 px, 0.5)."""
        return (self.patches_per_side // self.shuffle) ** 2


def _require(config: dict, key: str, source: str, where: str = ""):
    if key not in config:
        raise ConfigError(f"{source}: {where}{key}: missing")
    return config[key]


def parse_config(config: dict, source: str = "config.json") -> Eagle2Config:
    """Validate an Eagle2 config.json dict; errors are one line naming the file, field and value."""
    model_type = config.get("model_type")
    if model_type not in FORMATS:
        raise ConfigError(f"{source}: model_type={model_type!r}: not an Eagle2 format (one of {', '.join(FORMATS)})")
    text_key, min_key, max_key = FORMATS[model_type]
    vision = _require(config, "vision_config", source)
    text = _require(config, text_key, source)
    if not isinstance(vision, dict) or not isinstance(text, dict):
        raise ConfigError(f"{source}: vision_config and {text_key} must be JSON objects")
    if vision.get("model_type", VISION_TYPE) != VISION_TYPE:
        raise ConfigError(f"{source}: vision_config.model_type={vision.get('model_type')!r}: only {VISION_TYPE!r} "
                          "is supported (Eagle2-9B's multi-backbone tower is not)")
    if text.get("model_type", TEXT_TYPE) != TEXT_TYPE:
        raise ConfigError(f"{source}: {text_key}.model_type={text.get('model_type')!r}: only {TEXT_TYPE!r} is supported")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size"):
        _require(vision, key, source, "vision_config.")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        _require(text, key, source, f"{text_key}.")
    image_size = int(config.get("force_image_size") or vision.get("image_size") or 0)
    patch = int(vision["patch_size"])
    ratio = float(config.get("downsample_ratio", 0.5))
    if ratio <= 0 or abs(1 / ratio - round(1 / ratio)) > 1e-9:
        raise ConfigError(f"{source}: downsample_ratio={ratio!r}: must be 1/k for a whole k (Eagle2: 0.5)")
    if image_size <= 0 or image_size % patch or (image_size // patch) % round(1 / ratio):
        raise ConfigError(f"{source}: force_image_size={image_size!r}: must be a multiple of patch_size {patch} "
                          f"whose patch grid divides by {round(1 / ratio)}")
    layers = int(vision["num_hidden_layers"])
    defaults = DEFAULTS[model_type]
    select_layer = int(config.get("select_layer", defaults["select_layer"]))
    if not -layers - 1 <= select_layer <= layers or select_layer == 0:
        raise ConfigError(f"{source}: select_layer={select_layer}: must be -1 or a hidden-state index of the "
                          f"{layers}-layer vision tower")
    min_tiles, max_tiles = int(config.get(min_key, 1)), int(config.get(max_key, defaults["max_tiles"]))
    if not 1 <= min_tiles <= max_tiles:
        raise ConfigError(f"{source}: {min_key}={min_tiles}, {max_key}={max_tiles}: need 1 <= min <= max")
    if not config.get("dynamic_image_size", True):
        min_tiles = max_tiles = 1
    token = config.get("image_token_index")
    return Eagle2Config(
        model_type=model_type,
        vision={k: vision[k] for k in VISION_KEYS if k in vision} | {"image_size": image_size},
        text={"tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
              **{k: v for k, v in text.items() if k not in ATTENTION_KEYS}},
        image_size=image_size, downsample_ratio=ratio, select_layer=select_layer,
        min_tiles=min_tiles, max_tiles=max_tiles, use_thumbnail=bool(config.get("use_thumbnail", True)),
        image_token_index=None if token is None else int(token), source=source,
    )


def read_config_json(path) -> dict:
    """The raw dict of `path`/config.json (errors are ModelLoadError naming the file)."""
    file = Path(path) / "config.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no config.json (not a model directory)") from None
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{file}:{e.lineno}:{e.colno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{file}: expected a JSON object")
    return data


def read_config(path) -> Eagle2Config:
    """`parse_config` of `path`/config.json."""
    return parse_config(read_config_json(path), str(Path(path) / "config.json"))
