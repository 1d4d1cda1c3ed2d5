"""The `torch` backend of prtcore: PyTorch, transformers, peft and accelerate."""
