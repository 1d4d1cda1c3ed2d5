"""`TorchBackend`: prtcore's backend over PyTorch, transformers and peft."""

from __future__ import annotations

from pathlib import Path

import torch

from prtcore.artifacts import RewardArtifact
from prtcore.config import RewardConfig
from prtcore.errors import ConfigError
from prtcore.hub import accepts_hub_ids
from prtcore.model import Backend
from prtcore.plugins import before_model_load, family_for_model_type
from prtcore.vision import is_vlm_config

from . import base, counting, rewards, threads, vlm
from .loss import fused_prt_loss, gradient
from .namespace import TorchNamespace


class TorchBackend(Backend):
    """Loads transformers checkpoints as frozen bases and builds, trains (PRTTrainer) and loads rewards."""

    name = "torch"
    capabilities = frozenset({"load", "train", "train_sft", "generate", "lora", "batched", "bench", "count_parameters",
                              "reward_gradients"})
    prt_loss = staticmethod(fused_prt_loss)  # what training minimises (prt_torch.loss)
    gradient = staticmethod(gradient)

    def __init__(self):
        self.xp = TorchNamespace(base.default_device())
        if self.xp.device.type == "cpu":
            threads.apply()  # CPU threads that survive a busy machine (prt_torch.threads)

    @property
    def device(self) -> torch.device:
        """Where new arrays go: the device of the most recently loaded base model (else cuda, mps, cpu)."""
        return self.xp.device

    @device.setter
    def device(self, value) -> None:
        self.xp.device = torch.device(value)

    @staticmethod
    def default_dtype(device) -> torch.dtype:
        return base.resolve_dtype(None, torch.device(device))

    @accepts_hub_ids  # `path` may be a Hugging Face Hub id, org/name[@revision] (prtcore.hub)
    def load_base(self, path, **options) -> base.TorchBaseLM:
        """A frozen base from a local checkpoint directory or a Hub id.

        Options: `device` (default cuda, then mps, then cpu), `dtype` (default float32 on CPU, bfloat16 on a GPU;
        "auto" keeps the checkpoint's), `attn_implementation` ("sdpa" default, "eager"; flash-attention only when
        installed and asked for), `trust_remote_code` (default False).

        A LoRA adapter directory (PEFT's or mlx-lm's layout) loads as its base with the adapter merged in; option
        `adapter_base` names that base (default: the one the adapter config records).
        """
        from prtcore.training import is_adapter_dir

        adapter_base = options.pop("adapter_base", None)
        if is_adapter_dir(path):
            from .sft import load_adapted

            return load_adapted(self, path, adapter_base, **options)
        config = base.read_config(Path(path))
        if is_vlm_config(config) and family_for_model_type(config.get("model_type", "")) is None:
            unknown = sorted(set(options) - set(base.LOAD_OPTIONS))
            if unknown:
                raise ConfigError(f"load_base: unknown option {unknown[0]!r} (known: {', '.join(base.LOAD_OPTIONS)})")
            with before_model_load(Path(path), "torch", options):
                return vlm.load_vlm(self, path, config, **options)
        return base.load_base(self, path, **options)

    def create_reward(self, config: RewardConfig, source: base.TorchBaseLM, *, seed: int = 0) -> rewards.TorchRewardModel:
        own = source.create_reward(config, seed=seed)  # a model family's own rewards (prt_eagle2)
        if own is not None:
            return own
        if source.vision is not None:
            return vlm.create_reward(self, config, source, seed)
        return rewards.create_reward(self, config, source, seed)

    def load_reward(self, artifact: RewardArtifact, source: base.TorchBaseLM | None) -> rewards.TorchRewardModel:
        if not isinstance(artifact, RewardArtifact):
            artifact = RewardArtifact.open(artifact)
        own = source.load_reward(artifact) if source is not None else None  # a model family's own (prt_eagle2)
        if own is not None:
            return own
        if source is not None and source.vision is not None:
            return vlm.load_reward(self, artifact, source)
        return rewards.load_reward(self, artifact, source)

    def train(self, source, reward, data, config, output_dir, *, iters, resume=False, reporter=None) -> dict:
        from .training import train

        return train(source, reward, data, config, output_dir, iters=iters, resume=resume, reporter=reporter)

    def train_sft(self, model_path, data, config, output_dir, *, lora=None, iters, resume=False, reporter=None,
                  **options) -> dict:
        """Fine-tune the base itself (LoRA through peft when `lora` is given, else every weight); see prt_torch.sft."""
        from .sft import train_sft

        return train_sft(self, model_path, data, config, output_dir, lora=lora, iters=iters, resume=resume,
                         reporter=reporter, **options)

    def benchmark(self, config, *, workdir, log=None) -> dict:
        """`prt bench` on torch: transformers' `generate`, prtcore's loop, static caches / CUDA graphs, EFT, and
        training steps of each reward kind against peft LoRA (see prt_torch.bench)."""
        from . import bench

        return bench.run(self, config, workdir, log)

    def memory_meter(self, device=None):
        """CUDA's allocator on a CUDA device (default: cuda when available), else the host's peak resident memory."""
        from .bench import memory_meter

        return memory_meter(device)

    def load_tokenizer(self, path):
        return base.load_tokenizer(path)

    def asarray(self, ids) -> torch.Tensor:
        return torch.as_tensor(ids, dtype=torch.long, device=self.device)

    def count_parameters(self, source_path, reward_config: RewardConfig, **options) -> dict[str, int]:
        """{"trainable", "total", "artifact_bytes"} without materialising weights (see prt_torch.counting)."""
        return counting.count_parameters(Path(source_path), reward_config, **options)

    def reward_gradients(self, reward, source, ids, mask, *, lam: float, entropy_coeff: float) -> dict:
        """The gradients of the PRT loss training computes (prt_torch.gradients; prtcore.testing.gradients)."""
        from .gradients import reward_gradients

        return reward_gradients(self, reward, source, ids, mask, lam=lam, entropy_coeff=entropy_coeff)
