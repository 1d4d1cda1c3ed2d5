"""The `linear` and `transformer` rewards (prtcore.rewards defines them; parameter paths are the tensor names)."""

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
from prtcore.objectives import check_prt_loss_args
from prtcore.rewards import alibi_slopes, check_reward_tensors


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


class LinearNet(nn.Module):
    def __init__(self, config: RewardConfig, hidden_size: int, vocab_size: int):
        super().__init__()
        self.head = nn.Linear(hidden_size, vocab_size, bias=False)

    def __call__(self, hidden, cache=None):
        return self.head(hidden)


class TransformerNet(nn.Module):
    def __init__(self, config: RewardConfig, hidden_size: int, vocab_size: int):
        super().__init__()
        self.proj_in = nn.Linear(hidden_size, config.d_model, bias=False)
        self.blocks = [Block(config) for _ in range(config.num_layers)]
        self.norm_out = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.head = nn.Linear(config.d_model, vocab_size, bias=False)
        self.checkpoint = False  # gradient checkpointing of the blocks (training)

    def __call__(self, hidden, cache=None):
        x = self.proj_in(hidden)
        for i, block in enumerate(self.blocks):
            c = None if cache is None else cache[i]
            x = checkpointed(block, x) if self.checkpoint and c is None else block(x, c)
        return self.head(self.norm_out(x))


def checkpointed(module: nn.Module, *args):
    """Call `module` under mx.checkpoint: its activations are recomputed in the backward pass."""

    def inner(params, *inner_args):
        module.update(params)
        return module(*inner_args)

    return mx.checkpoint(inner)(module.trainable_parameters(), *args)


NETS = {"linear": LinearNet, "transformer": TransformerNet}


def init_tensors(config: RewardConfig, net: nn.Module, seed: int) -> dict[str, mx.array]:
    """prtcore.rewards' init: norms ones, the head zero, other weights N(0, 0.02²) from `seed`."""
    key = mx.random.key(seed)
    out = {}
    for name, value in tree_flatten(net.parameters()):
        if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm_out.weight":
            out[name] = mx.ones(value.shape)
        elif name == "head.weight":
            out[name] = mx.zeros(value.shape)
        else:
            key, sub = mx.random.split(key)
            out[name] = 0.02 * mx.random.normal(value.shape, key=sub)
    return out


class HeadReward(RewardModel):
    """A `linear` or `transformer` reward over the frozen source's last hidden states."""

    def __init__(self, backend, config: RewardConfig, hidden_size: int, vocab_size: int, tensors: dict | None = None,
                 *, seed: int = 0, shared_vocab: int | None = None):
        if config.kind not in NETS:
            raise ConfigError(f"RewardConfig.kind={config.kind!r}: not a hidden-state reward (linear, transformer)")
        self.backend, self.config = backend, config
        self.hidden_size, self._vocab_size, self.shared_vocab = hidden_size, vocab_size, shared_vocab
        self.module = NETS[config.kind](config, hidden_size, vocab_size)
        if tensors is None:
            tensors = init_tensors(config, self.module, seed)
        else:
            check_reward_tensors(tensors, config, hidden_size, vocab_size, "reward tensors")
            tensors = {k: mx.array(np.asarray(v, dtype=np.float32)) for k, v in tensors.items()}
        self.module.load_weights(list(tensors.items()), strict=True)
        mx.eval(self.module.parameters())

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def forward(self, ids, cache=None, *, source_hidden=None):
        if source_hidden is None:
            raise ConfigError(f"a {self.config.kind!r} reward needs the source's hidden states (source_hidden)")
        return self.module(source_hidden.astype(mx.float32), cache)

    def make_cache(self):
        if self.config.kind == "linear":
            return None
        from mlx_lm.models.cache import KVCache

        return [KVCache() for _ in range(self.config.num_layers)]

    def make_batch_cache(self, left_padding):
        """A cache for left-padded rows: mlx-lm BatchKVCaches (the attention masks each row's padding)."""
        if self.config.kind == "linear":
            return None
        from mlx_lm.models.cache import BatchKVCache

        return [BatchKVCache(list(left_padding)) for _ in range(self.config.num_layers)]

    def tensors(self) -> dict[str, np.ndarray]:
        return {k: np.array(v.astype(mx.float32)) for k, v in tree_flatten(self.module.parameters())}

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


# ------------------------------------------------------------------------------------------------ fused loss
def _log_softmax(x):
    return x - mx.logsumexp(x, axis=-1, keepdims=True)


_FUSED: dict = {}


def _fused(lam: float, alpha: float):
    """A compiled function (base, reward, targets, weights) → (loss, ntokens, accuracy, entropy, nll, d loss/d reward).

    The gradient is computed with the loss from the same intermediates (mx.compile fuses the elementwise work
    over the (tokens, V) arrays), so autodiff keeps none of them:
    d loss / d r = w/n · [(softmax(v) − onehot(y)) / λ  +  α · p ⊙ (log p + H(p))],  v = log_softmax(b) + r/λ."""
    key = (lam, alpha)
    if key in _FUSED:
        return _FUSED[key]

    def both(base, reward, targets, w, n):
        """Rows of tokens: (loss, accuracy, entropy, nll) sums over the rows divided by max(n, 1) (n: the masked
        tokens of the whole batch), and the rows' gradient."""
        logq = _log_softmax(_log_softmax(base) + reward / lam)
        logp = _log_softmax(reward)
        p = mx.exp(logp)
        h = -mx.sum(mx.where(p > 0, p * logp, 0.0), axis=-1)
        denom = mx.where(n > 0, n, 1.0)
        keep = w > 0
        target_logq = mx.take_along_axis(logq, targets[..., None], axis=-1)[..., 0]
        nll = mx.where(keep, -target_logq, 0.0).sum() / denom
        entropy = mx.where(keep, h, 0.0).sum() / denom
        accuracy = ((mx.argmax(logq, axis=-1) == targets).astype(mx.float32) * w).sum() / denom
        value = nll - alpha * entropy if alpha else nll
        grad = (mx.exp(logq) - (mx.arange(reward.shape[-1]) == targets[..., None])) / lam
        if alpha:
            grad = grad + alpha * mx.where(p > 0, p * (logp + h[..., None]), 0.0)
        grad = (grad * (w / denom)[..., None]).astype(reward.dtype)
        return value, accuracy, entropy, nll, grad

    _FUSED[key] = mx.compile(both)
    return _FUSED[key]


def _chunk_elements() -> int:
    """Size of one chunk's (tokens, V) temporaries. On the CPU they are not fused away: 1 MB chunks ran fastest and
    keep a twin's loss at the peak memory of LoRA's plain cross-entropy (4 MB chunks: 1.5x; see docs/performance.md).
    On a GPU each chunk costs kernel launches, so chunks are 4 MB there."""
    return 1 << 18 if mx.default_device() == mx.cpu else 1 << 20


def fused_prt_loss(base_logits, reward_logits, targets, mask=None, *, lam=1.0, entropy_coeff=0.0):
    """prtcore.objectives.prt_loss on mlx arrays, `(loss, {"ntokens", "accuracy", "entropy", "nll"})`: the same
    values and gradient (of the reward only), the gradient computed with the loss (see `_fused`)."""
    check_prt_loss_args(base_logits, reward_logits, lam, entropy_coeff, align_hint="")
    weights = mx.ones(targets.shape, dtype=mx.float32) if mask is None else mask
    base = mx.stop_gradient(base_logits)
    both = _fused(float(lam), float(entropy_coeff))

    V = reward_logits.shape[-1]
    shape = reward_logits.shape
    rows = max(1, _chunk_elements() // max(V, 1))

    @mx.custom_function
    def loss(reward):
        # chunks of tokens: the (tokens, V) temporaries of one chunk are freed before the next is computed
        b, r = base.reshape(-1, V), reward.reshape(-1, V)
        y, w = targets.reshape(-1), weights.reshape(-1).astype(mx.float32)
        n = w.sum()
        totals, grads = [], []
        for start in range(0, r.shape[0], rows):
            part = both(b[start:start + rows], r[start:start + rows], y[start:start + rows], w[start:start + rows], n)
            totals.append(part[:4])
            grads.append(part[4])
        value, accuracy, entropy, nll = (sum(t[i] for t in totals) for i in range(4))
        return value, n, accuracy, entropy, nll, mx.concatenate(grads).reshape(shape)

    @loss.vjp
    def loss_vjp(primals, cotangents, outputs):
        return (outputs[5] * cotangents[0],)

    value, n, accuracy, entropy, nll, _ = loss(reward_logits)
    return value, {"ntokens": n, "accuracy": accuracy, "entropy": entropy, "nll": nll}
