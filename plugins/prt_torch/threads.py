"""How many CPU threads torch's operators use, chosen once when the torch backend loads (docs/performance.md,
"CPU threads").

torch's default is one intra-op thread per physical core. Its OpenMP threads meet at a barrier after every
parallel operator and spin there while they wait; when other processes hold some of the cores, a waiting thread
spins on a core the descheduled one needs, and small models slow down several times over. The rule (`rule`) runs
half as many threads as there are available CPUs, at least 1 and never more than torch's default.

Explicit settings win, in this order: `PRT_TORCH_THREADS` (a count, or `torch` to keep torch's own choice), then
`OMP_NUM_THREADS` / `MKL_NUM_THREADS`, then a `torch.set_num_threads` made before the backend loaded (seen as a
count other than torch's default). Only the CPU's thread count changes: nothing here touches a GPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from prtcore.errors import ConfigError

THREADS_VARIABLE = "PRT_TORCH_THREADS"
KEEP_TORCH = "torch"  # PRT_TORCH_THREADS=torch: leave torch's default alone
EXPLICIT_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # read by torch (and OpenMP, MKL) themselves
CPU_TOPOLOGY = Path("/sys/devices/system/cpu")


@attrs.frozen
class Choice:
    """What `choose` decided: `threads` to set (None: leave torch's count as it is), and why, in words."""

    threads: int | None
    reason: str


def rule(cpus: int, default: int) -> int:
    """Half of the `cpus` this process may run on, at least 1, at most torch's `default`."""
    return max(1, min(default, cpus // 2))


def available_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int], topology: Path = CPU_TOPOLOGY) -> int:
    """How many physical cores `cpus` span (hyperthreads of one core count once), from Linux's sysfs topology;
    len(cpus) where the topology cannot be read."""
    cores = set()
    for cpu in cpus:
        folder = topology / f"cpu{cpu}" / "topology"
        try:
            cores.add(((folder / "physical_package_id").read_text().strip(), (folder / "core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


def choose(environ, current: int, cpus: int, default: int) -> Choice:
    """The decision for a process whose torch runs `current` threads, with `cpus` available CPUs, where torch's
    default is `default` threads. `environ` is the process's environment."""
    given = environ.get(THREADS_VARIABLE, "").strip()
    if given:
        if given == KEEP_TORCH:
            return Choice(None, f"{THREADS_VARIABLE}={KEEP_TORCH}")
        if not given.isdigit() or int(given) < 1:
            raise ConfigError(f"{THREADS_VARIABLE}={given!r}: must be a positive whole number or {KEEP_TORCH!r}")
        return Choice(int(given), f"{THREADS_VARIABLE}={given}")
    for name in EXPLICIT_VARIABLES:
        if environ.get(name, "").strip():
            return Choice(None, f"{name}={environ[name].strip()}")
    if current != default:
        return Choice(None, "torch.set_num_threads")
    return Choice(rule(cpus, default), f"half of {cpus} CPUs")


_applied: Choice | None = None


def apply() -> Choice:
    """Apply the decision to torch, once per process (later calls return the first decision)."""
    global _applied
    if _applied is None:
        import torch

        cpus = available_cpus()
        choice = choose(os.environ, torch.get_num_threads(), len(cpus), physical_cores(cpus))
        if choice.threads is not None and choice.threads != torch.get_num_threads():
            torch.set_num_threads(choice.threads)
        _applied = choice
    return _applied


def reason() -> str:
    """Why torch runs the threads it runs (`prt env`)."""
    return _applied.reason if _applied is not None else "torch's default: the torch backend has not loaded on the CPU"
