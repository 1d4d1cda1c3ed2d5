"""What a benchmark measures (`Backend.benchmark`, `prt bench`): model shapes and run settings (attrs classes,
validated), and the reward configuration a run implies. The presets are the application's (prtcore.apps.bench)."""

from __future__ import annotations

import attrs

from ..config import LoRAConfig, RewardConfig
from ..errors import ConfigError


def _positive(instance, attribute, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{type(instance).__name__}.{attribute.name}={value!r}: must be an integer > 0")


@attrs.frozen(kw_only=True)
class ModelShape:
    """A llama-shaped decoder: width, depth, MLP width, attention heads and key/value heads (grouped queries)."""

    hidden: int = attrs.field(validator=_positive)
    layers: int = attrs.field(validator=_positive)
    ffn: int = attrs.field(validator=_positive)
    heads: int = attrs.field(validator=_positive)
    kv_heads: int = attrs.field(validator=_positive)

    def __attrs_post_init__(self):
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ConfigError(f"{self}: hidden must be divisible by heads, and heads by kv_heads")

    @classmethod
    def of(cls, hidden: int, layers: int, ffn: int | None = None, heads: int | None = None,
           kv_heads: int | None = None) -> "ModelShape":
        """Llama proportions where not given: MLP 2.75× wide (a multiple of 64), 64-wide heads, 4 queries per kv head."""
        heads = heads or max(1, hidden // 64)
        return cls(hidden=hidden, layers=layers, ffn=ffn or max(64, round(hidden * 2.75 / 64) * 64), heads=heads,
                   kv_heads=kv_heads or max(1, heads // 4))

    def parameters(self, vocab: int) -> int:
        """Parameters with untied input and output embeddings."""
        head_dim = self.hidden // self.heads
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * head_dim
        block = attn + 3 * self.hidden * self.ffn + 2 * self.hidden
        return self.layers * block + 2 * vocab * self.hidden + self.hidden

    def decode_flops(self, vocab: int) -> int:
        """Multiply-adds ×2 of one decoded token (weights only: the output layer counts, the embedding does not)."""
        return 2 * (self.parameters(vocab) - vocab * self.hidden)

    def overrides(self) -> dict:
        """Fields for prtcore.testing.checkpoints.tiny_config."""
        return {"hidden_size": self.hidden, "num_hidden_layers": self.layers, "intermediate_size": self.ffn,
                "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads,
                "head_dim": self.hidden // self.heads}

    def describe(self, vocab: int) -> str:
        return (f"{self.parameters(vocab) / 1e6:.1f}M params (d={self.hidden}, L={self.layers}, ffn={self.ffn}, "
                f"heads={self.heads}/{self.kv_heads})")


GEN_PATHS = ("target", "reward", "prt", "eft")
REWARD_KINDS = ("linear", "transformer", "twin")


@attrs.frozen(kw_only=True)
class BenchConfig:
    """One `prt bench` run. `source` is the model the reward was trained on (and EFT's two small models)."""

    target: ModelShape
    source: ModelShape
    vocab: int = attrs.field(default=32000, validator=_positive)
    prompt_tokens: int = attrs.field(default=32, validator=_positive)
    max_tokens: int = attrs.field(default=48, validator=_positive)
    repeats: int = attrs.field(default=3, validator=_positive)
    gen_reward: str = attrs.field(default="twin", validator=attrs.validators.in_(REWARD_KINDS))
    train_rewards: tuple[str, ...] = attrs.field(default=REWARD_KINDS, converter=tuple)
    train_batch: int = attrs.field(default=4, validator=_positive)
    train_seq: int = attrs.field(default=128, validator=_positive)
    train_steps: int = attrs.field(default=3, validator=_positive)
    train_repeats: int = attrs.field(default=3, validator=_positive)
    lora_layers: int = attrs.field(default=8, validator=_positive)
    paths: tuple[str, ...] | None = attrs.field(default=None, converter=lambda v: None if v is None else tuple(v))
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    reward_d_model: int = attrs.field(default=512, validator=_positive)
    device: str | None = None
    dtype: str | None = None
    generation: bool = True
    training: bool = True
    seed: int = 0

    def __attrs_post_init__(self):
        bad = [k for k in self.train_rewards if k not in REWARD_KINDS]
        if bad:
            raise ConfigError(f"reward kind {bad[0]!r}: must be one of {', '.join(REWARD_KINDS)}")


def reward_config(config: BenchConfig, kind: str) -> RewardConfig:
    """The reward of `kind` every backend builds for `config`: LoRA on its last `lora_layers` blocks (twin), a head
    of width `reward_d_model` (transformer)."""
    d = config.reward_d_model
    return RewardConfig(kind=kind, lora=LoRAConfig(num_layers=config.lora_layers), d_model=d,
                        num_heads=max(1, d // 64) if d >= 64 else 4, ffn_dim=4 * d)
