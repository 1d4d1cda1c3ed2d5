"""Registers the `mlx` backend. Imports nothing from mlx until the backend is used."""

import prtcore


@prtcore.hookimpl
def register_backends(register):
    register("mlx", "prt_mlx.backend:MLXBackend", array_module="mlx.core", extra="mlx",
             requires=("mlx", "mlx_lm"), description="Apple MLX with mlx-lm and mlx-vlm",
             reward_kinds={"linear": "prt_mlx.rewards:LINEAR", "transformer": "prt_mlx.rewards:TRANSFORMER",
                           "twin": "prt_mlx.rewards:TWIN"})
