"""The optional part of the Backend interface: capabilities, and the optional methods some of them promise.

A backend lists what it can do in `Backend.capabilities` (a frozenset of the names in CAPABILITIES, or names of its
own). Callers ask `backend.supports("train_sft")` (or `"train_sft" in backend.capabilities`), never `hasattr` or the
backend's name. Every optional method is declared on the interface with its contract and a default that raises
BackendError naming the backend and the capability; `Backend` (prtcore.model) inherits the ones below from
`OptionalMethods`. A backend class that lists a capability in METHODS must override its method: checked when the
class is defined, so `capabilities` and the methods cannot disagree.
"""

from __future__ import annotations

from typing import Any

from .errors import BackendError

# name -> what it means (docs/writing-a-backend.md has the table with the conformance checks each gates)
CAPABILITIES: dict[str, str] = {
    "load": "load_base reads checkpoints",
    "generate": "prtcore's decoding loop runs on its arrays",
    "train": "Backend.train trains a reward with its source frozen (prtcore.training.train_reward)",
    "train_sft": "Backend.train_sft fine-tunes a base itself (prtcore.training.train_sft, prt train --method sft)",
    "lora": "LoRA twins: create_reward / load_reward with fine_tune_type='lora'",
    "batched": "forward passes take attention_mask and position_ids (left-padded batches)",
    "quantize": "load_base(path, quantize=4 or 8)",
    "bench": "Backend.benchmark measures the backend (prt bench)",
    "count_parameters": "Backend.count_parameters sizes a reward without loading weights (prt train --dry-run)",
    "reward_gradients": "Backend.reward_gradients gives the gradients training computes (conformance suite)",
    "reward_from_adapter": "Backend.reward_from_adapter makes a LoRA twin of an adapter directory",
    "rotating_cache": "Backend.use_rotating_cache bounds the KV caches of a model (prt generate --max-kv-size)",
}

# capability -> the optional method it promises
METHODS: dict[str, str] = {
    "train": "train",
    "train_sft": "train_sft",
    "bench": "benchmark",
    "count_parameters": "count_parameters",
    "reward_gradients": "reward_gradients",
    "reward_from_adapter": "reward_from_adapter",
    "rotating_cache": "use_rotating_cache",
}


def optional(capability: str):
    """Marks a method as the interface's default for `capability` (what a backend with the capability overrides)."""
    def mark(function):
        function.__prt_capability__ = capability
        return function

    return mark


def is_default(method) -> bool:
    """True for the interface's own default of an optional method (a backend did not override it)."""
    return getattr(method, "__prt_capability__", None) is not None


def missing_methods(cls) -> list[str]:
    """"capability (method)" for every capability `cls` lists whose method it leaves at the interface's default."""
    out = []
    for capability in sorted(set(getattr(cls, "capabilities", ())) & set(METHODS)):
        method = getattr(cls, METHODS[capability], None)
        if method is None or is_default(method):
            out.append(f"{capability} ({METHODS[capability]})")
    return out


class OptionalMethods:
    """The capabilities of a backend and the optional methods it may implement (mixed into prtcore.model.Backend)."""

    name: str
    capabilities: frozenset[str] = frozenset()
    model_types: frozenset[str] | None = None  # the config model_types it loads; None: any (the suite skips others)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        missing = missing_methods(cls)
        if missing:
            raise TypeError(f"backend class {cls.__module__}.{cls.__qualname__} lists capabilities it does not "
                            f"implement: {', '.join(missing)} (prtcore.capabilities)")

    def supports(self, capability: str) -> bool:
        """Whether this backend has `capability` (a name of prtcore.capabilities.CAPABILITIES, or its own)."""
        return capability in self.capabilities

    def require(self, capability: str, doing: str | None = None) -> None:
        """BackendError naming this backend and `capability` unless it has it (`doing`: what needed it)."""
        if capability not in self.capabilities:
            raise BackendError(_lacks(self, capability, doing))

    # ---------------------------------------------------------------------------------------- optional methods
    @optional("train_sft")
    def train_sft(self, model_path, data: dict, config, output_dir, *, lora=None, iters: int, resume: bool = False,
                  reporter=None, **options) -> dict:
        """Fine-tune the base at `model_path` itself on `data` (prtcore.data splits): LoRA when `lora` (a
        LoRAConfig) is given, else every weight (capability "train_sft"; prtcore.training.train_sft calls it).

        Writes into `output_dir` the result (an adapter directory, or a complete checkpoint for a full fine-tune),
        `best/` and `checkpoint/` (what `resume=True` needs), as `train` does; `options` are load options. Returns
        the run summary. The result is what `load_base` (an adapter directory with option `adapter_base`) and the
        EFT / proxy-tuning baselines read.
        """
        raise BackendError(_lacks(self, "train_sft", "fine-tune a base model"))

    @optional("count_parameters")
    def count_parameters(self, source_path, reward_config, **options) -> dict:
        """{"trainable", "total", "artifact_bytes"} of a reward of `reward_config` on the base at `source_path`,
        without loading its weights (capability "count_parameters"; `prt train --dry-run`). `total` counts every
        parameter training holds: the frozen source plus the reward."""
        raise BackendError(_lacks(self, "count_parameters", "count a reward's parameters"))

    @optional("reward_gradients")
    def reward_gradients(self, reward, source, ids, mask, *, lam: float, entropy_coeff: float) -> dict:
        """{tensor name: gradient as a NumPy array} of `prtcore.prt_loss` for `reward` on `source` (capability
        "reward_gradients"; the contract, and the conformance checks that use it: prtcore.testing.gradients).
        May raise NotImplementedError("why") for reward kinds it does not cover."""
        raise BackendError(_lacks(self, "reward_gradients", "give reward gradients"))

    @optional("reward_from_adapter")
    def reward_from_adapter(self, adapter_dir, source, *, lam: float = 1.0, entropy_coeff: float = 0.0) -> Any:
        """A LoRA twin (a RewardModel) of the adapter directory `adapter_dir` (mlx-lm's or PEFT's layout) on base
        `source`; `.save()` it to get a portable reward artifact (capability "reward_from_adapter")."""
        raise BackendError(_lacks(self, "reward_from_adapter", "make a reward of a LoRA adapter"))

    @optional("rotating_cache")
    def use_rotating_cache(self, model, size: int) -> None:
        """Give every model of `model` (a PRTForCausalLM or ComposedLM of this backend) that keeps a KV cache of
        token ids a rotating cache of `size` tokens, so that long generations use bounded memory (capability
        "rotating_cache"; `prt generate` / `prt chat --max-kv-size`)."""
        raise BackendError(_lacks(self, "rotating_cache", "bound its KV caches"))


def _lacks(backend, capability: str, doing: str | None = None) -> str:
    what = f" cannot {doing}:" if doing else ""
    return (f"backend {backend.name!r}{what} it lacks capability {capability!r} "
            f"({CAPABILITIES.get(capability, 'see prtcore.capabilities')})")
