"""What a backend's benchmark is made of (`Backend.benchmark`, capability "bench"; `prt bench` runs it).

    config   ModelShape, BenchConfig (what is measured) and the RewardConfig a run implies
    models   the tokenizer and transformers configs random models of a shape are built from; prompts, batches
    paths    backend-neutral generation paths: prtcore's decoding loop over any Generative, a reward alone
    timing   side-by-side timing of generation paths and training steps; memory measured while building
    memory   PeakMeter (peak resident memory), which a backend's `memory_meter` refines
    threads  the thread settings a CPU measurement ran under, for the tables

A backend's plugin owns its measurement (prt_mlx.bench, prt_torch.bench) and builds it from these pieces; the
application (prtcore.apps.bench) runs `backend.benchmark(config, workdir=..., log=...)` and computes the ratios.
Nothing here imports mlx or torch.
"""

from .config import BenchConfig, ModelShape, reward_config
from .memory import PeakMeter

__all__ = ["BenchConfig", "ModelShape", "PeakMeter", "reward_config"]
