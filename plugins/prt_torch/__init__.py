"""The `torch` backend of prtcore: PyTorch, transformers, peft and accelerate.

Names are imported lazily (the plugin registration must not import torch):

    from prt_torch import TorchBackend, PRTTrainer, PRTGenerator, PRTLogitsProcessor, evaluate_on_targets
"""

_EXPORTS = {
    "TorchBackend": "prt_torch.backend",
    "TorchBaseLM": "prt_torch.base",
    "TorchNamespace": "prt_torch.namespace",
    "TorchRewardModel": "prt_torch.rewards",
    "PRTTrainer": "prt_torch.trainer",
    "PRTCollator": "prt_torch.trainer",
    "training_arguments": "prt_torch.trainer",
    "PRTGenerator": "prt_torch.generation",
    "PRTLogitsProcessor": "prt_torch.generation",
    "Generation": "prt_torch.generation",
    "evaluate_on_targets": "prt_torch.swap",
    "count_parameters": "prt_torch.counting",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'prt_torch' has no attribute {name!r}")
