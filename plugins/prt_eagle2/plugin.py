"""Registers the Eagle2 model family."""

import prtcore
from prtcore.plugins import ModelFamily


@prtcore.hookimpl
def register_model_families(register):
    register(ModelFamily(
        name="eagle2",
        model_types=("eagle_chat", "eagle_2_5_vl"),
        loaders={},
        description="NVIDIA Eagle2 vision-language models (SigLIP + pixel shuffle + MLP + Qwen2)",
    ))
