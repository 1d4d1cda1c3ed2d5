"""The fields of a checkpoint's config.json that mlx-lm reads and transformers 5 no longer writes: rope's and the
number of experts.

transformers 5 keeps rope settings under `rope_parameters` ({"rope_theta", "rope_type", scaling fields}, or one
such dict per layer type, gemma3-style) and saves no top-level `rope_theta`; mlx-lm's model args read top-level
`rope_theta`, `rope_scaling`, `partial_rotary_factor`, `original_max_position_embeddings` (phi3) and
`rope_local_base_freq` (gemma3), and silently fall back to their own defaults when a field is absent (llama's
rope base 10000, whatever the checkpoint was trained with).

`legacy_fields` is the one place that maps the first to the second: the mlx backend passes it to mlx-lm as
overrides when it loads a checkpoint, and the torch backend writes it into every complete checkpoint it saves
(`add_legacy_fields`), so that plain `mlx_lm.load` reads those as transformers does. transformers reads the
fields back as before: a top-level `rope_theta` / `partial_rotary_factor` only fills in what `rope_parameters`
lacks, and `rope_scaling` is the flat `rope_parameters` itself (or null for the default rope).

Mixture-of-experts families (qwen2_moe, qwen3_moe, ...) name their expert count `num_local_experts` in
transformers 5, which saves no `num_experts`; mlx-lm's model args of those families need it (mixtral's read
`num_local_experts`, and ignore the copy).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# Fields of a (flat) `rope_parameters` dict that mlx-lm models read at the top level.
ROPE_KEYS_TOP_LEVEL = ("partial_rotary_factor", "original_max_position_embeddings")


def legacy_fields(config: dict) -> dict:
    """The top-level fields mlx-lm reads, derived from `rope_parameters` and `num_local_experts` (empty when the
    config has neither; older configs with top-level fields are left as they are). A `text_config` gets its own,
    merged into a copy."""
    out: dict = {}
    if config.get("num_experts") is None and isinstance(config.get("num_local_experts"), int):
        out["num_experts"] = config["num_local_experts"]
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and rope:
        if any(isinstance(v, dict) for v in rope.values()):  # per layer type (gemma3-style)
            local = rope.get("sliding_attention")
            if isinstance(local, dict) and "rope_theta" in local:
                out["rope_local_base_freq"] = local["rope_theta"]
            rope = rope.get("full_attention") or next(v for v in rope.values() if isinstance(v, dict))
        if "rope_theta" in rope:
            out["rope_theta"] = rope["rope_theta"]
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type == "default":
            out["rope_scaling"] = None
        else:
            scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
            out["rope_scaling"] = {**scaling, "rope_type": rope_type, "type": rope_type}
        for key in ROPE_KEYS_TOP_LEVEL:
            if key in rope and key not in config:
                out[key] = rope[key]
    text = config.get("text_config")
    if isinstance(text, dict):
        sub = legacy_fields(text)
        if sub:
            out["text_config"] = {**text, **sub}
    return out


def with_legacy_fields(config: dict) -> dict:
    """`config` with `legacy_fields` added (a new dict)."""
    return {**config, **legacy_fields(config)}


def add_legacy_fields(directory) -> dict:
    """Rewrite `directory`/config.json with `legacy_fields` added (atomically); returns the fields added."""
    file = Path(directory) / "config.json"
    config = json.loads(file.read_text(encoding="utf-8"))
    fields = legacy_fields(config)
    if fields:
        tmp = file.with_name(file.name + ".tmp")
        tmp.write_text(json.dumps(with_legacy_fields(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, file)
    return fields
