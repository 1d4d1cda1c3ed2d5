"""The interfaces a backend implements (see prtcore.model for how they are used):
- `Backend`: loads base models (`BaseLM`), creates and loads rewards (`RewardModel`), converts arrays; its optional
  methods are declared here and listed in `capabilities` (prtcore.capabilities);
- `BaseLM`: a frozen causal LM with forward (logits and, on request, last hidden states), caches, tokenizer;
- `RewardModel`: reward logits for token ids (reading the source's hidden states when its kind does).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import attrs

from .artifacts import RewardArtifact
from .capabilities import OptionalMethods, optional
from .config import RewardConfig
from .tokens import eos_token_ids
from .vision import VisionEncoder

@attrs.frozen
class ForwardOutput:
    """`logits` (B, T, V); `hidden` the last hidden states (B, T, H) that feed the output layer, or None."""

    logits: Any
    hidden: Any = None


@attrs.frozen
class PRTOutput:
    """Result of calling a PRTForCausalLM on token ids, each (B, T, N) over the shared vocabulary of N tokens.

    `logprobs`: the composed, normalised distribution; `base_logprobs`: the base alone; `reward`: the sum of
    reward logits each divided by its λ (zeros when there is no reward).
    """

    logprobs: Any
    base_logprobs: Any
    reward: Any

    @property
    def logits(self):
        """`logprobs` under transformers' name: the composed model's next-token scores. They are log-probabilities
        (logits normalised by log_softmax), so argmax, softmax and cross-entropy give what they give on raw logits."""
        return self.logprobs


class BaseLM(ABC):
    """A frozen base causal LM as a backend provides it."""

    backend: "Backend"
    tokenizer: Any  # Hugging Face-style: encode, decode, get_vocab, eos_token_id, apply_chat_template
    path: Path | None
    config: dict  # the checkpoint's config.json
    vision: VisionEncoder | None = None  # set by vision-language bases

    @property
    def model_type(self) -> str:
        return self.config.get("model_type", "unknown")

    def create_reward(self, config: RewardConfig, *, seed: int = 0) -> "RewardModel | None":
        """A model family's own new reward for this base (prt_eagle2 has one), or None: the backend's
        implementation of the kind (prtcore.plugins.reward_implementation)."""
        return None

    def load_reward(self, artifact: RewardArtifact) -> "RewardModel | None":
        """A model family's own reading of a saved reward for this base, or None (as `create_reward`)."""
        return None

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Rows of the output layer (may exceed the tokenizer length)."""

    @property
    @abstractmethod
    def hidden_size(self) -> int: ...

    @abstractmethod
    def forward(self, ids, cache=None, *, hidden: bool = False) -> ForwardOutput:
        """Logits for (B, T) ids; with a cache, ids continue the cached sequence and the cache is updated."""

    @abstractmethod
    def make_cache(self):
        """A fresh KV cache for incremental decoding."""

    @property
    def eos_token_ids(self) -> list[int]:
        """Every id that ends generation (the tokenizer's eos and generation_config.json's list)."""
        return eos_token_ids(self.tokenizer, self.path, self.config)


class RewardModel(ABC):
    """A trainable reward model r_θ: token ids → reward logits (B, T, V), raw (not divided by λ)."""

    config: RewardConfig
    backend: "Backend"
    vision: VisionEncoder | None = None  # a reward of a vision-language model (shares its source's when LoRA)

    @property
    def reads_source_hidden(self) -> bool:
        """True for kinds computed from the frozen source's hidden states (linear, transformer; prtcore.kinds)."""
        return self.config.reward_kind.reads_source_hidden

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def forward(self, ids, cache=None, *, source_hidden=None):
        """Reward logits for (B, T) ids; `source_hidden` (B, T, H) is required when `reads_source_hidden`."""

    @abstractmethod
    def make_cache(self): ...

    @abstractmethod
    def save(self, path, *, source: BaseLM, vocab_size: int, extra: dict | None = None) -> Path:
        """Write the reward artifact (prtcore.artifacts) to directory `path`."""

    @abstractmethod
    def parameter_count(self) -> tuple[int, int]:
        """(trainable, total) parameters of the reward."""

    def fuse(self) -> bool:
        """For inference: fold a LoRA adapter into the weights it adapts, so the reward runs as one plain model.
        Only for weights this reward owns alone (PRTForCausalLM.from_pretrained gives a LoRA twin its own copy of
        its source). Returns whether it fused; False by default (nothing to fuse, or quantised weights)."""
        return False

    def load_trained(self, artifact: RewardArtifact) -> None:
        """Set this new, trainable reward's weights to those of saved reward `artifact`, whose configuration is
        this one's (prtcore.training.train_reward's `init_from`, mlx-lm's --resume-adapter-file)."""
        from .errors import BackendError

        raise BackendError(f"the {self.backend.name!r} backend's {type(self).__name__} cannot start from a saved "
                           "reward's weights")


class Backend(OptionalMethods, ABC):
    """One array framework's implementation of base models and rewards. Its optional methods (train, benchmark and
    prtcore.capabilities.OptionalMethods') raise BackendError unless listed in `capabilities` (`supports(name)`)."""

    name: str
    xp: Any  # prtcore.arrays.ArrayNamespace
    capabilities: frozenset[str] = frozenset()  # names of prtcore.capabilities.CAPABILITIES: "train", "lora", ...

    @abstractmethod
    def load_base(self, path, **options) -> BaseLM: ...

    @abstractmethod
    def create_reward(self, config: RewardConfig, source: BaseLM, *, seed: int = 0) -> RewardModel:
        """A new, untrained reward for `source` (zero-initialised head for linear/transformer)."""

    @abstractmethod
    def load_reward(self, artifact: RewardArtifact, source: BaseLM | None) -> RewardModel:
        """A saved reward; `source` is the base it reads hidden states from or adapts (twin LoRA)."""

    @abstractmethod
    def load_tokenizer(self, path):
        """The Hugging Face-style tokenizer saved in directory `path`."""

    @abstractmethod
    def asarray(self, ids: list[list[int]]):
        """Integer token ids as a (B, T) backend array."""

    def to_numpy(self, x):
        return self.xp.to_numpy(x)

    def prt_loss(self, base_logits, reward_logits, targets, mask=None, *, lam: float = 1.0, entropy_coeff: float = 0.0):
        """The loss this backend trains with: its implementation of prtcore.objectives.prt_loss over its arrays (a
        PRTLoss; the conformance suite checks it with prtcore.objectives.check_loss). Default: the reference on `xp`."""
        from .objectives import prt_loss

        return prt_loss(base_logits, reward_logits, targets, mask, lam=lam, entropy_coeff=entropy_coeff, xp=self.xp)

    gradient: Callable | None = None
    """Optional: `gradient(fn, x)`, the gradient of scalar-valued `fn` at array `x` (the backend's autodiff); the
    conformance suite differentiates `prt_loss` with it (None: a backend that does not differentiate)."""

    @optional("train")
    def train(self, source: BaseLM, reward: RewardModel, data: dict, config, output_dir, *, iters: int,
              resume: bool = False, reporter=None) -> dict:
        """Train `reward` on `data` (prtcore.data splits) with `source` frozen (capability "train").

        Writes into `output_dir`: the final reward artifact, `best/` (best validation loss) and `checkpoint/`
        (everything `resume=True` needs to continue exactly). With `resume`, the main process first calls
        `prtcore.checkpoints.repair_checkpoint(output_dir)` (a kill may have left a replacement half done), then every
        process waits for it. Reports through `reporter` (prtcore.reporting.TrainingReporter); returns the summary.
        """
        from .errors import BackendError

        raise BackendError(f"backend {self.name!r} cannot train")

    @optional("bench")
    def benchmark(self, config, *, workdir, log=None) -> dict:
        """Measure this backend on random models of `config`'s shapes (capability "bench"; `prt bench`).

        `config` is a prtcore.benchmarking.BenchConfig; tokenizers are cached under `workdir`; `log` takes
        progress lines. Returns {"backend": name, "generation": {"device", "dtype", "reward_kind", "paths":
        {path: side-by-side timings, tokens}, "prompt_tokens", "max_tokens", ...}, "training": {"device",
        "dtype", "memory_measure", "steps": {config: {"s_per_step", "rounds", "peak_bytes"}}}}, each part as
        `config.generation` / `config.training` ask (built from prtcore.benchmarking; see docs/performance.md).
        """
        from .errors import BackendError

        raise BackendError(f"backend {self.name!r} cannot benchmark")

    def end_thread(self) -> None:
        """Release what the calling thread holds of this backend; a thread other than the main one that computed
        with it calls this before it ends (prtcore.serve.engine's). This default holds nothing per thread."""

    def memory_meter(self, device=None):
        """A prtcore.benchmarking.PeakMeter for this backend's arrays on `device` (default: where new arrays go):
        `with backend.memory_meter() as m: ...`, then `m.bytes`. This default measures the process's peak
        resident memory; a backend with an allocator of its own (mlx, CUDA) measures that instead."""
        from .benchmarking.memory import PeakMeter

        return PeakMeter()
