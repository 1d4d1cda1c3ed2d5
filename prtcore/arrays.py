"""The array namespace (`xp`) that the loss, the composers and the samplers are written against.

A backend provides one `ArrayNamespace` for its array type; NumPy's is the reference. Only the operations
below are used by prtcore, so a new backend implements exactly these.
"""

from __future__ import annotations

import numpy as np

from .errors import BackendError


class ArrayNamespace:
    """Operations over one array type. Subclasses override every method (NumPy's version is the spec)."""

    name = "abstract"
    # a prtcore.sampling.Pipeline: how the decoding loop overlaps a step with reading the sampled ids (None: no overlap)
    pipeline = None

    # construction and conversion
    def asarray(self, x, dtype=None): raise NotImplementedError
    def to_numpy(self, x) -> np.ndarray: raise NotImplementedError
    def full_like(self, x, value): raise NotImplementedError
    def token_mask(self, ids, size: int):
        """Boolean vector of length `size`, True at every id in the 1-D integer sequence `ids`."""
        raise NotImplementedError

    # elementwise
    def exp(self, x): raise NotImplementedError
    def log(self, x): raise NotImplementedError
    def where(self, cond, x, y): raise NotImplementedError
    def isfinite(self, x): raise NotImplementedError
    def astype_float32(self, x): raise NotImplementedError

    # reductions and indexing
    def sum(self, x, axis=None, keepdims=False): raise NotImplementedError
    def max(self, x, axis=None, keepdims=False): raise NotImplementedError
    def argmax(self, x, axis=-1): raise NotImplementedError
    def sort(self, x, axis=-1): raise NotImplementedError
    def cumsum(self, x, axis=-1): raise NotImplementedError
    def take_along_axis(self, x, idx, axis=-1): raise NotImplementedError
    def concatenate(self, xs, axis=-1): raise NotImplementedError

    # random
    def make_rng(self, seed: int | None):
        """A random state for `categorical`; None seeds from entropy."""
        raise NotImplementedError

    def categorical(self, logprobs, rng):
        """One sample per row of (B, V) log-probabilities; returns (B,) integer ids."""
        raise NotImplementedError

    # derived, written once in terms of the primitives above
    def logsumexp(self, x, axis=-1, keepdims=False):
        m = self.max(x, axis=axis, keepdims=True)
        m = self.where(self.isfinite(m), m, self.full_like(m, 0.0))
        out = self.log(self.sum(self.exp(x - m), axis=axis, keepdims=True)) + m
        return out if keepdims else self.squeeze(out, axis)

    def log_softmax(self, x, axis=-1):
        return x - self.logsumexp(x, axis=axis, keepdims=True)

    def softmax(self, x, axis=-1):
        return self.exp(self.log_softmax(x, axis=axis))

    def squeeze(self, x, axis): raise NotImplementedError


class NumpyNamespace(ArrayNamespace):
    """The reference namespace."""

    name = "numpy"

    def asarray(self, x, dtype=None):
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x):
        return np.asarray(x)

    def full_like(self, x, value):
        return np.full_like(x, value)

    def token_mask(self, ids, size):
        mask = np.zeros(size, dtype=bool)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        mask[ids[(ids >= 0) & (ids < size)]] = True
        return mask

    def exp(self, x):
        return np.exp(x)

    def log(self, x):
        with np.errstate(divide="ignore"):
            return np.log(x)

    def where(self, cond, x, y):
        return np.where(cond, x, y)

    def isfinite(self, x):
        return np.isfinite(x)

    def astype_float32(self, x):
        return np.asarray(x, dtype=np.float32)

    def sum(self, x, axis=None, keepdims=False):
        return np.sum(x, axis=axis, keepdims=keepdims)

    def max(self, x, axis=None, keepdims=False):
        return np.max(x, axis=axis, keepdims=keepdims)

    def argmax(self, x, axis=-1):
        return np.argmax(x, axis=axis)

    def sort(self, x, axis=-1):
        return np.sort(x, axis=axis)

    def cumsum(self, x, axis=-1):
        return np.cumsum(x, axis=axis)

    def take_along_axis(self, x, idx, axis=-1):
        return np.take_along_axis(x, idx, axis=axis)

    def concatenate(self, xs, axis=-1):
        return np.concatenate(xs, axis=axis)

    def squeeze(self, x, axis):
        return np.squeeze(x, axis=axis)

    def make_rng(self, seed):
        return np.random.default_rng(seed)

    def categorical(self, logprobs, rng):
        logprobs = np.asarray(logprobs, dtype=np.float64)
        gumbel = -np.log(-np.log(rng.random(logprobs.shape)))
        return np.argmax(logprobs + gumbel, axis=-1)

    def logsumexp(self, x, axis=-1, keepdims=False):
        with np.errstate(invalid="ignore", over="ignore"):
            return super().logsumexp(x, axis=axis, keepdims=keepdims)


NUMPY = NumpyNamespace()


def namespace(xp) -> ArrayNamespace:
    """Resolve `xp`: an ArrayNamespace, the numpy module, or a backend's array module (mlx.core, torch)."""
    if isinstance(xp, ArrayNamespace):
        return xp
    if xp is None or xp is np:
        return NUMPY
    module = getattr(xp, "__name__", type(xp).__name__)
    from .plugins import backend_for_array_module

    return backend_for_array_module(module).xp


def namespace_of(array) -> ArrayNamespace:
    """The namespace of the backend whose array type `array` is."""
    if isinstance(array, (np.ndarray, np.generic, list, tuple, float, int)):
        return NUMPY
    from .plugins import backend_for_array_module

    return backend_for_array_module(type(array).__module__).xp


def to_numpy(x) -> np.ndarray:
    """Convert an array of any installed backend (or nested lists) to a NumPy array."""
    try:
        return namespace_of(x).to_numpy(x)
    except BackendError:
        raise BackendError(f"to_numpy: no installed backend owns arrays of type {type(x).__module__}.{type(x).__name__}")
