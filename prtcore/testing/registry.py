"""The registry of conformance checks (`check` adds one to CHECKS) and `run_check`, which runs one check on one
subject and gives a CheckResult:

    status   pass | fail | error | skip | xfail (a declared known failure) | xpass (declared, but it passed)
    figure   the worst measurement, `limit` what it had to stay within, `where` what and where it is

The modes of a check and the subjects they give are described in prtcore.testing.checks.
"""

from __future__ import annotations

import time
import traceback
from typing import Callable, Sequence

import attrs

from .workspace import LoadFailure, Skip, Workspace

STATUSES = ("pass", "fail", "error", "xpass", "xfail", "skip")
FAILING = ("fail", "error", "xpass")


# ---------------------------------------------------------------------------------------------- records
@attrs.frozen
class CheckResult:
    family: str
    check: str
    subject: str
    status: str
    figure: float | None = None
    limit: float | None = None
    where: str = ""
    reason: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status in FAILING

    def describe(self) -> str:
        """One line: the figure against its limit and where, or the reason."""
        parts = []
        if self.figure is not None:
            parts.append(f"{_fmt(self.figure)} (limit {_fmt(self.limit)})")
        if self.where:
            parts.append(self.where)
        if self.reason:
            parts.append(self.reason)
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return attrs.asdict(self)


def _fmt(x) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.2e}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.4g}"


# ---------------------------------------------------------------------------------------------- registry
@attrs.frozen
class Check:
    name: str
    doc: str
    modes: dict  # mode -> function(workspace, *backend names) -> list[Measure]


CHECKS: dict[str, Check] = {}


def check(name: str, doc: str, **modes: Callable):
    CHECKS[name] = Check(name, doc, modes)


def subjects(check_name: str, backends: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(mode, backend names) for every subject of a check among `backends` (in their order)."""
    out = []
    for mode in CHECKS[check_name].modes:
        if mode in ("reference", "self"):
            out += [(mode, (b,)) for b in backends]
        elif mode == "pair":
            out += [(mode, (a, b)) for i, a in enumerate(backends) for b in backends[i + 1:]]
        elif mode == "ordered":
            out += [(mode, (a, b)) for a in backends for b in backends if a != b]
    return out


def subject_label(mode: str, names: Sequence[str]) -> str:
    if len(names) == 1:
        return names[0]
    return f"{names[0]}>{names[1]}" if mode == "ordered" else f"{names[0]}/{names[1]}"


def run_check(ws: Workspace, check_name: str, mode: str, names: Sequence[str], expected=None) -> CheckResult:
    """Run one check on one subject; never raises (an exception is an "error" result with where it happened).

    `expected`: a prtcore.testing.expected.ExpectedFailures (or None) consulted for known failures.
    """
    label = subject_label(mode, names)
    start = time.perf_counter()
    figure = limit = None
    where = reason = ""
    try:
        for name in names:
            ws.supports(name)
        measures = CHECKS[check_name].modes[mode](ws, *names)
        if not measures:
            raise RuntimeError(f"check {check_name!r} measured nothing")
        worst = max(measures, key=lambda m: (not m.ok, m.figure / m.limit if m.limit else m.figure))
        figure, limit, where = float(worst.figure), float(worst.limit), worst.where
        status = "pass" if worst.ok else "fail"
    except Skip as e:
        status, reason = "skip", str(e)
    except LoadFailure as e:
        status, reason = "error", str(e)
    except Exception as e:  # a backend's exception is a finding: report it with where it was raised
        status = "error"
        frames = traceback.extract_tb(e.__traceback__)
        if frames:
            where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}"
        first = str(e).splitlines()[0] if str(e) else ""
        reason = f"{type(e).__name__}: {first}"
    except SystemExit as e:
        status, reason = "error", f"SystemExit({e.code}) raised inside the check"
    if expected is not None:
        known = expected.reason_for(ws.family, check_name, label)
        if known is not None:
            if status in ("fail", "error"):
                status, reason = "xfail", f"expected failure: {known}" + (f" ({reason})" if reason else "")
            elif status == "pass":
                status, reason = "xpass", f"declared as an expected failure ({known}) but passed: remove the entry"
    return CheckResult(ws.label, check_name, label, status, figure, limit, where, reason,
                       round(time.perf_counter() - start, 3))
