"""Eagle2 as a prtcore base model of the mlx backend (native MLX; remote code does not apply to MLX).

The BaseLM's `model` is mlx-lm's Qwen2, so text-only PRT works unchanged; images enter through `images=` or
`pixel_values=` in `forward`.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from prt_mlx.base import DTYPES, MLXBaseLM, adapters_off, as_ids
from prtcore.errors import ConfigError

from .config import Eagle2Config, parse_config, read_config_json
from .mlx_model import embed_forward, image_features_of, load_model
from .vision import make_encoder


class Eagle2MLXLM(MLXBaseLM):
    """A frozen Eagle2 on mlx: `vlm` the whole model, `vision` its encoder."""

    def __init__(self, backend, vlm, tokenizer, config: dict, path: Path, eagle: Eagle2Config, options: dict):
        config = {**config, "text_config": eagle.text}  # where prt_mlx reads vocab and hidden sizes
        super().__init__(backend, vlm.language_model, tokenizer, config, path, options)
        self.vlm, self.eagle = vlm, eagle
        self.vlm.freeze()
        self.vision = make_encoder(eagle, tokenizer, self.image_features, key=("eagle2", id(vlm)))

    def image_features(self, pixel_values) -> mx.array:
        return self.vlm.extract_feature(pixel_values)

    def forward(self, ids, cache=None, *, hidden: bool = False, images=None, pixel_values=None):
        from prtcore.model import ForwardOutput

        features = image_features_of(images, self.vision)
        if features is None and pixel_values is not None:
            features = self.image_features(pixel_values)
        if features is None:
            return super().forward(ids, cache, hidden=hidden)
        with adapters_off(self.adapter_layers):
            logits, h = embed_forward(self.model, as_ids(ids), cache, features, self.vision.image_token_id)
        return ForwardOutput(logits, h if hidden else None)

    def create_reward(self, config, seed: int = 0):
        """A LoRA twin on the language model (the mlx backend's `create_reward` calls this)."""
        from .mlx_reward import Eagle2MLXReward

        return Eagle2MLXReward.for_source(self.backend, config, self, seed=seed)

    def load_reward(self, artifact):
        from .mlx_reward import Eagle2MLXReward

        return Eagle2MLXReward.from_artifact(self.backend, artifact, self)


def load_mlx(path, dtype=None, trust_remote_code=False, lazy=False, quantize=None, group_size=64):
    """The mlx backend's loader for model family eagle2 (see prt_eagle2.plugin)."""
    from prtcore.plugins import get_backend

    if quantize:
        raise ConfigError(f"quantize={quantize}: not supported for Eagle2 yet (load it unquantised)")
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: must be one of {', '.join(DTYPES)}")
    path = Path(path)
    raw = read_config_json(path)
    eagle = parse_config(raw, str(path / "config.json"))
    vlm = load_model(path, eagle, DTYPES.get(dtype), lazy=lazy)
    backend = get_backend("mlx")
    tokenizer = backend.load_tokenizer(path, eos_token_ids=eagle.text.get("eos_token_id"))
    return Eagle2MLXLM(backend, vlm, tokenizer, raw, path, eagle, {"dtype": dtype, "lazy": lazy})
