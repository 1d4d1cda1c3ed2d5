"""The `eagle2` model family for prtcore's backends, and runtime patches for machines without flash-attn.

- `config`: both config.json formats (`eagle_chat`, `eagle_2_5_vl`) → `Eagle2Config`;
- `vision`: tiling, pixel values, prompts, the `VisionEncoder`;
- `torch_model`, `torch_lm`, `torch_reward`: native torch model, base model, LoRA twins (and remote-code loading);
- `mlx_model`, `mlx_lm`, `mlx_reward`: the same on mlx;
- `patch`: `no_flash_attn`, the scoped patch for the official remote code; `plugin`: the hooks.
See docs/eagle2.md.
"""
