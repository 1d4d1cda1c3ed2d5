"""The `eagle2` model family for prtcore's backends, and runtime patches for machines without flash-attn."""
