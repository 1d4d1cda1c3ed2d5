"""The presets of `prt bench`: model shapes and run settings for the CPU, the tests and the GPU check."""

from __future__ import annotations

from ...benchmarking.config import BenchConfig, ModelShape
from ...errors import ConfigError

PRESETS = {
    # default on CPU: a ~250M-parameter target, a source with a quarter of its compute per token
    "cpu": dict(target=ModelShape.of(1024, 16), source=ModelShape.of(512, 12), vocab=32000, prompt_tokens=16,
                max_tokens=12, repeats=5, train_batch=2, train_seq=64, train_steps=1, train_repeats=3),
    # runs in seconds (tests)
    "small": dict(target=ModelShape.of(128, 2, heads=4, kv_heads=2), source=ModelShape.of(64, 2, heads=4, kv_heads=2),
                  vocab=512, prompt_tokens=8, max_tokens=8, repeats=1, train_batch=2, train_seq=32, train_steps=1,
                  train_repeats=1,
                  lora_layers=2, reward_d_model=32, threads=1),
    # the GPU check: a TinyLlama-1.1B-shaped target and a ~0.25B source, bfloat16; sized to run in about 3 minutes
    "tinyllama": dict(target=ModelShape(hidden=2048, layers=22, ffn=5632, heads=32, kv_heads=4),
                      source=ModelShape(hidden=1024, layers=16, ffn=2816, heads=16, kv_heads=4), vocab=32000,
                      prompt_tokens=32, max_tokens=64, repeats=2, train_batch=4, train_seq=256, train_steps=3,
                      train_repeats=2,
                      dtype="bfloat16",
                      paths=("target.native", "reward.native", "target.static", "reward.static", "prt.loop",
                             "prt.pipelined", "prt.static", "eft.loop", "eft.static")),
    # training at a 1B shape (Llama-3.2-1B's blocks) with a 152k vocabulary, bfloat16, LoRA on every block (GPU)
    "gpu-1b": dict(target=ModelShape(hidden=2048, layers=16, ffn=8192, heads=32, kv_heads=8),
                   source=ModelShape(hidden=2048, layers=16, ffn=8192, heads=32, kv_heads=8), vocab=152000,
                   train_batch=4, train_seq=512, train_steps=3, train_repeats=3, lora_layers=16, dtype="bfloat16",
                   train_rewards=("twin", "transformer"), generation=False),
}


def preset(name: str, **changes) -> BenchConfig:
    if name not in PRESETS:
        raise ConfigError(f"bench preset {name!r}: must be one of {', '.join(PRESETS)}")
    return BenchConfig(**{**PRESETS[name], **{k: v for k, v in changes.items() if v is not None}})
