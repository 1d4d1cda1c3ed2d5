"""What `prt bench` measures: model shapes, presets and run settings (attrs classes, validated)."""

from __future__ import annotations

import attrs

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


PRESETS = {
    # default on CPU: a ~250M-parameter target, a source with a quarter of its compute per token
    "cpu": dict(target=ModelShape.of(1024, 16), source=ModelShape.of(512, 12), vocab=32000, prompt_tokens=16,
                max_tokens=12, repeats=5, train_batch=2, train_seq=64, train_steps=1, train_repeats=3),
    # runs in seconds (tests)
    "small": dict(target=ModelShape.of(128, 2, heads=4, kv_heads=2), source=ModelShape.of(64, 2, heads=4, kv_heads=2),
                  vocab=512, prompt_tokens=8, max_tokens=8, repeats=1, train_batch=2, train_seq=32, train_steps=1,
                  train_repeats=1,
                  lora_layers=2, reward_d_model=32, threads=1),
    # the GPU check: a TinyLlama-1.1B-shaped target and a ~0.25B source, bfloat16; sized to run in about 3 minutes
    "tinyllama": dict(target=ModelShape(hidden=2048, layers=22, ffn=5632, heads=32, kv_heads=4),
                      source=ModelShape(hidden=1024, layers=16, ffn=2816, heads=16, kv_heads=4), vocab=32000,
                      prompt_tokens=32, max_tokens=64, repeats=2, train_batch=4, train_seq=256, train_steps=3,
                      train_repeats=2,
                      dtype="bfloat16",
                      paths=("target.native", "reward.native", "target.static", "reward.static", "prt.loop",
                             "prt.pipelined", "prt.static", "eft.loop", "eft.static")),
}


def preset(name: str, **changes) -> BenchConfig:
    if name not in PRESETS:
        raise ConfigError(f"bench preset {name!r}: must be one of {', '.join(PRESETS)}")
    return BenchConfig(**{**PRESETS[name], **{k: v for k, v in changes.items() if v is not None}})
