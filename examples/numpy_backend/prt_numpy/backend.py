"""`NumpyBackend`: the Backend, BaseLM and RewardModel interfaces of prtcore, implemented in NumPy.

Arrays are NumPy arrays, so the namespace is prtcore's own reference namespace (`prtcore.arrays.NUMPY`).

Rewards: every reward kind stored as tensors (linear, transformer, or a plugin's; prtcore.kinds) is computed by the
kind's own NumPy reference forward (`RewardKind.reference`), so this backend runs any such kind a plugin adds; the
twin (stored as a model) through the implementation the plugin declares when it registers the backend (TWIN,
fully fine-tuned twins only).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prtcore import artifacts
from prtcore.arrays import NUMPY
from prtcore.config import RewardConfig
from prtcore.errors import BackendError, ConfigError, ModelLoadError
from prtcore.model import Backend, BaseLM, ForwardOutput, RewardModel
from prtcore.plugins import reward_implementation
from prtcore.rewards import check_reward_tensors, reward_tensor_shapes
from prtcore.sampling import align_vocab, tokenizer_vocab

from .llama import MODEL_TYPES, Llama, read_weights

LOAD_OPTIONS = ("dtype",)


# ------------------------------------------------------------------------------------------------ tokenizer
class Tokenizer:
    """The Hugging Face-style surface prtcore uses, over a `tokenizers` tokenizer.json."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        if not (path / "tokenizer.json").is_file():
            raise ModelLoadError(f"{path}: no tokenizer.json")
        self._tok = HFTokenizer.from_file(str(path / "tokenizer.json"))
        config_file = path / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        self.chat_template = config.get("chat_template")
        if self.chat_template is None and (path / "chat_template.jinja").is_file():
            self.chat_template = (path / "chat_template.jinja").read_text(encoding="utf-8")
        self.eos_token_id = self._id(config.get("eos_token"))
        self.pad_token_id = self._id(config.get("pad_token"))

    def _id(self, token):
        if isinstance(token, dict):
            token = token.get("content")
        return None if token is None else self._tok.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def get_vocab(self) -> dict[str, int]:
        return self._tok.get_vocab(with_added_tokens=True)

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)


# ------------------------------------------------------------------------------------------------ base
class NumpyBaseLM(BaseLM):
    def __init__(self, backend, model: Llama, tokenizer, path: Path | None):
        self.backend, self.model, self.tokenizer, self.path = backend, model, tokenizer, path
        self.config = model.config

    @property
    def vocab_size(self) -> int:
        return self.model.vocab_size

    @property
    def hidden_size(self) -> int:
        return self.model.hidden_size

    def forward(self, ids, cache=None, *, hidden: bool = False) -> ForwardOutput:
        logits, h = self.model.forward(ids, cache)
        return ForwardOutput(logits.astype(np.float32), h.astype(np.float32) if hidden else None)

    def make_cache(self):
        return self.model.make_cache()


# ------------------------------------------------------------------------------------------------ rewards
class TensorReward(RewardModel):
    """A reward of a kind stored as tensors over the source's hidden states, computed by the kind's NumPy reference.

    The reference reads a whole sequence, so the cache keeps the hidden states seen so far and each call computes
    the reward over all of them (ALiBi and every other position-dependent part see absolute positions)."""

    def __init__(self, backend, config: RewardConfig, tensors: dict[str, np.ndarray]):
        self.backend, self.config = backend, config
        self.tensors = {k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()}
        self.reference = config.reward_kind.reference

    @classmethod
    def create(cls, backend, config: RewardConfig, source, seed: int = 0) -> "TensorReward":
        """A new reward: `head.weight` zero (a neutral start), norms one, other weights N(0, 0.02²)."""
        rng = np.random.default_rng(seed)
        tensors = {}
        for name, shape in reward_tensor_shapes(config, source.hidden_size, source.vocab_size).items():
            if name == "head.weight":
                tensors[name] = np.zeros(shape, dtype=np.float32)
            elif "norm" in name:
                tensors[name] = np.ones(shape, dtype=np.float32)
            else:
                tensors[name] = (0.02 * rng.standard_normal(shape)).astype(np.float32)
        return cls(backend, config, tensors)

    @property
    def vocab_size(self) -> int:
        return int(self.tensors["head.weight"].shape[0])

    def make_cache(self):
        return {"hidden": None}

    def forward(self, ids, cache=None, *, source_hidden=None):
        if source_hidden is None:
            raise ConfigError(f"a {self.config.kind!r} reward needs the source's hidden states (source_hidden)")
        x = np.asarray(source_hidden, dtype=np.float64)
        T = x.shape[1]
        if cache is not None:
            if cache["hidden"] is not None:
                x = np.concatenate([cache["hidden"], x], axis=1)
            cache["hidden"] = x
        return np.asarray(self.reference(self.tensors, x, self.config), dtype=np.float32)[:, -T:]

    def parameter_count(self) -> tuple[int, int]:
        n = sum(v.size for v in self.tensors.values())
        return n, n

    def save(self, path, *, source, vocab_size: int, extra: dict | None = None) -> Path:
        with artifacts.ArtifactWriter(path) as writer:
            artifacts.save_numpy_tensors(writer.dir / artifacts.REWARD_WEIGHTS, self.tensors, metadata={"format": "pt"})
            if source.path is not None:
                writer.copy_tokenizer(source.path)
            return writer.commit(artifacts.reward_meta(
                self.config, source=source, tokenizer=source.tokenizer, vocab_size=vocab_size,
                output_size=self.vocab_size, weights=[artifacts.REWARD_WEIGHTS], backend="numpy", extra=extra))


class FullTwin(RewardModel):
    """A fully fine-tuned twin: a model of the source's architecture, stored as a checkpoint."""

    def __init__(self, backend, config: RewardConfig, model: Llama, weights: dict[str, np.ndarray]):
        self.backend, self.config, self.model, self.weights = backend, config, model, weights

    @property
    def vocab_size(self) -> int:
        return self.model.vocab_size

    def forward(self, ids, cache=None, *, source_hidden=None):
        return self.model.forward(ids, cache)[0].astype(np.float32)

    def make_cache(self):
        return self.model.make_cache()

    def parameter_count(self) -> tuple[int, int]:
        n = sum(v.size for v in self.weights.values())
        return n, n

    def save(self, path, *, source, vocab_size: int, extra: dict | None = None) -> Path:
        with artifacts.ArtifactWriter(path) as writer:
            tensors = {k: np.asarray(v, dtype=np.float32) for k, v in self.weights.items()}
            artifacts.save_numpy_tensors(writer.dir / "model.safetensors", tensors, metadata={"format": "pt"})
            artifacts.write_json_atomic(writer.dir / "config.json", self.model.config)
            if source.path is not None:
                writer.copy_tokenizer(source.path)
            return writer.commit(artifacts.reward_meta(
                self.config, source=source, tokenizer=source.tokenizer, vocab_size=vocab_size,
                output_size=self.vocab_size, weights=["model.safetensors"], backend="numpy", extra=extra))


class TwinImplementation:
    """The numpy implementation of the twin kind (declared in prt_numpy.plugin): fully fine-tuned twins only."""

    def create(self, backend, config: RewardConfig, source: NumpyBaseLM, *, seed: int = 0) -> FullTwin:
        if config.fine_tune_type != "full":
            raise BackendError("backend 'numpy' has no LoRA (capability 'lora'); use fine_tune_type='full'")
        weights = {k: v.copy() for k, v in read_weights(source.path).items()}
        return FullTwin(backend, config, Llama(source.config, weights, str(source.path)), weights)

    def load(self, backend, artifact, source: NumpyBaseLM | None) -> FullTwin:
        if artifact.config.fine_tune_type != "full":
            raise BackendError(f"{artifact.path}: backend 'numpy' cannot load LoRA twins (capability 'lora')")
        return FullTwin(backend, artifact.config, Llama.load(artifact.path), read_weights(artifact.path))


TWIN = TwinImplementation()
HeadReward = TensorReward  # the name of earlier releases


# ------------------------------------------------------------------------------------------------ backend
class NumpyBackend(Backend):
    name = "numpy"
    xp = NUMPY
    capabilities = frozenset({"load", "generate", "reward_gradients"})
    model_types = MODEL_TYPES  # the config model_types it loads: the conformance suite skips other families for it

    def load_base(self, path, **options) -> NumpyBaseLM:
        """Options: `dtype` ("float32" only: the model computes in float64 and returns float32)."""
        unknown = sorted(set(options) - set(LOAD_OPTIONS))
        if unknown:
            raise ConfigError(f"load option {unknown[0]!r} is not known to backend 'numpy' (known: {', '.join(LOAD_OPTIONS)})")
        if options.get("dtype") not in (None, "float32"):
            raise ConfigError(f"dtype={options['dtype']!r}: backend 'numpy' computes in float32/float64 only")
        path = Path(path).resolve()
        if not path.is_dir():
            raise ModelLoadError(f"{path}: model directory not found")
        return NumpyBaseLM(self, Llama.load(path), self.load_tokenizer(path), path)

    def load_tokenizer(self, path):
        return Tokenizer(path)

    def asarray(self, ids):
        return np.asarray(ids, dtype=np.int64)

    def create_reward(self, config: RewardConfig, source: NumpyBaseLM, *, seed: int = 0) -> RewardModel:
        if config.reward_kind.stored_as == "tensors":  # any such kind, through its NumPy reference
            return TensorReward.create(self, config, source, seed)
        return reward_implementation(config.kind, "numpy").create(self, config, source, seed=seed)

    def load_reward(self, artifact, source: NumpyBaseLM | None) -> RewardModel:
        config = artifact.config
        if config.reward_kind.stored_as != "tensors":
            return reward_implementation(config.kind, "numpy").load(self, artifact, source)
        if source is None:
            raise ConfigError(f"{artifact.path}: a {config.kind!r} reward needs its source model")
        tensors = artifact.tensors()
        rows = int(tensors["head.weight"].shape[0]) if "head.weight" in tensors else source.vocab_size
        check_reward_tensors(tensors, config, source.hidden_size, rows, str(artifact.path))
        return TensorReward(self, config, tensors)

    # ------------------------------------------------------------------------------------------ "reward_gradients"
    def reward_gradients(self, reward, source, ids, mask, *, lam, entropy_coeff) -> dict[str, np.ndarray]:
        """∂ PRT loss / ∂ head.weight of a linear reward, in closed form (prtcore.testing.gradients' contract)."""
        if reward.config.kind != "linear":  # the closed form is that of the linear kind's computation
            raise NotImplementedError("the numpy example backend differentiates linear rewards only")
        ids = np.asarray(ids, dtype=np.int64)
        weights = np.asarray(mask, dtype=np.float64)[:, 1:]
        vocab = len(tokenizer_vocab(source.tokenizer))
        out = source.forward(ids[:, :-1], hidden=True)
        hidden = out.hidden.astype(np.float64)
        base = align_vocab(out.logits.astype(np.float64), vocab)
        head = reward.tensors["head.weight"].astype(np.float64)
        r = hidden @ head[:vocab].T

        def log_softmax(x):
            m = x.max(-1, keepdims=True)
            return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))

        p = np.exp(log_softmax(log_softmax(base) + r / lam))
        p[np.arange(p.shape[0])[:, None], np.arange(p.shape[1])[None, :], ids[:, 1:]] -= 1.0
        logq = log_softmax(r)
        q = np.exp(logq)
        entropy = -(q * logq).sum(-1, keepdims=True)
        g = (p / lam + entropy_coeff * q * (logq + entropy)) * (weights / max(weights.sum(), 1.0))[..., None]
        grad = np.zeros_like(head)
        grad[:vocab] = np.einsum("btv,bth->vh", g, hidden)
        return {"head.weight": grad}


__all__ = ["NumpyBackend", "NumpyBaseLM", "TensorReward", "HeadReward", "FullTwin", "TWIN", "Tokenizer"]
