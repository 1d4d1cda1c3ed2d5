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


def test_the_serve_engine_thread_releases_its_own_streams_as_it_ends(monkeypatch):
    import threading

    import mlx.core as mx

    from prtcore import get_backend
    from prtcore.serve.engine import Engine

    cleared = []
    monkeypatch.setattr(mx, "clear_streams", lambda: cleared.append(threading.current_thread().name))
    engine = Engine(end_thread=get_backend("mlx").end_thread)
    engine.start()
    assert cleared == []
    engine.stop()
    assert cleared == ["prt-serve-engine"]


def test_a_thread_that_computed_with_mlx_ends_cleanly():
    work = ("import threading\nt = threading.Thread(target=lambda: (mx.eval(mx.ones((4, 4)) @ mx.ones((4, 4))), "
            "get_backend('mlx').end_thread()))\nt.start(); t.join()\nprint('done')")
    assert run(end=work) == "done"
