"""Reward kinds as plugins: what a kind of reward is, described once.

A reward kind ("linear", "transformer", "twin", or a third party's) is a `RewardKind`: its name (used by the API,
`prt train --reward` and prt_config.json), a one-line description (the model card), whether it reads the source's
last hidden states, its settings (the RewardConfig fields it uses and a rule they must follow), how it is stored,
and for a kind stored as tensors their names and shapes and a NumPy reference forward, the executable specification
every backend is checked against (prtcore.testing).

Kinds register through the hook `register_reward_kinds(register)` (prtcore.hookspecs); the registry is
`prtcore.plugins.reward_kinds()`, one kind `prtcore.plugins.reward_kind(name)`. The built-in kinds are defined one per
module (prtcore.kinds.linear, .transformer, .twin) and registered by the built-in plugin prtcore.kinds.builtin
through the same hook. What depends on the kind asks it rather than its name: config validation and recording,
`prt train --reward`'s choices, the model card, `RewardModel.reads_source_hidden`, whether a reward needs its source,
the artifact's required files and tensor check, the dry-run counts, and the backends' creation and loading of rewards.

Implementations. A kind is computed by backends; who knows how is named by "module:attribute" strings, imported only
when a reward of the kind is created or loaded (so `import prtcore` imports no framework), from either side:
- the kind's author lists them in `implementations` ({backend name: "module:attribute"});
- a backend's author lists the kinds the backend implements when registering it
  (`register(name, factory, ..., reward_kinds={kind name: "module:attribute"})`, prtcore.hookspecs): that is how
  the built-in kinds get their mlx and torch implementations, and how a backend implements a third party's kind.
`prtcore.plugins.reward_implementation(kind, backend)` resolves one (the backend's own declaration first).
What the attribute is, is the backend's contract. prtcore's backends (mlx, torch) take an object with
`create(backend, config, source, *, seed=0)` and `load(backend, artifact, source)` returning a RewardModel
(`RewardImplementation`), and help with kinds stored as tensors: `prt_mlx.rewards.HeadImplementation(net)` and
`prt_torch.rewards.HeadImplementation(build)` turn a network class `(config, hidden_size, vocab_size)` whose
parameter names are the tensor names into such an object (creation, loading, saving, training, dry-run counts). The
NumPy example backend computes every kind stored as tensors through its `reference` and declares the twin's.

A kind's settings are RewardConfig's fields (d_model, num_layers, num_heads, ffn_dim, norm_eps, ...): a kind names
those it uses (`fields`, what prt_config.json records) and their rule (`validate`); it cannot add fields of its own.

A third party's kind (tests/plugins/prt_kind_example is a complete one, with mlx and torch implementations):

    MLP = RewardKind(name="mlp", description="a two-layer MLP over the frozen source model's last hidden states",
                     fields=("d_model",), validate=check,
                     tensor_shapes=shapes, reference=forward,
                     implementations={"mlx": "my_pkg.mlx_mlp:MLP", "torch": "my_pkg.torch_mlp:MLP"})

    @prtcore.hookimpl
    def register_reward_kinds(register):
        register(MLP)

and an entry point in group "prtcore" naming that module. Conventions of kinds stored as tensors: the output layer is
`head.weight` (V, d), zero-initialised so that a new reward is neutral; names of norm weights contain "norm" (they
start at one).

This module imports nothing of prtcore but its errors (prtcore.config asks the registry, which imports this).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Protocol

import attrs

from ..errors import BackendError, ConfigError

STORAGE = ("tensors", "model")
REWARD_WEIGHTS = "reward.safetensors"  # the tensors of a kind stored as tensors (prtcore.artifacts)


def _mapping(value) -> dict:
    return dict(value or {})


@attrs.frozen(kw_only=True, eq=False)
class RewardKind:
    """One kind of reward (see the module's documentation).

    - `name`: the kind's name in RewardConfig.kind, `prt train --reward` and prt_config.json;
    - `description`: one line completing "The reward is ..." in the model card;
    - `stored_as`: "tensors" (reward.safetensors, names and shapes from `tensor_shapes`) or "model" (a checkpoint or
      an adapter of the source's architecture, the twin);
    - `reads_source_hidden`: computed from the frozen source's last hidden states (every kind stored as tensors);
    - `fields`: the RewardConfig fields this kind uses, recorded in prt_config.json (e.g. "d_model"; a kind of a
      third party takes its settings from these fields too: d_model, num_layers, num_heads, ffn_dim, norm_eps);
    - `validate`: `validate(config)` raises prtcore.ConfigError when settings do not fit together;
    - `tensor_shapes`: `tensor_shapes(config, hidden_size, vocab_size)` → {tensor name: shape}, PyTorch's (out, in)
      layout for linear weights; None for kinds stored as a model;
    - `reference`: the NumPy forward `reference(tensors, hidden, config)` → reward logits (B, T, V) in float64 for
      source hidden states (B, T, H); None for kinds stored as a model;
    - `implementations`: {backend name: "module:attribute"} (see the module's documentation);
    - `plugin`: the plugin that registered the kind (set by the registry).
    """

    name: str = attrs.field(validator=attrs.validators.matches_re(r"^[a-z][a-z0-9_\-]*$"))
    description: str
    stored_as: str = attrs.field(default="tensors", validator=attrs.validators.in_(STORAGE))
    reads_source_hidden: bool = True
    fields: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    validate: Callable | None = None
    tensor_shapes: Callable | None = None
    reference: Callable | None = None
    implementations: Mapping[str, str] = attrs.field(factory=dict, converter=_mapping)
    plugin: str = ""

    def __attrs_post_init__(self):
        if self.stored_as == "tensors" and (self.tensor_shapes is None or not self.reads_source_hidden):
            raise ConfigError(f"reward kind {self.name!r}: a kind stored as tensors reads the source's hidden states "
                              "and gives `tensor_shapes`")

    # ------------------------------------------------------------------------------------------ settings
    def settings(self, config) -> dict[str, Any]:
        """The settings of `config` (a RewardConfig of this kind) that prt_config.json records beyond kind, λ and
        the entropy coefficient: its `fields`."""
        return {f: getattr(config, f) for f in self.fields}

    def needs_source(self, config) -> bool:
        """Whether a reward of `config` needs its source model at inference (to read its hidden states, or its
        frozen weights under an adapter)."""
        return self.reads_source_hidden

    # ------------------------------------------------------------------------------------------ artifact
    def files(self, config) -> list[tuple[str, ...]]:
        """The files an artifact of `config` must hold, whatever its field 'weights' lists (alternatives in one
        tuple)."""
        return [(REWARD_WEIGHTS,)]

    def storage(self, config) -> str:
        """What the artifact stores, for messages ("weights", "lora", "full")."""
        return "weights"

    # ------------------------------------------------------------------------------------------ model card
    def card_text(self, settings: Mapping) -> str:
        """The phrase completing "The reward is ..." for the recorded `settings` (prt_config.json's "reward")."""
        return self.description

    def card_tags(self, settings: Mapping) -> list[str]:
        """Hub tags beyond the kind's name."""
        return []

    def card_source_use(self, settings: Mapping) -> str | None:
        """What the reward needs its source for at inference (None: nothing)."""
        return "the source's last hidden states are its input" if self.reads_source_hidden else None


class RewardImplementation(Protocol):
    """What prtcore's backends (mlx, torch; the NumPy example for the twin) take as the implementation of a kind."""

    def create(self, backend, config, source, *, seed: int = 0):
        """A new, untrained reward (a prtcore.RewardModel) of `config` for base `source`."""

    def load(self, backend, artifact, source):
        """The reward of a prtcore.RewardArtifact; `source` is None for kinds that need none."""


def load_attribute(target):
    """The object "module:attribute" names (anything else is returned as is)."""
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as e:
        raise BackendError(f"cannot import {target!r} ({type(e).__name__}: {e})") from e
