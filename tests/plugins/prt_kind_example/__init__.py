"""An example third-party reward kind, "mlp", added from outside prtcore exactly as a plugin package would add it.

    logits = silu(hidden @ fc.weightᵀ + fc.bias) @ head.weightᵀ       fc (d_model, H) + (d_model,), head (V, d_model)

A two-layer MLP head over the frozen source's last hidden states, its width RewardConfig.d_model. The package holds:
- prt_kind_example.kind: the RewardKind (name, description, settings, tensor shapes, NumPy reference forward, and
  its mlx and torch implementations as "module:attribute" strings);
- prt_kind_example.plugin: the plugin module (hook `register_reward_kinds`), what an entry point in group
  "prtcore" would name (`[project.entry-points.prtcore] mlp = "prt_kind_example.plugin"`);
- prt_kind_example.mlx_mlp and .torch_mlp: the network of each backend, imported only when a reward of the kind is
  made on that backend.
"""
