"""The `mlx` backend of prtcore: mlx, mlx-lm (text) and mlx-vlm (vision)."""
