"""Twin rewards of an Eagle2 base on torch: LoRA on the Qwen2 language model (q/k/v/o, gate/up/down), the
source's vision tower shared, so `Images` computes an image's features once for base and reward."""

from __future__ import annotations

import torch

from prt_torch import rewards
from prt_torch.base import cache_keyword, forward_kwargs
from prtcore.config import RewardConfig
from prtcore.errors import ConfigError

from .torch_model import merge_image_features


class Eagle2TorchReward(rewards.TorchRewardModel):
    """A LoRA twin of an Eagle2 base; `forward(..., images=[Images or None per row])` as the base's."""

    @property
    def vision(self):
        return self.source.vision

    def forward(self, ids, cache=None, *, source_hidden=None, attention_mask=None, position_ids=None, module=None,
                images=None):
        rows = [] if images is None else [x for x in images if x is not None]
        if not rows:
            return super().forward(ids, cache, source_hidden=source_hidden, attention_mask=attention_mask,
                                   position_ids=position_ids, module=module)
        grad = torch.is_grad_enabled() and cache is None and (self.trainable or module is not None)
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        with torch.set_grad_enabled(grad):
            features = torch.cat([x.features(self.vision) for x in rows])
            embeds = self.hf_model.get_input_embeddings()(ids)
            kwargs = forward_kwargs(cache_keyword(self.hf_model), self.device, cache, attention_mask, position_ids,
                                    inputs_embeds=merge_image_features(embeds, ids, features,
                                                                       self.vision.image_token_id))
            net = module if module is not None else self.hf_model
            with self.active():
                return net(**kwargs).logits.float()


def _check(config: RewardConfig) -> None:
    if config.kind != "twin" or config.fine_tune_type != "lora" or config.init != "copy":
        raise ConfigError("Eagle2 bases take twin rewards with LoRA and init 'copy' (got kind="
                          f"{config.kind!r}, fine_tune_type={config.fine_tune_type!r}, init={config.init!r})")


def _wrap(reward: rewards.TorchRewardModel) -> Eagle2TorchReward:
    return Eagle2TorchReward(reward.config, reward.backend, reward.module, source=reward.source,
                             adapter=reward.adapter, trainable=reward.trainable)


def create_reward(backend, config: RewardConfig, source, seed: int = 0) -> Eagle2TorchReward:
    """A new LoRA twin on `source` (an Eagle2TorchLM): adapters on its language model's decoder blocks."""
    _check(config)
    return _wrap(rewards.create_reward(backend, config, source, seed))


def load_reward(backend, artifact, source) -> Eagle2TorchReward:
    _check(artifact.config)
    return _wrap(rewards.load_reward(backend, artifact, source))
