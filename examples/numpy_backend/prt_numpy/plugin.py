"""The plugin module named by the entry point: registers backend "numpy" (imports nothing heavy)."""

import prtcore


@prtcore.hookimpl
def register_backends(register):
    register("numpy", "prt_numpy.backend:NumpyBackend", array_module="numpy", extra="numpy-example",
             requires=("numpy", "safetensors", "tokenizers"),
             description="NumPy example backend (llama-family bases, rewards stored as tensors, full twins)",
             reward_kinds={"twin": "prt_numpy.backend:TWIN"})
