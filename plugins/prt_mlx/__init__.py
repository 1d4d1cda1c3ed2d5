"""The `mlx` backend of prtcore: mlx, mlx-lm (text) and mlx-vlm (vision).

`prtcore.get_backend("mlx")` gives `prt_mlx.backend.MLXBackend`. Importing this package imports no mlx until
one of the names below is used.
"""

__all__ = ["MLXBackend", "PRTLogitsProcessor"]


def __getattr__(name):
    if name == "MLXBackend":
        from .backend import MLXBackend

        return MLXBackend
    if name == "PRTLogitsProcessor":
        from .generation import PRTLogitsProcessor

        return PRTLogitsProcessor
    raise AttributeError(f"module 'prt_mlx' has no attribute {name!r}")
