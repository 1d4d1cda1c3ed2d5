"""What a conformance check measures: `Measure`, a figure that must stay within a limit, and the comparisons that
make one (arrays, losses, gradients).

Every measurement is "figure ≤ limit" (a cosine similarity is measured as 1 − cos). Tolerances are float32's:
logits and hidden states 1e-4 × max(1, their scale); log-probs and probabilities 1e-4 between backends,
1e-5 against NumPy on the same inputs; the PRT loss 1e-5 × max(1, |loss|); gradients 1 − cos ≤ 1e-4 and
norms within 1e-3 of each other.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

TOL_LOGITS = 1e-4       # × max(1, scale)
TOL_LOGPROBS = 1e-4     # absolute, between backends
TOL_REFERENCE = 1e-5    # absolute, a backend against NumPy on its own inputs
TOL_LOSS = 1e-5         # × max(1, |loss|)
TOL_COSINE = 1e-4       # 1 − cosine similarity
TOL_NORM = 1e-3         # relative difference of gradient norms


# ---------------------------------------------------------------------------------------------- measures
@attrs.frozen
class Measure:
    """One comparison: `figure` must stay within `limit`."""

    figure: float
    limit: float
    where: str

    @property
    def ok(self) -> bool:
        return math.isfinite(self.figure) and self.figure <= self.limit


# ---------------------------------------------------------------------------------------------- comparisons
def np64(backend, x) -> np.ndarray:
    return np.asarray(backend.to_numpy(x), dtype=np.float64)


def compare(got, want, *, what: str, atol: float, scaled: bool = True) -> Measure:
    """Max |got − want| against atol (× max(1, max|want|) when `scaled`); where names the worst element."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return Measure(math.inf, atol, f"{what}: shapes differ, {got.shape} vs {want.shape}")
    finite_got, finite_want = np.isfinite(got), np.isfinite(want)
    if not np.array_equal(finite_got, finite_want) or not np.array_equal(got[~finite_got], want[~finite_want]):
        index = tuple(int(i) for i in np.argwhere((finite_got != finite_want) | (~finite_got & (got != want)))[0])
        return Measure(math.inf, atol, f"{what}{list(index)}: {got[index]} vs {want[index]}")
    if got.size == 0:
        return Measure(0.0, atol, f"{what}: empty")
    diff = np.where(finite_want, np.abs(got - want), 0.0)
    index = np.unravel_index(int(np.argmax(diff)), diff.shape)
    scale = float(np.max(np.abs(np.where(finite_want, want, 0.0))))
    limit = atol * max(1.0, scale) if scaled else atol
    detail = f"{what}{list(int(i) for i in index)}: {got[index]:.6g} vs {want[index]:.6g}"
    if scaled:
        detail += f" (scale {scale:.3g}, {diff[index] / max(scale, 1e-30):.2e} of it)"
    return Measure(float(diff[index]), limit, detail)


def compare_loss(got: float, want: float, what: str) -> Measure:
    return Measure(abs(got - want), TOL_LOSS * max(1.0, abs(want)), f"{what}: {got:.8g} vs {want:.8g}")


def compare_gradients(got: dict, want: dict, what: str) -> list[Measure]:
    """Per tensor 1 − cos (≤ 1e-4) and the relative difference of the norms (≤ 1e-3); names and shapes must match."""
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing or extra:
        name = (missing or extra)[0]
        return [Measure(math.inf, TOL_COSINE, f"{what}: tensor {name!r} {'missing' if missing else 'unexpected'} "
                                               f"({len(missing)} missing, {len(extra)} unexpected)")]
    out = []
    for name in sorted(want):
        a, b = np.asarray(got[name], dtype=np.float64), np.asarray(want[name], dtype=np.float64)
        if a.shape != b.shape:
            out.append(Measure(math.inf, TOL_COSINE, f"{what}: {name} shapes differ, {a.shape} vs {b.shape}"))
            continue
        na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        if na == 0.0 and nb == 0.0:
            out.append(Measure(0.0, TOL_COSINE, f"{what}: {name} is zero in both"))
            continue
        if na == 0.0 or nb == 0.0:
            out.append(Measure(math.inf, TOL_COSINE, f"{what}: {name} is zero on one side only (norms {na:.3g}, {nb:.3g})"))
            continue
        cos = float(np.sum(a * b) / (na * nb))
        out.append(Measure(1.0 - cos, TOL_COSINE, f"{what}: 1 - cos of {name} (cos {cos:.8f})"))
        out.append(Measure(abs(na / nb - 1.0), TOL_NORM, f"{what}: norm of {name}, {na:.6g} vs {nb:.6g}"))
    return out
