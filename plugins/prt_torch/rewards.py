"""Reward models of the torch backend: kinds stored as tensors (`linear`, `transformer`, a plugin's: a
prt_torch.modules.RewardModule) and `twin` (full copy, or LoRA through peft). The torch implementations of the built-in
kinds, which the backend declares when it registers (prt_torch.plugin), are LINEAR, TRANSFORMER and TWIN here;
`HeadImplementation(build)` implements any kind stored as tensors from its module class (prtcore.kinds).

A LoRA twin shares the frozen weights of its source: peft injects the adapter into the source's own module, and
the source's forward runs under peft's `disable_adapter()` context (one copy of the weights in memory).
"""

from __future__ import annotations

import contextlib
import copy
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prtcore import artifacts
from prtcore.artifacts import RewardArtifact
from prtcore.config import RewardConfig
from prtcore.errors import ArtifactError, ConfigError, ModelLoadError
from prtcore.model import RewardModel
from prtcore.rewards import check_reward_tensors

from .base import TorchBaseLM, cache_keyword, forward_kwargs, from_pretrained, save_checkpoint
from .layers import decoder_layers, head_name
from .modules import LinearReward, TransformerReward


def as_torch(tensors: dict) -> dict[str, torch.Tensor]:
    """Saved NumPy tensors as float32 torch tensors, for load_state_dict."""
    return {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in tensors.items()}


def _linear_names(block: nn.Module) -> set[str]:
    """Short names of the block's linears (an adapted linear counts once, not its inner layers)."""
    names, adapted = set(), []
    for sub, m in block.named_modules():
        if any(sub.startswith(prefix + ".") for prefix in adapted):
            continue
        if hasattr(m, "base_layer"):  # a peft layer wrapping a linear
            adapted.append(sub)
            names.add(sub.split(".")[-1])
        elif isinstance(m, nn.Linear):
            names.add(sub.split(".")[-1])
    return names


def lora_config(config: RewardConfig, model, source_path):
    """peft's LoraConfig for `config.lora`: last `num_layers` blocks, every linear of a block when keys is None."""
    from peft import LoraConfig

    lora = config.lora
    name, layers = decoder_layers(model)
    n = len(layers) if lora.num_layers == -1 else min(lora.num_layers, len(layers))
    indices = list(range(len(layers) - n, len(layers)))
    if lora.keys is None:
        targets = sorted({short for i in indices for short in _linear_names(layers[i])})
    else:
        targets = list(lora.keys)
    alpha = lora.scale * lora.rank  # mlx-lm's scale in PEFT's terms
    return LoraConfig(
        r=lora.rank, lora_alpha=int(alpha) if float(alpha).is_integer() else alpha, lora_dropout=lora.dropout, target_modules=targets,
        layers_to_transform=indices, layers_pattern=name.split(".")[-1], task_type="CAUSAL_LM",
        base_model_name_or_path=str(source_path) if source_path is not None else None,
        modules_to_save=[head_name(model)] if config.init == "zero_head" else None,
        # a vision-language model: only its language model's blocks (a vision tower's may also be `layers.N`)
        exclude_modules=rf"^(?!{re.escape(name)}\.).*" if hasattr(model.config, "vision_config") else None,
    )


class TorchRewardModel(RewardModel):
    """A reward r_θ: `module` is what trains (the reward nn.Module, the twin, or the PeftModel of a LoRA twin)."""

    def __init__(self, config: RewardConfig, backend, module: nn.Module, *, source: TorchBaseLM | None = None,
                 adapter: str | None = None, trainable: bool = True):
        self.config, self.backend, self.module, self.source, self.adapter = config, backend, module, source, adapter
        self.trainable = trainable  # False for loaded rewards: their forward keeps no autograd graph
        self.fused = False  # a LoRA twin whose adapter `fuse` folded into its weights

    # ------------------------------------------------------------------------------------------ properties
    @property
    def is_lora(self) -> bool:
        """A LoRA twin whose adapter still runs as its own layers (peft)."""
        return self.config.reward_kind.stored_as == "model" and self.config.fine_tune_type == "lora" and not self.fused

    def fuse(self) -> bool:
        """Merge a loaded LoRA twin's adapter into the source weights it adapts (peft's merge_and_unload): one
        plain model per token. Those weights must be this reward's alone (PRTForCausalLM gives it its own copy).
        Quantised weights keep the adapter unmerged."""
        if not self.is_lora or self.trainable or getattr(self.hf_model, "is_quantized", False):
            return False
        if self.source is None or self.source.peft is not self.module or len(self.module.peft_config) != 1:
            return False  # other adapters share these weights
        self.module = self.module.merge_and_unload().eval()
        self.source.peft, self.source.model = None, self.module
        self.fused = True
        return True

    @property
    def hf_model(self):
        """The transformers model of a twin (for LoRA, the source's own module with the adapter injected)."""
        if self.reads_source_hidden:
            raise ConfigError(f"a {self.config.kind} reward has no transformers model")
        return self.module.get_base_model() if self.is_lora else self.module

    @property
    def vocab_size(self) -> int:
        if self.reads_source_hidden:
            return int(self.module.head.weight.shape[0])
        return int(self.hf_model.get_output_embeddings().weight.shape[0])

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters training updates (LoRA: this adapter's matrices and head copy)."""
        params = dict(self.module.named_parameters())
        if not self.is_lora:
            return params
        tag = f".{self.adapter}."
        return {k: p for k, p in params.items() if tag in k and ("lora_" in k or "modules_to_save" in k)}

    def parameter_count(self) -> tuple[int, int]:
        trainable = sum(p.numel() for p in self.trainable_parameters().values())
        return trainable, sum(p.numel() for p in self.module.parameters())

    # ------------------------------------------------------------------------------------------ forward
    @contextlib.contextmanager
    def active(self):
        """Switch this LoRA adapter on for the duration (a no-op for other kinds)."""
        if not self.is_lora:
            yield
            return
        tuner = self.module.base_model
        active = tuner.active_adapter
        if (active if isinstance(active, str) else list(active)) not in (self.adapter, [self.adapter]):
            tuner.set_adapter(self.adapter, inference_mode=not self.trainable)
        off = self._tuner_layer().disable_adapters  # e.g. called inside the source's generate (adapters off)
        if off:
            tuner.enable_adapter_layers()
        try:
            yield
        finally:
            if off:
                tuner.disable_adapter_layers()

    def _tuner_layer(self):
        if getattr(self, "_probe", None) is None:
            from peft.tuners.tuners_utils import BaseTunerLayer

            self._probe = next(m for m in self.module.modules() if isinstance(m, BaseTunerLayer))
        return self._probe

    def make_cache(self):
        if self.reads_source_hidden:
            return self.module.make_cache()  # a RewardModule's (None: position-wise)
        from transformers import DynamicCache

        return DynamicCache(config=self.hf_model.config)

    def forward(self, ids, cache=None, *, source_hidden=None, attention_mask=None, position_ids=None, module=None):
        """Raw reward logits (B, T, V) float32. `module` replaces `self.module` (a Trainer's wrapped model).

        `attention_mask` (B, past + T) and `position_ids` (B, T) serve left-padded batches. With a cache, or for a
        loaded (not trainable) reward, no autograd graph is kept.
        """
        grad = torch.is_grad_enabled() and cache is None and (self.trainable or module is not None)
        with torch.set_grad_enabled(grad):
            if self.reads_source_hidden:
                if source_hidden is None:
                    raise ConfigError(f"a {self.config.kind} reward reads the source's hidden states: pass source_hidden")
                net = module if module is not None else self.module
                return net(source_hidden.to(self.device), cache=cache, attention_mask=attention_mask,
                           position_ids=position_ids).float()
            net = module if module is not None else self.hf_model
            kwargs = forward_kwargs(cache_keyword(self.hf_model), self.device, cache, attention_mask, position_ids,
                                    input_ids=torch.as_tensor(ids, dtype=torch.long, device=self.device))
            with self.active():
                return net(**kwargs).logits.float()

    # ------------------------------------------------------------------------------------------ starting weights
    def load_trained(self, artifact: RewardArtifact) -> None:
        """Start from saved reward `artifact` (its configuration is this one's): its tensors into this module, its
        adapter into this LoRA adapter, or, for a full twin, its checkpoint as this twin, trainable."""
        if self.reads_source_hidden:
            file = artifact.file(artifacts.REWARD_WEIGHTS)
            tensors = artifact.tensors()
            check_reward_tensors(tensors, self.config, self.source.hidden_size, self.vocab_size, str(file))
            self.module.load_state_dict(as_torch(tensors))
        elif self.is_lora:
            self._load_adapter_weights(artifact)
        else:
            self.module = _load_full_twin(self.backend, artifact, self.source).requires_grad_(True)

    def _load_adapter_weights(self, artifact: RewardArtifact) -> None:
        from peft import set_peft_model_state_dict

        file = artifact.file(artifacts.PEFT_WEIGHTS)
        state = as_torch(artifact.tensors(file.name))
        try:
            loaded = set_peft_model_state_dict(self.module, state, adapter_name=self.adapter)
        except RuntimeError as e:  # a shape that does not fit
            raise ArtifactError(f"{file}: does not fit this LoRA twin ({e})".splitlines()[0]) from None
        if loaded.unexpected_keys:
            raise ArtifactError(f"{file}: tensor for {loaded.unexpected_keys[0]!r} is not a parameter of this LoRA twin")
        missing = sorted(set(self.trainable_parameters()) & set(loaded.missing_keys))
        if missing:
            raise ArtifactError(f"{file}: holds no tensor for the twin's {missing[0]!r}")

    # ------------------------------------------------------------------------------------------ saving
    def reward_tensors(self) -> dict[str, np.ndarray]:
        return {k: v.detach().float().cpu().numpy() for k, v in self.module.state_dict().items()}

    def save(self, path, *, source: TorchBaseLM, vocab_size: int, extra: dict | None = None) -> Path:
        """Write the artifact: reward.safetensors, PEFT's adapter files, or a checkpoint; plus the tokenizer."""
        if self.fused:
            raise ConfigError("this LoRA twin's adapter was merged into its weights for inference; save the "
                              "reward it was loaded from instead")
        with artifacts.ArtifactWriter(path) as writer:
            if self.reads_source_hidden:
                tensors = self.reward_tensors()
                check_reward_tensors(tensors, self.config, source.hidden_size, self.vocab_size, str(path))
                artifacts.save_numpy_tensors(writer.dir / artifacts.REWARD_WEIGHTS, tensors)
                weights = [artifacts.REWARD_WEIGHTS]
            elif self.is_lora:
                weights = self._save_adapter(writer.dir, source)
            else:
                save_checkpoint(self.module, writer.dir)
                weights = sorted(p.name for p in writer.dir.glob("model*.safetensors*"))
            if source.path is not None:
                writer.copy_tokenizer(source.path)
            meta = artifacts.reward_meta(self.config, source=source, tokenizer=source.tokenizer, vocab_size=vocab_size,
                                         output_size=self.vocab_size, weights=weights, backend="torch", extra=extra)
            return writer.commit(meta)

    def _save_adapter(self, directory: Path, source: TorchBaseLM) -> list[str]:
        peft_config = self.module.peft_config[self.adapter]
        peft_config.base_model_name_or_path = str(source.path) if source.path is not None else None
        staging = directory / "_peft"
        self.module.save_pretrained(str(staging), selected_adapters=[self.adapter])
        found = next(staging.rglob(artifacts.PEFT_CONFIG)).parent  # peft nests non-default adapters
        for name in (artifacts.PEFT_CONFIG, artifacts.PEFT_WEIGHTS):
            shutil.move(str(found / name), str(directory / name))
        shutil.rmtree(staging)
        return [artifacts.PEFT_CONFIG, artifacts.PEFT_WEIGHTS]


# ---------------------------------------------------------------------------------------------- factories
def _adapter_name(source: TorchBaseLM) -> str:
    if source.peft is None:
        return "default"
    return f"reward{len(source.peft.peft_config)}"


def _zero_head(model) -> None:
    """Give `model` its own zero output layer (untied from the input embeddings)."""
    head = model.get_output_embeddings()
    if head.weight is model.get_input_embeddings().weight:
        head.weight = nn.Parameter(head.weight.detach().clone())
        model.config.tie_word_embeddings = False
        if hasattr(model.config, "get_text_config"):
            model.config.get_text_config().tie_word_embeddings = False
    with torch.no_grad():
        head.weight.zero_()


def create_reward(backend, config: RewardConfig, source: TorchBaseLM, seed: int = 0) -> TorchRewardModel:
    """A new, untrained reward for `source`, by the torch implementation of its kind (see RewardConfig for kinds
    and `init`)."""
    from prtcore.plugins import reward_implementation

    return reward_implementation(config.kind, "torch").create(backend, config, source, seed=seed)


class HeadImplementation:
    """The torch implementation of a reward kind stored as tensors: `build(config, hidden_size, vocab_size)` makes
    its module (a prt_torch.modules.RewardModule); what prtcore.plugins.reward_implementation gives (prtcore.kinds)."""

    def __init__(self, build):
        self.build = build

    def create(self, backend, config: RewardConfig, source: TorchBaseLM, *, seed: int = 0) -> TorchRewardModel:
        module = self.build(config, source.hidden_size, source.vocab_size)
        module.init_weights(torch.Generator().manual_seed(seed))
        return TorchRewardModel(config, backend, module.to(source.device), source=source)

    def load(self, backend, artifact: RewardArtifact, source: TorchBaseLM | None) -> TorchRewardModel:
        config, where = artifact.config, str(artifact.path)
        if source is None:
            raise ConfigError(f"{where}: a {config.kind} reward needs its source model; pass source=PATH")
        tensors = artifact.tensors()
        head = tensors.get("head.weight")
        if head is None or head.ndim != 2:
            raise ArtifactError(f"{where}: tensor 'head.weight' is missing or not a matrix")
        vocab = int(head.shape[0])
        check_reward_tensors(tensors, config, source.hidden_size, vocab, where)
        module = self.build(config, source.hidden_size, vocab)
        module.load_state_dict(as_torch(tensors))
        module.to(source.device).eval().requires_grad_(False)
        return TorchRewardModel(config, backend, module, source=source, trainable=False)


class TwinImplementation:
    """The torch implementation of the twin kind: a copy of the source, or LoRA through peft on the source's module."""

    def create(self, backend, config: RewardConfig, source: TorchBaseLM, *, seed: int = 0) -> TorchRewardModel:
        if config.fine_tune_type == "full":
            twin = copy.deepcopy(source.model).requires_grad_(True)
            if config.init == "zero_head":
                _zero_head(twin)
            return TorchRewardModel(config, backend, twin, source=source)
        return _create_lora(backend, config, source, seed)

    def load(self, backend, artifact: RewardArtifact, source: TorchBaseLM | None) -> TorchRewardModel:
        config = artifact.config
        if not config.reward_kind.needs_source(config):  # a full twin: a checkpoint of its own
            return TorchRewardModel(config, backend, _load_full_twin(backend, artifact, source), source=source,
                                    trainable=False)
        if source is None:
            raise ConfigError(f"{artifact.path}: a {config.kind} reward needs its source model; pass source=PATH")
        return _load_lora(backend, artifact, source)


LINEAR = HeadImplementation(lambda config, hidden_size, vocab_size: LinearReward(hidden_size, vocab_size))
TRANSFORMER = HeadImplementation(TransformerReward)
TWIN = TwinImplementation()


def _create_lora(backend, config: RewardConfig, source: TorchBaseLM, seed: int) -> TorchRewardModel:
    from peft import get_peft_model

    peft_config = lora_config(config, source.model, source.path)
    name = _adapter_name(source)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # zero_head on a model with tied embeddings: the new head is meant to be a layer of its own.
        warnings.filterwarnings("ignore", message=".*tie_word_embeddings=True.*")
        torch.manual_seed(seed)
        if source.peft is None:
            source.peft = get_peft_model(source.model, peft_config, adapter_name=name)
        else:
            source.peft.add_adapter(name, peft_config)
    peft = source.peft
    if config.init == "zero_head":
        with torch.no_grad():
            for key, p in peft.named_parameters():
                if f"modules_to_save.{name}." in key:
                    p.zero_()
    return TorchRewardModel(config, backend, peft, source=source, adapter=name)


def load_reward(backend, artifact: RewardArtifact, source: TorchBaseLM | None) -> TorchRewardModel:
    """A saved reward, by the torch implementation of its kind: `source` is the base it reads (kinds stored as
    tensors) or adapts (LoRA twin)."""
    from prtcore.plugins import reward_implementation

    return reward_implementation(artifact.config.kind, "torch").load(backend, artifact, source)


def _load_lora(backend, artifact: RewardArtifact, source: TorchBaseLM) -> TorchRewardModel:
    from peft import PeftModel

    for weights in artifact.meta["weights"]:  # PEFT would read NaN, float64 or a misfit head without a word
        if weights.endswith(".safetensors"):
            artifact.tensors(weights)
    for file in (artifacts.PEFT_CONFIG, artifacts.PEFT_WEIGHTS):  # PEFT would ask the Hub for a missing one
        if not (artifact.path / file).is_file():
            raise ArtifactError(f"{artifact.path / file}: missing; the torch backend reads a LoRA twin reward in "
                                f"PEFT's layout ({artifacts.PEFT_CONFIG}, {artifacts.PEFT_WEIGHTS})")
    name = _adapter_name(source)
    try:
        if source.peft is None:
            source.peft = PeftModel.from_pretrained(source.model, str(artifact.path), adapter_name=name)
        else:
            source.peft.load_adapter(str(artifact.path), adapter_name=name)
    except (ValueError, KeyError, RuntimeError, OSError) as e:
        raise ArtifactError(f"{artifact.path}: cannot load the LoRA adapter onto {source.path} ({e})".splitlines()[0]) from None
    source.peft.eval()
    return TorchRewardModel(artifact.config, backend, source.peft, source=source, adapter=name, trainable=False)


def _load_full_twin(backend, artifact: RewardArtifact, source: TorchBaseLM | None):
    from transformers import AutoModelForCausalLM

    device = source.device if source is not None else backend.device
    dtype = source.dtype if source is not None else backend.default_dtype(device)
    model = from_pretrained(AutoModelForCausalLM, artifact.path, what="the twin reward model", dtype=dtype)
    params = [(k, p) for k, p in model.named_parameters() if p.is_floating_point()]
    finite = torch.stack([torch.isfinite(p).all() for _, p in params]).tolist()
    if not all(finite):
        raise artifacts.non_finite_error(artifact.path, params[finite.index(False)][0])
    return model.to(device).eval().requires_grad_(False)

