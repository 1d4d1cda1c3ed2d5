"""Left-padded batches on mlx (capability "batched"): forwards that take `attention_mask` (B, past + T) and
`position_ids` (B, T), as torch's do.

mlx-lm masks each row's padding and offsets its rope positions through batch caches (`BatchKVCache`, and
`BatchRotatingKVCache` for sliding-window layers) that know every row's left padding. So the first forward of a
batch reads the padding off the attention mask and turns the fresh caches it was given (`make_cache()`) into batch
caches, in place; later forwards check that the mask only grows by real tokens. A mask that is not left padding
(zeros, then ones), or positions other than the ones the mask implies, are refused: mlx-lm has no other layout.
"""

from __future__ import annotations

import contextlib

import numpy as np

from prtcore.errors import BackendError


def left_padding(attention_mask, position_ids, new: int) -> list[int]:
    """Each row's padding from an attention mask (B, past + new), checked to be left padding, with `position_ids`
    (B, new) (or None) checked to be the positions it implies (cumsum of the mask − 1)."""
    mask = np.asarray(attention_mask).astype(np.int64)
    if mask.ndim != 2 or mask.shape[1] < new:
        raise BackendError(f"attention_mask of shape {mask.shape}: expected (batch, past + {new}) for {new} new token(s)")
    padding = (mask.shape[1] - mask.sum(axis=1)).astype(int)
    width = mask.shape[1]
    for row, pad in enumerate(padding):
        if np.any(mask[row, :pad] != 0) or np.any(mask[row, pad:] != 1):
            raise BackendError(f"attention_mask row {row} is {mask[row].tolist()}: mlx batches take left padding only "
                               "(zeros, then ones)")
        if 0 < width - new < pad:  # after the first step, every new token is a real one
            raise BackendError(f"attention_mask row {row}: its new tokens hold padding; mlx batches take padding "
                               "before the prompt only")
    if position_ids is not None:
        expected = np.maximum(np.cumsum(mask, axis=1) - 1, 0)[:, width - new:]
        given = np.asarray(position_ids).astype(np.int64)
        if given.shape != expected.shape or np.any(given != expected):
            raise BackendError(f"position_ids {given.tolist()}: mlx batches take the positions of the left-padded "
                               f"mask, {expected.tolist()}")
    return padding.tolist()


def batch_entry(entry, padding: list[int]):
    """The batch cache mlx-lm uses for one layer's fresh cache `entry` with rows padded by `padding`."""
    from mlx_lm.models.cache import BatchKVCache, BatchRotatingKVCache, KVCache, RotatingKVCache

    if type(entry) is KVCache:
        return BatchKVCache(list(padding))
    if type(entry) is RotatingKVCache and entry.keep == 0:
        return BatchRotatingKVCache(entry.max_size, list(padding))
    raise BackendError(f"batched decoding needs plain or sliding-window KV caches; this model uses "
                       f"{type(entry).__name__} (decode its prompts one by one)")


def batch_caches(caches: list, padding: list[int]) -> list:
    """Batch caches for every layer of `caches` (fresh, as make_cache gives them)."""
    return [batch_entry(c, padding) for c in caches]


def _is_batch(entry) -> bool:
    from mlx_lm.models.cache import BatchKVCache, BatchRotatingKVCache

    return type(entry) in (BatchKVCache, BatchRotatingKVCache)


def batched_cache(cache, attention_mask, position_ids, new: int, make_batch_cache):
    """The cache a forward of `new` tokens of a left-padded batch runs with.

    `cache`: None (a forward of whole rows: a temporary batch cache from `make_batch_cache(padding)`), a fresh cache
    from `make_cache()` (its layers become batch caches, in place), or one a previous batched forward made."""
    padding = left_padding(attention_mask, position_ids, new)
    past = np.asarray(attention_mask).shape[1] - new
    if cache is None:  # whole rows, or a position-wise model (its batch cache is None too)
        batch = make_batch_cache(padding)
        if batch is not None and past:
            raise BackendError(f"attention_mask covers {past} past token(s) but no cache was given")
        return batch
    if not isinstance(cache, list):
        raise BackendError(f"a batched forward needs a list of layer caches, got {type(cache).__name__}")
    if all(_is_batch(c) for c in cache):
        from mlx_lm.models.cache import BatchKVCache

        plain = next((c for c in cache if type(c) is BatchKVCache), None)  # a rotating one's counters wrap
        if plain is not None and (plain._idx != past or plain.left_padding.tolist() != padding):
            raise BackendError(f"attention_mask (padding {padding}, {past} past tokens) does not continue this batch "
                               f"cache (padding {plain.left_padding.tolist()}, {plain._idx} tokens)")
        return cache
    if any(c.offset for c in cache):
        raise BackendError("a batched forward needs a fresh cache (make_cache()) on its first step; this one already "
                           "holds tokens decoded without an attention mask")
    if past:
        raise BackendError(f"attention_mask covers {past} past token(s) but the cache is empty")
    cache[:] = batch_caches(cache, padding)
    return cache


@contextlib.contextmanager
def batch_shapes(model_type: str):
    """Turns mlx-lm's shape error for a model whose attention cannot broadcast a per-row mask (gemma2's grouped
    queries) into a BackendError that says so."""
    try:
        yield
    except ValueError as e:
        if "broadcast" not in str(e):
            raise
        raise BackendError(f"mlx-lm's {model_type} cannot decode a left-padded batch (its attention does not take a "
                           f"per-row mask: {e}); decode its prompts one by one") from None
