"""A process that computed with mlx releases its streams at exit (mlx >= 0.32.2 leaves that to the program)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import atexit
import mlx.core as mx
calls = []
mx.clear_streams = lambda: calls.append("cleared")
from prtcore import get_backend
namespace = get_backend("mlx").xp
mx.eval(namespace.log_softmax(mx.array([[0.5, 1.5, 2.5]]), axis=-1))
assert calls == [], calls
atexit._run_exitfuncs()
print(calls)
"""


def test_the_main_threads_streams_are_released_at_exit():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['cleared']"


def test_a_real_exit_after_mlx_work_is_clean():
    script = SCRIPT.replace('mx.clear_streams = lambda: calls.append("cleared")\n', "").replace(
        "atexit._run_exitfuncs()\nprint(calls)", "print('done')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "done"), done.stderr[-2000:]
