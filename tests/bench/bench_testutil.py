"""Shared settings of the performance tests (a module name of its own: `conftest` is ambiguous across folders)."""

from prtcore.apps.bench import preset

SMALL = preset("small")
REWARD = dict(d_model=32, num_heads=4, ffn_dim=64)
KINDS = ["twin", "linear", "transformer"]
