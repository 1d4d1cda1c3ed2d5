"""Timing helpers shared by the backends' benchmarks (`Backend.benchmark`).

Timings are taken side by side: every path runs once per round, the order rotating from round to round, so
that load from other processes falls on every path alike; many short rounds interleave better than a few long
ones. A path's figure is the median of all its intervals between consecutive tokens, pooled over the rounds (the
prompt's prefill is left out), or of all its training steps.
"""

from __future__ import annotations

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
    """Time training-step callables (each synchronises itself) in rotating order; median seconds per step, of the
    wall clock (`s_per_step`) and of the process's CPU time (`cpu_s_per_step`: all its threads; with one thread
    per process it is the step's own work, whatever else shares the cores)."""
    names = list(steps)
    out = {n: {"rounds": [], "cpu_rounds": []} for n in names}
    if warmup:  # first-call allocations, compilation
        _warm_up(lambda n: steps[n](), names, out, log)
    for r, n in _rounds(names, repeats, out):
        for _ in range(per_round):
            tic, cpu = time.perf_counter(), time.process_time()
            try:
                steps[n]()
            except Exception as e:
                out[n]["error"] = _error(e, log, n)
                break
            out[n]["rounds"].append(time.perf_counter() - tic)
            out[n]["cpu_rounds"].append(time.process_time() - cpu)
        if log and out[n]["rounds"]:
            log(f"  round {r + 1}/{repeats} {n}: {out[n]['rounds'][-1] * 1e3:.1f} ms/step "
                f"({out[n]['cpu_rounds'][-1] * 1e3:.1f} ms CPU)")
    for n in out:
        out[n]["s_per_step"] = statistics.median(out[n]["rounds"]) if out[n]["rounds"] else None
        out[n]["cpu_s_per_step"] = statistics.median(out[n]["cpu_rounds"]) if out[n]["cpu_rounds"] else None
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


def build_measured(builders: dict, meter, log, *, isolated: Callable[[], None] | None = None
                   ) -> tuple[dict, dict, list]:
    """Build every training configuration in turn and measure its memory over its first two steps (weights,
    optimiser state, gradients, activations; over the floor before it was built).

    `meter()` gives a new prtcore.benchmarking.memory.PeakMeter (`backend.memory_meter(device)`). Each
    configuration stays alive afterwards (its step is timed next), so nothing it frees can be reused unseen
    by the next one. With `isolated` (for the process's resident memory, which the caches of the libraries a
    configuration calls make depend on what ran before) each configuration is measured in a child process forked
    from the same state, before any is built here; `isolated()` runs first in the child (e.g. torch down to one
    thread: an OpenMP thread pool does not survive a fork). Returns (step functions, peak bytes, objects to keep
    alive); a failing build is logged and left out.
    """
    steps, memory, alive = {}, {}, []
    if isolated:
        memory = {name: forked(lambda b=build: _measure(b, meter)[0], setup=isolated)
                  for name, build in builders.items()}
    for name, build in builders.items():
        if isinstance(memory.get(name), str):  # the child's error
            log(f"  {name} failed: {memory.pop(name)}")
            continue
        try:
            if isolated:
                step, keep = _first_steps(build())  # the same first steps as a measured build
            else:
                memory[name], step, keep = _measure(build, meter)
        except Exception as e:
            log(f"  {name} failed: {type(e).__name__}: {e}")
            continue
        steps[name] = step
        alive.append(keep)
        log(f"  memory {name}: {memory[name] / 1e6:.1f} MB")
    return steps, memory, alive


def _first_steps(built):
    """(step, keep) of a built configuration, after its first two steps."""
    step, _ = built
    for _ in range(2):
        step()
    return built


def _measure(build, meter):
    """(peak bytes over the floor of building and two steps, step, what to keep alive)."""
    with meter() as measured:
        built = build()
        measured.reset_peak()
        step, keep = _first_steps(built)
    return measured.bytes, step, keep


def forked(fn, setup=None):
    """`fn()` computed in a child process forked from this one (POSIX) after `setup()`, or the child's error as a
    string."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child():
        try:
            if setup is not None:
                setup()
            send.send(fn())
        except BaseException as e:
            send.send(f"{type(e).__name__}: {e}")

    process = context.Process(target=child, daemon=True)
    process.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:  # the child died without answering (killed, out of memory)
        result = None
    process.join()
    return f"the measuring process ended with exit code {process.exitcode}" if result is None else result


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def step_entries(times: dict, memory: dict) -> dict:
    """The "steps" of a training result: per configuration, wall and CPU seconds per step (medians), the rounds,
    the peak bytes measured while it was built (`build_measured`), and its error if it failed."""
    return {n: {"s_per_step": t["s_per_step"], "cpu_s_per_step": t.get("cpu_s_per_step"), "rounds": t["rounds"],
                "peak_bytes": memory.get(n), **({"error": t["error"]} if "error" in t else {})}
            for n, t in times.items()}
