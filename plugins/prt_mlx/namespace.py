"""prtcore's array namespace (prtcore.arrays) over mlx arrays."""

from __future__ import annotations

import secrets

import mlx.core as mx
import numpy as np

from prtcore.arrays import ArrayNamespace
from prtcore.sampling import Pipeline

from . import streams  # noqa: F401 (mlx's streams released at exit)


class KeyState:
    """An explicit PRNG key for `categorical`: each draw splits it, so a seed fixes the whole sequence."""

    def __init__(self, seed: int):
        self.key = mx.random.key(int(seed))

    def next(self):
        self.key, sub = mx.random.split(self.key)
        return sub


class AsyncEvalPipeline(Pipeline):
    """prtcore's decoding loop on mlx: the next step's graph is built from the sampled ids while they are still
    lazy and evaluated asynchronously (`mx.async_eval`), so the device computes step t+1 while the host reads
    token t and builds step t+2 (what mlx_lm.generate_step does for one model)."""

    def active(self, token) -> bool:
        return isinstance(token, mx.array)

    def start(self, token):
        mx.async_eval(token)

    def finish(self, token, handle):
        return np.array(token)


class MLXNamespace(ArrayNamespace):
    name = "mlx"
    pipeline = AsyncEvalPipeline()  # prtcore.sampling.decode evaluates asynchronously

    def asarray(self, x, dtype=None):
        if isinstance(x, mx.array):
            return x if dtype is None else x.astype(dtype)
        x = np.asarray(x)
        if dtype is None and x.dtype == np.float64:
            x = x.astype(np.float32)  # mlx has no float64 on the GPU
        if dtype is None and x.dtype == np.int64:
            x = x.astype(np.int32)
        out = mx.array(x)
        return out if dtype is None else out.astype(dtype)

    def to_numpy(self, x) -> np.ndarray:
        if not isinstance(x, mx.array):
            return np.asarray(x)
        if x.dtype in (mx.bfloat16, mx.float16):
            x = x.astype(mx.float32)
        return np.array(x)

    def full_like(self, x, value):
        return mx.full(x.shape, value, dtype=x.dtype)

    def token_mask(self, ids, size):
        mask = np.zeros(size, dtype=bool)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        mask[ids[(ids >= 0) & (ids < size)]] = True
        return mx.array(mask)

    def exp(self, x):
        return mx.exp(x)

    def log(self, x):
        return mx.log(x)

    def where(self, cond, x, y):
        return mx.where(cond, x, y)

    def isfinite(self, x):
        return mx.isfinite(x)

    def astype_float32(self, x):
        return mx.array(x).astype(mx.float32) if not isinstance(x, mx.array) else x.astype(mx.float32)

    def sum(self, x, axis=None, keepdims=False):
        return mx.sum(x, axis=axis, keepdims=keepdims)

    def max(self, x, axis=None, keepdims=False):
        return mx.max(x, axis=axis, keepdims=keepdims)

    def argmax(self, x, axis=-1):
        return mx.argmax(x, axis=axis)

    def sort(self, x, axis=-1):
        return mx.sort(x, axis=axis)

    def cumsum(self, x, axis=-1):
        return mx.cumsum(x, axis=axis)

    def take_along_axis(self, x, idx, axis=-1):
        return mx.take_along_axis(x, idx, axis=axis)

    def concatenate(self, xs, axis=-1):
        return mx.concatenate(list(xs), axis=axis)

    def squeeze(self, x, axis):
        return mx.squeeze(x, axis=axis)

    def make_rng(self, seed):
        return KeyState(secrets.randbits(63) if seed is None else seed)

    def categorical(self, logprobs, rng):
        return mx.random.categorical(logprobs.astype(mx.float32), axis=-1, key=rng.next())


MLX = MLXNamespace()
