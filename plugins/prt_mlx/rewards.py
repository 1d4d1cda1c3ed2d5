"""Rewards of kinds stored as tensors (`linear`, `transformer`, a plugin's; prtcore.kinds defines them, parameter paths
are the tensor names), and the mlx implementations of the built-in kinds that the backend declares when it registers
(LINEAR, TRANSFORMER, TWIN; prt_mlx.plugin). `HeadImplementation(net)` implements any kind stored as tensors from its
network class, a `RewardNet`.
"""

from __future__ import annotations

import math
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from prtcore.artifacts import REWARD_WEIGHTS, ArtifactWriter, reward_meta, save_numpy_tensors
from prtcore.config import RewardConfig
from prtcore.errors import ConfigError
from prtcore.model import RewardModel
from prtcore.rewards import alibi_slopes, check_reward_tensors
from prtcore.sampling import tokenizer_vocab


class Attention(nn.Module):
    """Causal multi-head self-attention with ALiBi over absolute positions (the cache's offset included)."""

    def __init__(self, d: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d // num_heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d, bias=False) for _ in range(4))

    def __call__(self, x, cache=None):
        B, T, d = x.shape

        def heads(proj):
            return proj(x).reshape(B, T, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

        q, k, v = heads(self.q_proj), heads(self.k_proj), heads(self.v_proj)
        offset, padding = 0, None
        if cache is not None:
            padding = getattr(cache, "left_padding", None)  # mlx-lm's BatchKVCache: left-padded rows
            offset = cache._idx if padding is not None else cache.offset
            k, v = cache.update_and_fetch(k, v)
        query_pos = mx.arange(offset, offset + T)[:, None]
        distance = (mx.arange(k.shape[2])[None, :] - query_pos).astype(mx.float32)  # j − i
        slopes = mx.array(alibi_slopes(self.num_heads))[:, None, None]
        bias = mx.where(distance > 0, -mx.inf, slopes * distance)
        if padding is not None:
            # ALiBi reads distances only, so a row's shift by its padding changes nothing but which keys are padding;
            # a finite fill keeps rows of padding (no visible key) free of nan.
            pad = mx.arange(k.shape[2])[None, :] < padding[:, None]  # (B, S)
            bias = mx.where(pad[:, None, None, :], mx.array(-1e9, dtype=mx.float32), bias[None])
        scores = (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(self.head_dim) + bias
        out = mx.softmax(scores, axis=-1, precise=True) @ v
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(B, T, d))


class SwiGLU(nn.Module):
    def __init__(self, d: int, ffn: int):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(d, ffn, bias=False), nn.Linear(d, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, d, bias=False)

    def __call__(self, x):
        return self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: RewardConfig):
        super().__init__()
        d = config.d_model
        self.norm1, self.norm2 = nn.RMSNorm(d, eps=config.norm_eps), nn.RMSNorm(d, eps=config.norm_eps)
        self.attn = Attention(d, config.num_heads)
        self.mlp = SwiGLU(d, config.ffn_dim)

    def __call__(self, x, cache=None):
        x = x + self.attn(self.norm1(x), cache)
        return x + self.mlp(self.norm2(x))


class RewardNet(nn.Module):
    """The network of a kind stored as tensors: built as `Net(config, hidden_size, vocab_size)`, its parameter paths
    the kind's tensor names, called as `net(hidden, cache)` → reward logits. Methods a kind may override:"""

    # Set by a net whose `net(hidden, *, base_weight, lam)` returns r + λ·b (`composed_logits`; prtcore.objectives,
    # "Composed logits"): training then uses it (prt_mlx.training.composable_weight).
    composes_with_source = False

    def make_cache(self):
        """A cache for incremental decoding (None: the net is position-wise)."""
        return None

    def make_batch_cache(self, left_padding):
        """A cache for left-padded rows (None: position-wise)."""
        return None

    def init_tensors(self, seed: int) -> dict[str, mx.array]:
        """A new reward's weights: the output layer `head.weight` zero, norms (names with "norm") ones, the rest
        N(0, 0.02²) from `seed`."""
        return init_tensors(None, self, seed)


class LinearNet(RewardNet):
    composes_with_source = True

    def __init__(self, config: RewardConfig, hidden_size: int, vocab_size: int):
        super().__init__()
        self.head = nn.Linear(hidden_size, vocab_size, bias=False)

    def __call__(self, hidden, cache=None, *, base_weight=None, lam=1.0):
        if base_weight is None:
            return self.head(hidden)
        return composed_logits(hidden, self.head.weight, hidden, base_weight, lam)


def composed_logits(features, weight, hidden, base_weight, lam: float):
    """r + λ·b = features @ weight[:V']ᵀ + λ·hidden @ base_weightᵀ (prtcore.objectives, "Composed logits")."""
    rows, base_weight = base_weight.shape[0], mx.stop_gradient(base_weight)
    weight = weight if rows == weight.shape[0] else weight[:rows]  # a slice's vjp is a pass over (V, D)
    same = base_weight.dtype == weight.dtype
    if same and features is hidden:
        return hidden @ (weight + lam * base_weight).T
    base = hidden @ base_weight.T if same else (hidden.astype(base_weight.dtype) @ base_weight.T).astype(weight.dtype)
    return features @ weight.T + lam * base  # mx.addmm: 1.35x the peak memory (CPU)


class TransformerNet(RewardNet):
    def __init__(self, config: RewardConfig, hidden_size: int, vocab_size: int):
        super().__init__()
        self.proj_in = nn.Linear(hidden_size, config.d_model, bias=False)
        self.blocks = [Block(config) for _ in range(config.num_layers)]
        self.norm_out = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.head = nn.Linear(config.d_model, vocab_size, bias=False)
        self.checkpoint = False  # gradient checkpointing of the blocks (training)

    composes_with_source = True

    def __call__(self, hidden, cache=None, *, base_weight=None, lam=1.0):
        x = self.proj_in(hidden)
        for i, block in enumerate(self.blocks):
            c = None if cache is None else cache[i]
            x = checkpointed(block, x) if self.checkpoint and c is None else block(x, c)
        if base_weight is not None:
            return composed_logits(self.norm_out(x), self.head.weight, hidden, base_weight, lam)
        return self.head(self.norm_out(x))

    def make_cache(self):
        from mlx_lm.models.cache import KVCache

        return [KVCache() for _ in self.blocks]

    def make_batch_cache(self, left_padding):
        """mlx-lm BatchKVCaches (the attention masks each row's padding)."""
        from mlx_lm.models.cache import BatchKVCache

        return [BatchKVCache(list(left_padding)) for _ in self.blocks]


def checkpointed(module: nn.Module, *args):
    """Call `module` under mx.checkpoint: its activations are recomputed in the backward pass."""

    def inner(params, *inner_args):
        module.update(params)
        return module(*inner_args)

    return mx.checkpoint(inner)(module.trainable_parameters(), *args)


def init_tensors(config: RewardConfig | None, net: nn.Module, seed: int) -> dict[str, mx.array]:
    """prtcore.rewards' init: norms ones, the head zero, other weights N(0, 0.02²) from `seed`."""
    key = mx.random.key(seed)
    out = {}
    for name, value in tree_flatten(net.parameters()):
        if "norm" in name.rpartition(".")[0].rpartition(".")[2]:
            out[name] = mx.ones(value.shape)
        elif name == "head.weight":
            out[name] = mx.zeros(value.shape)
        else:
            key, sub = mx.random.split(key)
            out[name] = 0.02 * mx.random.normal(value.shape, key=sub)
    return out


class HeadReward(RewardModel):
    """A reward of a kind stored as tensors (linear, transformer, a plugin's) over the frozen source's last hidden
    states; `net` is its RewardNet class (default: that of the mlx implementation of the config's kind)."""

    def __init__(self, backend, config: RewardConfig, hidden_size: int, vocab_size: int, tensors: dict | None = None,
                 *, seed: int = 0, shared_vocab: int | None = None, net: type | None = None):
        if config.reward_kind.stored_as != "tensors":
            raise ConfigError(f"RewardConfig.kind={config.kind!r}: not a reward stored as tensors over hidden states")
        if net is None:
            from prtcore.plugins import reward_implementation

            net = reward_implementation(config.kind, "mlx").net
        self.backend, self.config = backend, config
        self.hidden_size, self._vocab_size, self.shared_vocab = hidden_size, vocab_size, shared_vocab
        self.module = net(config, hidden_size, vocab_size)
        if tensors is None:
            self.module.load_weights(list(self.module.init_tensors(seed).items()), strict=True)
            mx.eval(self.module.parameters())
        else:
            self._set_tensors(tensors, "reward tensors")

    def _set_tensors(self, tensors: dict, where: str) -> None:
        """Saved NumPy `tensors` (checked against this reward's shapes; `where` names them in errors) as its weights."""
        check_reward_tensors(tensors, self.config, self.hidden_size, self._vocab_size, where)
        self.module.load_weights([(k, mx.array(np.asarray(v, dtype=np.float32))) for k, v in tensors.items()],
                                 strict=True)
        mx.eval(self.module.parameters())

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def forward(self, ids, cache=None, *, source_hidden=None, attention_mask=None, position_ids=None):
        """Reward logits from the source's hidden states; `attention_mask` / `position_ids`: a left-padded batch
        (prt_mlx.batching)."""
        if source_hidden is None:
            raise ConfigError(f"a {self.config.kind!r} reward needs the source's hidden states (source_hidden)")
        if attention_mask is not None:
            from .batching import batched_cache

            cache = batched_cache(cache, attention_mask, position_ids, source_hidden.shape[1], self.make_batch_cache)
        return self.module(source_hidden.astype(mx.float32), cache)

    def make_cache(self):
        return self.module.make_cache()

    def make_batch_cache(self, left_padding):
        """A cache for left-padded rows (the net's; e.g. mlx-lm BatchKVCaches, which mask each row's padding)."""
        return self.module.make_batch_cache(left_padding)

    def tensors(self) -> dict[str, np.ndarray]:
        return {k: np.array(v.astype(mx.float32)) for k, v in tree_flatten(self.module.parameters())}

    def load_trained(self, artifact) -> None:
        self._set_tensors(artifact.tensors(), str(artifact.file(REWARD_WEIGHTS)))

    def parameter_count(self) -> tuple[int, int]:
        n = sum(v.size for _, v in tree_flatten(self.module.parameters()))
        return n, n

    def save(self, path, *, source, vocab_size: int, extra: dict | None = None) -> Path:
        with ArtifactWriter(path) as writer:
            save_numpy_tensors(writer.dir / REWARD_WEIGHTS, self.tensors(), metadata={"format": "pt"})
            if source.path is not None:
                writer.copy_tokenizer(source.path)
            return writer.commit(reward_meta(self.config, source=source, tokenizer=source.tokenizer, vocab_size=vocab_size,
                                             output_size=self.vocab_size, weights=[REWARD_WEIGHTS], backend="mlx",
                                             extra=extra))


# ------------------------------------------------------------------------------------------------ implementations
class HeadImplementation:
    """The mlx implementation of a reward kind stored as tensors, from its network class `net` (a RewardNet): what
    prtcore.plugins.reward_implementation gives (`create`, `load`; prtcore.kinds)."""

    def __init__(self, net: type):
        self.net = net

    def create(self, backend, config: RewardConfig, source, *, seed: int = 0) -> HeadReward:
        return HeadReward(backend, config, source.hidden_size, source.vocab_size, seed=seed,
                          shared_vocab=len(tokenizer_vocab(source.tokenizer)), net=self.net)

    def load(self, backend, artifact, source) -> HeadReward:
        config = artifact.config
        if source is None:
            raise ConfigError(f"{artifact.path}: a {config.kind!r} reward needs its source model")
        tensors = artifact.tensors()
        recorded = artifact.source.get("hidden_size")
        if recorded is not None and int(recorded) != source.hidden_size:
            raise ConfigError(f"{artifact.path}: the reward reads hidden states of size {recorded}, "
                              f"but source {source.path} has hidden size {source.hidden_size}")
        rows = int(tensors["head.weight"].shape[0]) if "head.weight" in tensors else source.vocab_size
        return HeadReward(backend, config, source.hidden_size, rows, tensors, shared_vocab=artifact.vocab_size,
                          net=self.net)


class TwinImplementation:
    """The mlx implementation of the twin kind: a copy or LoRA (prt_mlx.twin); a vision-language source's LoRA twin
    (prt_mlx.vlm) when loaded onto one."""

    def create(self, backend, config: RewardConfig, source, *, seed: int = 0):
        from .twin import TwinReward

        return TwinReward.create(backend, config, source, seed=seed, shared_vocab=len(tokenizer_vocab(source.tokenizer)))

    def load(self, backend, artifact, source):
        from .twin import TwinReward

        config = artifact.config
        if not config.reward_kind.needs_source(config):  # a full twin: a checkpoint of its own
            return TwinReward.from_checkpoint(backend, config, artifact.path, shared_vocab=artifact.vocab_size)
        if source is None:
            raise ConfigError(f"{artifact.path}: a {config.kind!r} reward needs its source model")
        twin = TwinReward
        if source.vision is not None:
            from .vlm import VLMTwinReward as twin
        return twin.from_adapter(backend, config, artifact.path, source, shared_vocab=artifact.vocab_size)


LINEAR = HeadImplementation(LinearNet)
TRANSFORMER = HeadImplementation(TransformerNet)
TWIN = TwinImplementation()

