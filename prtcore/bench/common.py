"""Timing and memory helpers shared by the backends' benchmarks.

Timings are taken side by side: every path runs once per round, the order rotating from round to round, so
that load from other processes falls on every path alike; many short rounds interleave better than a few long
ones. A path's figure is the median of all its intervals between consecutive tokens, pooled over the rounds (the
prompt's prefill is left out), or of all its training steps.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from typing import Callable, Iterable, Iterator


def token_clock(steps: Iterable, token=lambda s: s) -> tuple[list[int], list[float]]:
    """(tokens, arrival times) of an iterator of generation steps."""
    tokens, times = [], []
    for step in steps:
        times.append(time.perf_counter())
        tokens.append(int(token(step)))
    return tokens, times


def per_token(times: list[float]) -> float | None:
    """Median interval between consecutive tokens (seconds), None with fewer than two tokens."""
    gaps = [b - a for a, b in zip(times, times[1:])]
    return statistics.median(gaps) if gaps else None


def side_by_side(paths: dict[str, Callable[..., tuple[list[int], list[float]]]], repeats: int, *,
                 warmup_tokens: int = 4, log=None) -> dict[str, dict]:
    """Run every path `repeats` times in rotating order; per path: tokens, per-round and median s/token.

    A path is called as `path()` (a full run) or `path(n)` (a warm-up run of n tokens, first, for each path).
    """
    names = list(paths)
    out = {n: {"tokens": None, "rounds": []} for n in names}
    if warmup_tokens:
        _warm_up(lambda n: paths[n](warmup_tokens), names, out, log)
    for r, n in _rounds(names, repeats, out):
        try:
            tokens, times = paths[n]()
        except Exception as e:
            out[n]["error"] = _error(e, log, n)
            continue
        out[n]["tokens"] = tokens
        value = per_token(times)
        if value is not None:
            out[n]["rounds"].append(value)
            out[n].setdefault("intervals", []).extend(b - a for a, b in zip(times, times[1:]))
        if log:
            log(f"  round {r + 1}/{repeats} {n}: {1 / value:.2f} tok/s" if value else f"  round {r + 1} {n}: -")
    for n in out:
        gaps = out[n].pop("intervals", [])
        out[n]["s_per_token"] = statistics.median(gaps) if gaps else None
        out[n]["tokens_per_s"] = 1.0 / out[n]["s_per_token"] if gaps else None
        if len(gaps) >= 4:
            q = statistics.quantiles(gaps, n=4)
            out[n]["iqr_s"] = [q[0], q[2]]
    return out


def steps_side_by_side(steps: dict[str, Callable[[], None]], repeats: int, per_round: int = 1, *,
                       warmup: bool = True, log=None) -> dict[str, dict]:
    """Time training-step callables (each synchronises itself) in rotating order; median seconds per step."""
    names = list(steps)
    out = {n: {"rounds": []} for n in names}
    if warmup:  # first-call allocations, compilation
        _warm_up(lambda n: steps[n](), names, out, log)
    for r, n in _rounds(names, repeats, out):
        for _ in range(per_round):
            tic = time.perf_counter()
            try:
                steps[n]()
            except Exception as e:
                out[n]["error"] = _error(e, log, n)
                break
            out[n]["rounds"].append(time.perf_counter() - tic)
        if log and out[n]["rounds"]:
            log(f"  round {r + 1}/{repeats} {n}: {out[n]['rounds'][-1] * 1e3:.1f} ms/step")
    for n in out:
        out[n]["s_per_step"] = statistics.median(out[n]["rounds"]) if out[n]["rounds"] else None
    return out


def _warm_up(call: Callable[[str], object], names: list[str], out: dict[str, dict], log) -> None:
    """`call(name)` once per name, untimed; a name that fails gets its error in `out` and leaves `names`."""
    for n in list(names):
        try:
            call(n)
        except Exception as e:  # one failing path (an unsupported model, a capture error) is reported, not fatal
            out[n]["error"] = _error(e, log, n)
            names.remove(n)


def _rounds(names: list[str], repeats: int, out: dict[str, dict]) -> Iterator[tuple[int, str]]:
    """(round, name) for `repeats` rounds, the order rotating; a garbage collection before each, failed names skipped."""
    for r in range(repeats if names else 0):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            gc.collect()
            if "error" in out[n]:
                continue
            yield r, n


def _error(e: BaseException, log, name: str) -> str:
    import traceback

    message = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if log:
        log(f"  {name} failed: {message}")
        log("".join(traceback.format_exception(type(e), e, e.__traceback__)[-4:]).rstrip())
    return message


# ------------------------------------------------------------------------------------------------ memory
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
        import contextlib

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
    """Peak memory of one measured region, for a backend: mlx's allocator, CUDA's, else the host's peak RSS.

        with PeakMeter(backend.name, device) as meter:
            ...                      # load, run (meter.reset_peak() leaves out what came before it)
        meter.bytes                  # peak over the level at entry
    """

    def __init__(self, backend: str, device: str | None = None):
        self.backend, self.device, self.bytes, self.measure = backend, device, None, None

    def _kind(self) -> str:
        if self.backend == "mlx":
            return "mlx"
        if self.backend == "torch":
            import torch

            if self.device is None:
                self.device = "cuda" if torch.cuda.is_available() else "cpu"
            if str(self.device).startswith("cuda"):
                return "cuda"
        return "host"

    def __enter__(self):
        gc.collect()
        self.kind = self._kind()
        if self.kind == "mlx":
            import mlx.core as mx

            mx.clear_cache()
            self.floor, self.measure = mx.get_active_memory(), "mx.get_peak_memory"
        elif self.kind == "cuda":
            import torch

            torch.cuda.empty_cache()
            self.floor, self.measure = torch.cuda.memory_allocated(self.device), "torch.cuda.max_memory_allocated"
        else:
            self.host = HostPeak()
            self.context = self.host.exact()
            self.context.__enter__()
            self.floor, self.measure = self.host.reset(), "peak RSS (VmHWM)"
        self.reset_peak()
        return self

    def reset_peak(self) -> None:
        if self.kind == "mlx":
            import mlx.core as mx

            mx.reset_peak_memory()
        elif self.kind == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.host.reset()

    def __exit__(self, *exc):
        if self.kind == "mlx":
            import mlx.core as mx

            peak = mx.get_peak_memory()
        elif self.kind == "cuda":
            import torch

            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = self.host.peak()
            self.context.__exit__(*exc)
        self.bytes = max(0, peak - self.floor)
        return False


def build_measured(builders: dict, backend: str, device, log) -> tuple[dict, dict, list]:
    """Build every training configuration in turn and measure its memory over its first two steps (weights,
    optimiser state, gradients, activations; over the floor before it was built).

    Each configuration stays alive afterwards (its step is timed next), so nothing it frees can be reused unseen
    by the next one. Returns (step functions, peak bytes, objects to keep alive); a failing build is logged and
    left out.
    """
    steps, memory, alive = {}, {}, []
    for name, build in builders.items():
        with PeakMeter(backend, None if device is None else str(device)) as meter:
            try:
                step, keep = build()
                meter.reset_peak()
                for _ in range(2):
                    step()
            except Exception as e:
                log(f"  {name} failed: {type(e).__name__}: {e}")
                continue
        memory[name] = meter.bytes
        steps[name] = step
        alive.append(keep)
        log(f"  memory {name}: {memory[name] / 1e6:.1f} MB")
    return steps, memory, alive


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b
