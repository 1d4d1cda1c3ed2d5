"""The plugin module named by the entry point: registers backend "numpy" (imports nothing heavy)."""

import prtcore


@prtcore.hookimpl
def register_backends(register):
    register("numpy", "prt_numpy.backend:NumpyBackend", array_module="numpy", extra="numpy-example",
             requires=("numpy", "safetensors", "tokenizers"),
             description="NumPy example backend (llama-family bases, linear/transformer rewards)")
