"""A llama-family decoder in NumPy (llama, mistral, qwen2, qwen3), computed in float64.

Reads the hub's layout: config.json and *.safetensors with transformers' tensor names. Covers what these families
use: grouped-query attention, rotary embeddings (default or linear scaling), optional q/k/v biases (qwen2),
q/k RMSNorm per head (qwen3), sliding-window attention (mistral, qwen2 with use_sliding_window), SwiGLU, tied or
untied output layer.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from prtcore.errors import ModelLoadError

MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as NumPy; bfloat16 is widened to float32 (NumPy has no bfloat16)."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, stop = info["data_offsets"]
        raw = body[start:stop]
        if info["dtype"] == "BF16":
            array = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in _DTYPES:
            array = np.frombuffer(raw, dtype=_DTYPES[info["dtype"]])
        else:
            raise ModelLoadError(f"{path}: tensor {name!r} has dtype {info['dtype']}, which this backend does not read")
        out[name] = array.reshape(info["shape"]).copy()
    return out


def read_weights(path: Path) -> dict[str, np.ndarray]:
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path}: no *.safetensors weights")
    weights = {}
    for file in files:
        weights.update(read_safetensors(file))
    return weights


def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x):
    return x / (1.0 + np.exp(-x))


def _softmax(x):
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - np.where(np.isfinite(m), m, 0.0))
    return e / np.sum(e, axis=-1, keepdims=True)


class KVCache:
    """Keys and values of every layer, (B, kv_heads, S, head_dim), and the number of cached positions."""

    def __init__(self, num_layers: int):
        self.keys: list[np.ndarray | None] = [None] * num_layers
        self.values: list[np.ndarray | None] = [None] * num_layers
        self.offset = 0

    def update(self, layer: int, k, v):
        if self.keys[layer] is not None:
            k = np.concatenate([self.keys[layer], k], axis=2)
            v = np.concatenate([self.values[layer], v], axis=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class Llama:
    """The model: `forward(ids, cache)` → (logits, final hidden states), both float64."""

    def __init__(self, config: dict, weights: dict[str, np.ndarray], where: str = "model"):
        model_type = config.get("model_type")
        if model_type not in MODEL_TYPES:
            raise ModelLoadError(f"{where}: model_type {model_type!r} is not one of {', '.join(sorted(MODEL_TYPES))}")
        self.config = config
        self.w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
        self.hidden_size = int(config["hidden_size"])
        self.num_layers = int(config["num_hidden_layers"])
        self.num_heads = int(config["num_attention_heads"])
        self.num_kv_heads = int(config.get("num_key_value_heads") or self.num_heads)
        self.head_dim = int(config.get("head_dim") or self.hidden_size // self.num_heads)
        self.eps = float(config.get("rms_norm_eps", 1e-6))
        self.window = None
        if config.get("sliding_window") and (model_type == "mistral" or config.get("use_sliding_window")):
            self.window = int(config["sliding_window"])
        rope = config.get("rope_parameters") or {}
        scaling = config.get("rope_scaling") or {}
        self.rope_theta = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
        rope_type = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
        if rope_type not in ("default", "linear"):
            raise ModelLoadError(f"{where}: rope_type {rope_type!r} is not supported (default, linear)")
        self.rope_factor = float(rope.get("factor", scaling.get("factor", 1.0))) if rope_type == "linear" else 1.0
        if float(rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))) != 1.0:
            raise ModelLoadError(f"{where}: partial rotary embeddings are not supported")
        self.head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])
        self.vocab_size = int(self.head.shape[0])
        missing = [k for k in ("model.embed_tokens.weight", "model.norm.weight") if k not in self.w]
        if missing:
            raise ModelLoadError(f"{where}: tensor {missing[0]!r} is missing")

    @classmethod
    def load(cls, path) -> "Llama":
        path = Path(path)
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelLoadError(f"{path}: no config.json") from None
        return cls(config, read_weights(path), str(path))

    # ------------------------------------------------------------------------------------------ pieces
    def _rope(self, x, positions):
        d = self.head_dim
        inv_freq = 1.0 / (self.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
        freqs = (positions[:, None] / self.rope_factor) * inv_freq[None, :]  # (T, d/2)
        emb = np.concatenate([freqs, freqs], axis=-1)
        cos, sin = np.cos(emb), np.sin(emb)
        half = d // 2
        rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos + rotated * sin

    def _linear(self, x, name):
        out = x @ self.w[name + ".weight"].T
        bias = self.w.get(name + ".bias")
        return out if bias is None else out + bias

    def _attention(self, i, x, positions, cache):
        B, T, _ = x.shape
        p = f"model.layers.{i}.self_attn."

        def heads(name, n):
            return self._linear(x, p + name).reshape(B, T, n, self.head_dim).transpose(0, 2, 1, 3)

        q, k, v = heads("q_proj", self.num_heads), heads("k_proj", self.num_kv_heads), heads("v_proj", self.num_kv_heads)
        if p + "q_norm.weight" in self.w:  # qwen3
            q = rms_norm(q, self.w[p + "q_norm.weight"], self.eps)
            k = rms_norm(k, self.w[p + "k_norm.weight"], self.eps)
        q, k = self._rope(q, positions), self._rope(k, positions)
        if cache is not None:
            k, v = cache.update(i, k, v)
        groups = self.num_heads // self.num_kv_heads
        k, v = np.repeat(k, groups, axis=1), np.repeat(v, groups, axis=1)
        key_pos = np.arange(k.shape[2])
        distance = positions[:, None] - key_pos[None, :]  # i − j
        allowed = distance >= 0
        if self.window is not None:
            allowed &= distance < self.window
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(self.head_dim)
        scores = np.where(allowed, scores, -np.inf)
        out = (_softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(B, T, self.num_heads * self.head_dim)
        return self._linear(out, p + "o_proj")

    def _mlp(self, i, x):
        p = f"model.layers.{i}.mlp."
        return self._linear(silu(self._linear(x, p + "gate_proj")) * self._linear(x, p + "up_proj"), p + "down_proj")

    # ------------------------------------------------------------------------------------------ forward
    def forward(self, ids, cache: KVCache | None = None):
        ids = np.asarray(ids, dtype=np.int64)
        offset = cache.offset if cache is not None else 0
        positions = np.arange(offset, offset + ids.shape[1], dtype=np.float64)
        x = self.w["model.embed_tokens.weight"][ids]
        for i in range(self.num_layers):
            p = f"model.layers.{i}."
            x = x + self._attention(i, rms_norm(x, self.w[p + "input_layernorm.weight"], self.eps), positions, cache)
            x = x + self._mlp(i, rms_norm(x, self.w[p + "post_attention_layernorm.weight"], self.eps))
        if cache is not None:
            cache.offset += ids.shape[1]
        hidden = rms_norm(x, self.w["model.norm.weight"], self.eps)
        return hidden @ self.head.T, hidden

    def make_cache(self) -> KVCache:
        return KVCache(self.num_layers)
