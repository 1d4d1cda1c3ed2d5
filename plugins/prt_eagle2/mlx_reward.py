"""Twin rewards of an Eagle2 base on mlx: LoRA on mlx-lm's Qwen2 language model (shared with the source), the
source's vision tower shared; adapters in PEFT's layout, so torch and mlx read each other's artifacts."""

from __future__ import annotations

from prt_mlx.base import as_ids, shared_vocab_size
from prt_mlx.twin import TwinReward
from prtcore.config import RewardConfig
from prtcore.errors import ConfigError

from .mlx_model import embed_forward, image_features_of


def _check(config: RewardConfig, source) -> None:
    if config.kind != "twin" or config.fine_tune_type != "lora" or config.init != "copy":
        raise ConfigError("Eagle2 bases take twin rewards with LoRA and init 'copy' (got kind="
                          f"{config.kind!r}, fine_tune_type={config.fine_tune_type!r}, init={config.init!r})")
    if source.adapter_layers:
        raise ConfigError(f"{source.path}: the base already carries a LoRA twin; load it again for another one")


class Eagle2MLXReward(TwinReward):
    """A LoRA twin of an Eagle2 base; `forward(..., images=[Images or None per row])` as the base's."""

    @property
    def vision(self):
        return self.source.vision

    @classmethod
    def for_source(cls, backend, config: RewardConfig, source, *, seed: int = 0) -> "Eagle2MLXReward":
        _check(config, source)
        return cls.create(backend, config, source, seed=seed, shared_vocab=shared_vocab_size(source.tokenizer))

    @classmethod
    def from_artifact(cls, backend, artifact, source) -> "Eagle2MLXReward":
        _check(artifact.config, source)
        return cls.from_adapter(backend, artifact.config, artifact.path, source, shared_vocab=artifact.vocab_size)

    def forward(self, ids, cache=None, *, source_hidden=None, images=None):
        features = image_features_of(images, self.vision)
        if features is None:
            return super().forward(ids, cache, source_hidden=source_hidden)
        return embed_forward(self.module, as_ids(ids), cache, features, self.vision.image_token_id)[0]
