"""The thread settings a CPU measurement ran under, for the tables (`prt bench`): the environment variables that
cap the threads of OpenMP, OpenBLAS and MKL, and what a backend reports of its own (prt_torch.bench:
torch.get_num_threads(); prt_mlx.bench: the BLAS mlx calls and its threads)."""

from __future__ import annotations

import ctypes
import os

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_environment() -> dict:
    """The thread variables that are set, as set."""
    return {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ}


def loaded_openblas_threads() -> int | None:
    """openblas_get_num_threads() of an OpenBLAS loaded into this process (e.g. preloaded for mlx); None without."""
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            if "libopenblas" not in maps.read():
                return None
        return int(ctypes.CDLL(None).openblas_get_num_threads())
    except (OSError, AttributeError):
        return None


def describe(threads: dict) -> str:
    """One line for a table: `{"torch.get_num_threads()": 1, "OMP_NUM_THREADS": "1"}` → 'torch.get_num_threads()=1,
    OMP_NUM_THREADS=1'."""
    return ", ".join(f"{k}={v}" for k, v in threads.items()) or "defaults"
