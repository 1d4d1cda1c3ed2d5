"""The `mlx` Backend: bases through mlx-lm, rewards of every kind it implements (prtcore.kinds; the built-in kinds'
implementations in prt_mlx.rewards), training, artifacts and dry-run counts."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from prtcore.artifacts import RewardArtifact, check_safetensors
from prtcore.config import RewardConfig, TrainingConfig
from prtcore.errors import ConfigError, ModelLoadError
from prtcore.hub import accepts_hub_ids
from prtcore.model import Backend
from prtcore.plugins import reward_implementation
from prtcore.rewards import count_lora_parameters, count_reward_parameters
from prtcore.vision import is_vlm_config

from .base import MLXBaseLM, load_model, normalize_config, read_config, shared_vocab_size, text_config
from .loss import fused_prt_loss, gradient
from .namespace import MLX
from .twin import TwinReward
from .vlm import VLMTwinReward

LOAD_OPTIONS = ("quantize", "group_size", "dtype", "trust_remote_code", "lazy", "device")
DEVICES = {None: None, "auto": None, "cpu": "cpu", "gpu": "gpu", "mps": "gpu", "metal": "gpu"}


class MLXBackend(Backend):
    name = "mlx"
    xp = MLX
    capabilities = frozenset({"load", "train", "train_sft", "generate", "lora", "batched", "quantize", "bench",
                              "count_parameters", "reward_gradients", "reward_from_adapter", "rotating_cache"})
    prt_loss = staticmethod(fused_prt_loss)  # what training minimises (prt_mlx.loss)
    gradient = staticmethod(gradient)

    def end_thread(self) -> None:
        """mlx's streams are the thread's own: they are released by the thread that made them (prt_mlx.streams)."""
        mx.synchronize()
        mx.clear_streams()

    # ------------------------------------------------------------------------------------------ bases
    @accepts_hub_ids  # `path` may be a Hugging Face Hub id, org/name[@revision] (prtcore.hub)
    def load_base(self, path, **options) -> MLXBaseLM:
        """A base model from a local directory or a Hub id. Options: quantize (4|8), group_size (64), dtype
        ("float32", "bfloat16", "float16"), trust_remote_code, lazy, device ("cpu"/"gpu"; sets mlx's default device).

        A LoRA adapter directory (mlx-lm's or PEFT's layout) loads as its base with the adapter fused in; option
        `adapter_base` names that base (default: the one the adapter config records)."""
        from prtcore.plugins import before_model_load, family_for_model_type
        from prtcore.training import is_adapter_dir

        adapter_base = options.pop("adapter_base", None)
        if is_adapter_dir(path):
            from .sft import load_adapted

            return load_adapted(self, path, adapter_base, **options)

        unknown = sorted(set(options) - set(LOAD_OPTIONS))
        if unknown:
            raise ConfigError(f"load option {unknown[0]!r} is not known to backend 'mlx' (known: {', '.join(LOAD_OPTIONS)})")
        device = options.pop("device", None)
        if device not in DEVICES:
            raise ConfigError(f"device={device!r}: must be one of cpu, gpu, auto")
        if DEVICES[device]:
            mx.set_default_device(getattr(mx, DEVICES[device]))
        path = Path(path).resolve()  # artifacts record the source's path; absolute survives a change of directory
        config = read_config(path)
        family = family_for_model_type(config.get("model_type", ""))
        with before_model_load(path, "mlx", options):
            if family is None and is_vlm_config(config):
                from .vlm import load_vlm

                return load_vlm(self, path, **options)
            if family is not None and "mlx" in family.loaders:
                import importlib

                module, _, attr = family.loaders["mlx"].partition(":")
                return getattr(importlib.import_module(module), attr)(path, **options)
            from mlx_lm.utils import load_config

            model, config = load_model(path, **options)
            # mlx-lm's config reading lets generation_config.json's eos_token_id win, as generation does
            tokenizer = self.load_tokenizer(path, eos_token_ids=load_config(path).get("eos_token_id"))
        return MLXBaseLM(self, model, tokenizer, config, path, options)

    def load_tokenizer(self, path, eos_token_ids=None):
        from mlx_lm.utils import load_tokenizer

        try:
            return load_tokenizer(Path(path), eos_token_ids=eos_token_ids)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{path}: cannot load the tokenizer ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None

    def asarray(self, ids):
        return mx.array(ids, dtype=mx.int32)

    # ------------------------------------------------------------------------------------------ rewards
    def create_reward(self, config: RewardConfig, source: MLXBaseLM, *, seed: int = 0):
        own = source.create_reward(config, seed=seed)  # a model family's own rewards (prt_eagle2)
        if own is not None:
            return own
        if source.vision is not None:  # a vision-language base takes LoRA twins (its own check says so)
            return VLMTwinReward.create(self, config, source, seed=seed, shared_vocab=shared_vocab_size(source.tokenizer))
        return reward_implementation(config.kind, "mlx").create(self, config, source, seed=seed)

    def load_reward(self, artifact: RewardArtifact, source: MLXBaseLM | None):
        """A saved reward, by the mlx implementation of its kind (prtcore.plugins.reward_implementation)."""
        own = source.load_reward(artifact) if source is not None else None  # a model family's own (prt_eagle2)
        if own is not None:
            return own
        return reward_implementation(artifact.config.kind, "mlx").load(self, artifact, source)

    def reward_from_adapter(self, adapter_dir, source: MLXBaseLM, *, lam: float = 1.0,
                            entropy_coeff: float = 0.0) -> TwinReward:
        """A LoRA twin from an adapter directory (e.g. one `mlx_lm lora` wrote) on `source`; `.save()` it to get
        a portable reward artifact."""
        from prtcore import adapters

        _, _, lora = adapters.read_adapter(adapter_dir, num_hidden_layers=len(source.model.layers))
        config = RewardConfig(kind="twin", fine_tune_type="lora", lora=lora, lam=lam, entropy_coeff=entropy_coeff)
        return TwinReward.from_adapter(self, config, adapter_dir, source, shared_vocab=shared_vocab_size(source.tokenizer))

    def reward_gradients(self, reward, source, ids, mask, *, lam: float, entropy_coeff: float) -> dict:
        """The gradients of the PRT loss training computes (prt_mlx.gradients; prtcore.testing.gradients)."""
        from .gradients import reward_gradients

        return reward_gradients(self, reward, source, ids, mask, lam=lam, entropy_coeff=entropy_coeff)

    # ------------------------------------------------------------------------------------------ generation
    def use_rotating_cache(self, model, size: int) -> None:
        """mlx-lm's rotating KV cache of `size` tokens for every base model of `model` and every twin reward (a
        reward that reads the source's hidden states keeps no cache of its own ids). Layers whose model makes a
        cache of another kind (a sliding window, a state) keep it; every plain KV cache becomes a rotating one
        (mlx-lm's `make_prompt_cache` ignores max_kv_size for a model with a `make_cache` of its own)."""
        from mlx_lm.models.cache import KVCache, RotatingKVCache, make_prompt_cache

        def rotating(module):
            caches = make_prompt_cache(module, max_kv_size=size)
            return [RotatingKVCache(max_size=size, keep=4) if type(c) is KVCache else c for c in caches]

        bases = {id(m): m for m in model.base_models()}
        for lm in bases.values():
            lm.make_cache = lambda module=lm.model: rotating(module)
        for reward in model.id_readers():
            if id(reward) not in bases and reward.config.kind == "twin":
                reward.make_cache = lambda module=reward.module: rotating(module)

    # ------------------------------------------------------------------------------------------ training
    def train(self, source, reward, data: dict, config: TrainingConfig, output_dir, *, iters: int,
              resume: bool = False, reporter=None) -> dict:
        from .training import train

        return train(source, reward, data, config, output_dir, iters=iters, resume=resume, reporter=reporter)

    def train_sft(self, model_path, data: dict, config: TrainingConfig, output_dir, *, lora=None, iters: int,
                  resume: bool = False, reporter=None, **options) -> dict:
        """Fine-tune the base itself (LoRA when `lora` is given, else every weight); see prt_mlx.sft."""
        from .sft import train_sft

        return train_sft(self, model_path, data, config, output_dir, lora=lora, iters=iters, resume=resume,
                         reporter=reporter, **options)

    # ------------------------------------------------------------------------------------------ benchmark
    def benchmark(self, config, *, workdir, log=None) -> dict:
        """`prt bench` on mlx: mlx-lm's `generate_step`, prtcore's loop (eager, asynchronous), the reward as a
        logits processor, EFT, and training steps of each reward kind against mlx-lm LoRA (see prt_mlx.bench)."""
        from . import bench

        return bench.run(self, config, workdir, log)

    def memory_meter(self, device=None):
        """The peak of mlx's allocator (mx.get_peak_memory) over the level at entry."""
        from .bench import MLXPeakMeter

        return MLXPeakMeter()

    # ------------------------------------------------------------------------------------------ dry run
    def count_parameters(self, source_path, reward_config: RewardConfig) -> dict:
        """{"trainable", "total", "artifact_bytes"} for a reward on `source_path`, without loading weights.

        `total` counts every parameter training holds: the frozen source plus the reward (a LoRA twin shares
        the source's weights, a full twin is a second copy), as the torch backend does.

        Reads config.json (and safetensors headers for the weights' dtype); `artifact_bytes` counts tensor
        data only (float32 for reward tensors and adapters, the source's dtype for a full twin).
        """
        config = read_config(Path(source_path))
        text = text_config(config)
        hidden, vocab = int(text["hidden_size"]), int(text["vocab_size"])
        base_total, itemsize = _base_parameters(Path(source_path), config)
        if reward_config.reward_kind.stored_as == "tensors":
            n = count_reward_parameters(reward_config, hidden, vocab)
            return {"trainable": n, "total": base_total + n, "artifact_bytes": 4 * n}
        head = vocab * hidden if reward_config.init == "zero_head" else 0
        untied_head = vocab * hidden if not text.get("tie_word_embeddings", False) else 0
        if reward_config.fine_tune_type == "lora":
            lora = count_lora_parameters(reward_config, {**text, **normalize_config(text)})
            return {"trainable": lora + head, "total": base_total + lora + head, "artifact_bytes": 4 * (lora + head)}
        trainable = base_total + head - (untied_head if head else 0)  # a zero head replaces the copy's own
        return {"trainable": trainable, "total": base_total + trainable, "artifact_bytes": itemsize * trainable}


def _base_parameters(path: Path, config: dict) -> tuple[int, int]:
    """(parameters, bytes per weight) of a base model: the mlx-lm model is built lazily, never evaluated."""
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    merged = {**config, **normalize_config(config)}
    try:
        if is_vlm_config(config):
            from .vlm import build_vlm

            model = build_vlm(config)
        else:
            model_class, args_class = _get_classes(merged)
            model = model_class(args_class.from_dict(merged))
    except (ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"{path}: mlx-lm / mlx-vlm cannot build this model ({e})") from None
    total = sum(v.size for _, v in tree_flatten(model.parameters()))
    itemsize = 4
    files = sorted(path.glob("model*.safetensors"))
    if files:
        header = check_safetensors(files[0])
        dtypes = [v["dtype"] for k, v in header.items() if k != "__metadata__"]
        itemsize = {"F32": 4, "BF16": 2, "F16": 2}.get(dtypes[0] if dtypes else "F32", 4)
    elif config.get("torch_dtype", config.get("dtype")) in ("bfloat16", "float16"):
        itemsize = 2
    return int(total), itemsize
