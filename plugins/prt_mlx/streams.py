"""The main thread's mlx streams, released before the interpreter shuts down.

Since mlx 0.32.2 mlx registers no exit-time cleanup of its own: a process that computed with mlx must call
`mx.clear_streams()` itself, or on Metal it aborts at exit (exit code 134) after its work is done. Every prt_mlx
module that computes imports this one.
"""

from __future__ import annotations

import atexit

import mlx.core as mx

atexit.register(mx.clear_streams)  # mlx >= 0.32.4, the oldest supported, has it
