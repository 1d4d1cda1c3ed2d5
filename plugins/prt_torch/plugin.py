"""Registers the `torch` backend. Imports nothing from torch until the backend is used."""

import prtcore


@prtcore.hookimpl
def register_backends(register):
    register("torch", "prt_torch.backend:TorchBackend", array_module="torch", extra="torch",
             requires=("torch", "transformers", "peft"), description="PyTorch with transformers and peft",
             reward_kinds={"linear": "prt_torch.rewards:LINEAR", "transformer": "prt_torch.rewards:TRANSFORMER",
                           "twin": "prt_torch.rewards:TWIN"})
