"""Configuration as attrs classes, validated at construction.

A bad value raises ConfigError naming the class, the field, the value and the rule.
Defaults follow the paper and the seed scripts: λ = 1.0, no entropy term (the paper's main results; 0.05, the seed
scripts' value, broke the demo's transfer: docs/method.md), LoRA rank 8 (scale 20) on the last 8 layers, transformer
reward d_model 512 / 2 layers / 8 heads / ffn 2048.
"""

from __future__ import annotations

from typing import Any

import attrs

from .errors import ConfigError


def __getattr__(name):
    if name == "REWARD_KINDS":  # the names of the registered reward kinds (prtcore.plugins.reward_kinds), live
        from .plugins import reward_kinds

        return tuple(reward_kinds())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _rule(predicate, rule: str):
    def check(instance, attribute, value):
        if not predicate(value):
            raise ConfigError(f"{type(instance).__name__}.{attribute.name}={value!r}: must be {rule}")

    return check


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


FLOAT32_MAX = 3.4028234663852886e38  # settings reach the frameworks as float32
SEED_MAX = 2**32 - 1  # numpy seeds take 0 <= seed < 2**32; torch and mlx take at least that range
SEED_RULE = f"an integer from 0 to 2**32 - 1 ({SEED_MAX})"
# λ divides the reward's logits and the entropy coefficient multiplies its entropy, both in float32: far outside
# what anyone uses (λ 1e-3..1e3, coefficients 0..10), the composition overflows or the reward vanishes.
LAM_MIN, LAM_MAX = 1e-6, 1e6
LAM_RULE = f"> 0, from {LAM_MIN:g} to {LAM_MAX:g} (the reward is divided by λ in float32)"
ENTROPY_COEFF_MAX = 1e6


def _is_number(v):
    """An int or float that fits float32 (finite; an int too large for a float is refused, not an OverflowError)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= FLOAT32_MAX


def is_seed(v) -> bool:
    return _is_int(v) and 0 <= v <= SEED_MAX


def is_lam(v) -> bool:
    return _is_number(v) and LAM_MIN <= v <= LAM_MAX


positive_int = _rule(lambda v: _is_int(v) and v > 0, "an integer > 0")
non_negative_int = _rule(lambda v: _is_int(v) and v >= 0, "an integer >= 0")
positive_float = _rule(lambda v: _is_number(v) and v > 0, f"a number > 0 and at most {FLOAT32_MAX:.3g} (float32)")
non_negative_float = _rule(lambda v: _is_number(v) and v >= 0, f"a number >= 0 and at most {FLOAT32_MAX:.3g} (float32)")
seed_int = _rule(is_seed, SEED_RULE)
probability = _rule(lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")
boolean = _rule(lambda v: isinstance(v, bool), "true or false")


def one_of(*choices):
    return _rule(lambda v: v in choices, f"one of {', '.join(map(repr, choices))}")


def registered_kind(instance, attribute, value):
    """A reward kind registered through the hook register_reward_kinds (prtcore.kinds)."""
    from .plugins import reward_kinds

    names = tuple(reward_kinds())
    if not (isinstance(value, str) and value in names):
        raise ConfigError(f"{type(instance).__name__}.{attribute.name}={value!r}: must be one of "
                          f"{', '.join(map(repr, names))} (the registered reward kinds)")


@attrs.frozen(kw_only=True)
class LoRAConfig:
    """LoRA on the last `num_layers` blocks (-1: all). `keys` None means every linear of the block.

    `scale` multiplies the low-rank update as in mlx-lm; in PEFT's terms lora_alpha = scale × rank.
    """

    rank: int = attrs.field(default=8, validator=positive_int)
    scale: float = attrs.field(default=20.0, validator=positive_float)
    dropout: float = attrs.field(default=0.0, validator=probability)
    num_layers: int = attrs.field(default=8, validator=_rule(lambda v: _is_int(v) and (v > 0 or v == -1), "an integer > 0, or -1 for all layers"))
    keys: tuple[str, ...] | None = attrs.field(
        default=None, converter=lambda v: tuple(v) if isinstance(v, (list, tuple)) else v,
        validator=_rule(lambda v: v is None or (isinstance(v, tuple) and all(isinstance(k, str) and k for k in v)),
                        "None or a list of module names (a bare string is not a list)"))


def _lora_from_dict(data: dict) -> LoRAConfig:
    known = {f.name for f in attrs.fields(LoRAConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"RewardConfig.lora: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return LoRAConfig(**data)


@attrs.frozen(kw_only=True)
class RewardConfig:
    """The reward model: its kind and the settings of that kind.

    `kind` is a registered reward kind (prtcore.kinds; plugins add others). The built-in ones:
    - linear: Linear(source hidden → V), zero-initialised;
    - transformer: proj_in → `num_layers` causal blocks (RMSNorm, ALiBi attention, SwiGLU) → RMSNorm → Linear;
    - twin: the source's architecture, `fine_tune_type` "lora" or "full". `init` "copy" starts from a copy of
      the source including its head (as in the paper: step 0 is the source distribution at temperature 0.5);
      "zero_head" also trains a zero-initialised output layer so that step 0 is the source distribution itself.
    A kind uses the fields it names (RewardKind.fields) and checks them with its own rule (RewardKind.validate).
    """

    kind: str = attrs.field(default="linear", validator=registered_kind)
    lam: float = attrs.field(default=1.0, validator=_rule(is_lam, f"a number {LAM_RULE}"))
    entropy_coeff: float = attrs.field(default=0.0, validator=_rule(
        lambda v: _is_number(v) and 0 <= v <= ENTROPY_COEFF_MAX,
        f"a number from 0 to {ENTROPY_COEFF_MAX:g} (it multiplies the reward's entropy in float32)"))
    # transformer
    d_model: int = attrs.field(default=512, validator=positive_int)
    num_layers: int = attrs.field(default=2, validator=positive_int)
    num_heads: int = attrs.field(default=8, validator=positive_int)
    ffn_dim: int = attrs.field(default=2048, validator=positive_int)
    norm_eps: float = attrs.field(default=1e-5, validator=positive_float)
    # twin
    fine_tune_type: str = attrs.field(default="lora", validator=one_of("lora", "full"))
    lora: LoRAConfig = attrs.field(factory=LoRAConfig, converter=lambda v: _lora_from_dict(v) if isinstance(v, dict) else v,
                                   validator=_rule(lambda v: isinstance(v, LoRAConfig), "a LoRAConfig or a dict of its fields"))
    init: str = attrs.field(default="copy", validator=one_of("copy", "zero_head"))

    def __attrs_post_init__(self):
        kind = self.reward_kind
        if kind.validate is not None:
            kind.validate(self)

    @property
    def reward_kind(self):
        """The registered prtcore.kinds.RewardKind of `kind`."""
        from .plugins import reward_kind

        return reward_kind(self.kind)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        """Only the settings that matter for this kind (what the artifact records)."""
        return {"kind": self.kind, "lam": self.lam, "entropy_coeff": self.entropy_coeff, **self.reward_kind.settings(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "reward config") -> "RewardConfig":
        known = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**data)


@attrs.frozen(kw_only=True)
class TrainingConfig:
    """Settings of a training run (both backends read the same fields)."""

    learning_rate: float = attrs.field(default=1e-4, validator=positive_float)
    iters: int | None = attrs.field(default=None, validator=attrs.validators.optional(positive_int))
    epochs: int | None = attrs.field(default=None, validator=attrs.validators.optional(positive_int))
    batch_size: int = attrs.field(default=4, validator=positive_int)
    max_seq_length: int = attrs.field(default=2048, validator=positive_int)
    grad_accumulation_steps: int = attrs.field(default=1, validator=positive_int)
    grad_checkpoint: bool = attrs.field(default=False, validator=boolean)
    mask_prompt: bool = attrs.field(default=False, validator=boolean)
    optimizer: str = attrs.field(default="adam", validator=one_of("adam", "adamw"))
    weight_decay: float = attrs.field(default=0.0, validator=non_negative_float)
    lr_schedule: str = attrs.field(default="constant", validator=one_of("constant", "cosine", "linear"))
    warmup_steps: int = attrs.field(default=0, validator=non_negative_int)
    steps_per_report: int = attrs.field(default=10, validator=positive_int)
    steps_per_eval: int = attrs.field(default=200, validator=positive_int)
    val_batches: int = attrs.field(default=25, validator=_rule(lambda v: _is_int(v) and (v > 0 or v == -1), "an integer > 0, or -1 for the whole set"))
    save_every: int = attrs.field(default=100, validator=positive_int)
    seed: int = attrs.field(default=0, validator=seed_int)

    def __attrs_post_init__(self):
        if self.iters is not None and self.epochs is not None:
            raise ConfigError(f"TrainingConfig: give iters={self.iters} or epochs={self.epochs}, not both")
