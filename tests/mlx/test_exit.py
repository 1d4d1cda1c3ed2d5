"""A process that computed with mlx releases its streams at exit (mlx >= 0.32.2 leaves that to the program)."""

from __future__ import annotations

import subprocess
import sys

MLX_WORK = """
import atexit
import mlx.core as mx
{patch}
from prtcore import get_backend
mx.eval(get_backend("mlx").xp.log_softmax(mx.array([[0.5, 1.5, 2.5]]), axis=-1))
{end}
"""


def run(patch: str = "", end: str = "print('done')") -> str:
    done = subprocess.run([sys.executable, "-c", MLX_WORK.format(patch=patch, end=end)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_the_main_threads_streams_are_released_at_exit():
    calls = run(patch="calls = []\nmx.clear_streams = lambda: calls.append('cleared')",
                end="assert calls == [], calls\natexit._run_exitfuncs()\nprint(calls)")
    assert calls == "['cleared']"


def test_a_real_exit_after_mlx_work_is_clean():
    assert run() == "done"
