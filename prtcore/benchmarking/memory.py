"""Peak memory of a measured region: `PeakMeter`, the process's peak resident memory, which a backend's meter
(`Backend.memory_meter`: mlx's allocator, CUDA's) replaces where it has a better measure.

    with backend.memory_meter() as meter:
        ...                      # load, run (meter.reset_peak() leaves out what came before it)
    meter.bytes                  # peak over the level at entry
"""

from __future__ import annotations

import contextlib
import ctypes
import gc


def _proc_status(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


M_MMAP_THRESHOLD = -3


class HostPeak:
    """Peak resident memory of this process since `reset()` (Linux: VmHWM, reset through clear_refs).

    Within `exact()`, every allocation of 64 KiB or more is its own mapping, returned to the system when freed,
    so that memory freed by one measurement is not silently reused by the next (glibc otherwise keeps it).
    """

    available = _proc_status("VmHWM") is not None

    def exact(self):
        libc = _libc()

        @contextlib.contextmanager
        def context():
            if libc is not None:
                libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
            try:
                yield self
            finally:
                if libc is not None:
                    libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)

        return context()

    def reset(self) -> int:
        gc.collect()
        libc = _libc()
        if libc is not None:
            libc.malloc_trim(0)
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
        except OSError:
            pass
        return _proc_status("VmRSS") or 0

    def peak(self) -> int:
        return _proc_status("VmHWM") or 0


class PeakMeter:
    """Peak memory of one measured region over the level at entry (`bytes`, after the `with` block).

    This one measures the host's peak resident memory; a backend's subclass overrides `start` (clear caches,
    return the level at entry), `reset_peak`, `peak` and `stop`, and names its measure in `measure`.
    """

    measure = "peak RSS (VmHWM)"

    def __init__(self):
        self.bytes: int | None = None
        self.floor = 0

    def __enter__(self):
        gc.collect()
        self.floor = self.start()
        self.reset_peak()
        return self

    def __exit__(self, *exc):
        peak = self.peak()
        self.stop(*exc)
        self.bytes = max(0, peak - self.floor)
        return False

    # ------------------------------------------------------------------------------------------ the measure
    def start(self) -> int:
        """Begin measuring; the level at entry."""
        self.host = HostPeak()
        self.context = self.host.exact()
        self.context.__enter__()
        return self.host.reset()

    def reset_peak(self) -> None:
        """Forget the peak so far (what came before leaves the measurement)."""
        self.host.reset()

    def peak(self) -> int:
        return self.host.peak()

    def stop(self, *exc) -> None:
        self.context.__exit__(*exc)
