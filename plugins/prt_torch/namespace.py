"""`TorchNamespace`: prtcore's array namespace over torch tensors (differentiable, device-aware)."""

from __future__ import annotations

import numpy as np
import torch

from prtcore.arrays import ArrayNamespace
from prtcore.sampling import Pipeline


def _dim(axis):
    return tuple(axis) if isinstance(axis, (list, tuple)) else axis


def upload(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without waiting for the device: a CUDA copy goes through pinned memory, queued on
    the stream (torch's pinned allocator keeps the buffer until the copy has run). A pageable copy would wait for
    every kernel queued before it."""
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


class CUDAPipeline(Pipeline):
    """prtcore's decoding loop on a CUDA device: the sampled ids stay on the device as the next step's input;
    the host gets them through a non-blocking copy to pinned memory and waits on an event recorded right after
    it, so the kernels of step t+1, queued before that wait, keep the device busy (no stream-wide sync)."""

    def active(self, token) -> bool:
        return isinstance(token, torch.Tensor) and token.is_cuda

    def start(self, token):
        host = torch.empty(token.shape, dtype=token.dtype, pin_memory=True)  # pinned: cached by torch
        host.copy_(token, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return host, event

    def finish(self, token, handle):
        host, event = handle
        event.synchronize()
        return host.numpy()


class TorchNamespace(ArrayNamespace):
    """Every operation prtcore uses, on torch tensors. New arrays go to `device` (set by the backend)."""

    name = "torch"
    pipeline = CUDAPipeline()  # prtcore.sampling.decode overlaps steps on CUDA tensors

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)

    # construction and conversion
    def asarray(self, x, dtype=None):
        if isinstance(x, torch.Tensor):
            return x if dtype is None else x.to(dtype)
        arr = np.asarray(x)
        return torch.as_tensor(arr if dtype is None else arr.astype(dtype), device=self.device)

    def to_numpy(self, x) -> np.ndarray:
        if not isinstance(x, torch.Tensor):
            return np.asarray(x)
        x = x.detach().cpu()
        if x.dtype == torch.bool:
            return x.numpy()
        if x.is_floating_point():
            return x.to(torch.float32).numpy()
        return x.to(torch.int64).numpy()

    def full_like(self, x, value):
        return torch.full_like(x, value)

    def token_mask(self, ids, size: int):
        ids = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(-1))
        mask = torch.zeros(size, dtype=torch.bool)
        mask[ids[(ids >= 0) & (ids < size)]] = True
        return upload(mask, self.device)

    # elementwise
    def exp(self, x):
        return torch.exp(x)

    def log(self, x):
        return torch.log(x)

    def where(self, cond, x, y):
        device = next((t.device for t in (x, y, cond) if isinstance(t, torch.Tensor)), self.device)
        cond, x, y = (t.to(device) if isinstance(t, torch.Tensor) else t for t in (cond, x, y))
        return torch.where(cond, x, y)

    def isfinite(self, x):
        return torch.isfinite(x)

    def astype_float32(self, x):
        return x.to(torch.float32) if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.float32)

    # reductions and indexing
    def sum(self, x, axis=None, keepdims=False):
        return torch.sum(x) if axis is None else torch.sum(x, dim=_dim(axis), keepdim=keepdims)

    def max(self, x, axis=None, keepdims=False):
        return torch.amax(x) if axis is None else torch.amax(x, dim=_dim(axis), keepdim=keepdims)

    def argmax(self, x, axis=-1):
        return torch.argmax(x, dim=axis)

    def sort(self, x, axis=-1):
        return torch.sort(x, dim=axis).values

    def cumsum(self, x, axis=-1):
        return torch.cumsum(x, dim=axis)

    def take_along_axis(self, x, idx, axis=-1):
        return torch.gather(x, axis, idx.to(device=x.device, dtype=torch.int64))

    def concatenate(self, xs, axis=-1):
        return torch.cat(list(xs), dim=axis)

    def squeeze(self, x, axis):
        return x.squeeze(axis)

    # random
    def make_rng(self, seed: int | None):
        rng = torch.Generator()
        if seed is None:
            rng.seed()
        else:
            rng.manual_seed(int(seed))
        return rng

    def categorical(self, logprobs, rng):
        """Gumbel-max sampling; the noise comes from the CPU generator `rng`, so it is the same on every device."""
        u = torch.rand(logprobs.shape, generator=rng, dtype=torch.float64)
        gumbel = -torch.log(-torch.log(u))
        return torch.argmax(logprobs.to(torch.float64) + upload(gumbel, logprobs.device), dim=-1)

    # fused versions of the derived operations (same values, faster and with clean gradients)
    def logsumexp(self, x, axis=-1, keepdims=False):
        return torch.logsumexp(x, dim=axis, keepdim=keepdims)

    def log_softmax(self, x, axis=-1):
        return torch.log_softmax(x, dim=axis)

    def softmax(self, x, axis=-1):
        return torch.softmax(x, dim=axis)
