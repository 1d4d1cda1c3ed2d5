"""Hypothesis strategies for logits of random shapes and magnitudes."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

SCALES = (1e-3, 1.0, 30.0, 1e3, 1e4)


@st.composite
def logits(draw, shape, *, max_abs=1e4, dtype=np.float64):
    """Finite logits of `shape`; magnitudes range from tiny to `max_abs`, mixed within one tensor."""
    scale = draw(st.sampled_from([s for s in SCALES if s <= max_abs]))
    unit = draw(hnp.arrays(np.float64, shape, elements=st.floats(-1.0, 1.0, allow_nan=False, width=64)))
    # Occasionally a few entries at the full magnitude, so rows mix small and huge values.
    big = draw(hnp.arrays(np.bool_, shape, elements=st.booleans()))
    out = unit * scale
    if draw(st.booleans()):
        out = np.where(big & (np.abs(unit) > 0.9), np.sign(unit) * max_abs, out)
    return out.astype(dtype)


@st.composite
def shape_btv(draw, max_b=3, max_t=4, min_v=2, max_v=40):
    return (draw(st.integers(1, max_b)), draw(st.integers(1, max_t)), draw(st.integers(min_v, max_v)))


@st.composite
def neg_inf_mask(draw, shape, keep=None):
    """Boolean mask of entries to set to −inf: never a whole row, never where `keep` (bool array) is True."""
    mask = draw(hnp.arrays(np.bool_, shape, elements=st.sampled_from([False, False, False, True])))
    if keep is not None:
        mask &= ~keep
    # Keep at least one finite entry per row: the row's first non-kept column stays finite if all are masked.
    full = mask.all(axis=-1)
    mask[..., 0] = np.where(full, False, mask[..., 0])
    return mask


def row_constants(draw, shape, max_abs=1e4):
    """One constant per row (the last axis broadcast), of any magnitude."""
    return draw(hnp.arrays(np.float64, shape[:-1] + (1,), elements=st.floats(-max_abs, max_abs, allow_nan=False)))
