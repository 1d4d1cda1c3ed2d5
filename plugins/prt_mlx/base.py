"""Base models through mlx-lm: loading (config normalisation, quantisation) and forward with hidden states."""

from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from prtcore.errors import BackendError, ConfigError, ModelLoadError
from prtcore.legacy_config import legacy_fields
from prtcore.model import BaseLM, ForwardOutput
from prtcore.sampling import tokenizer_vocab

from . import streams  # noqa: F401 (mlx's streams released at exit)
from .batching import batch_caches, batch_shapes, batched_cache

DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}


# ------------------------------------------------------------------------------------------------ config
def normalize_config(config: dict) -> dict:
    """Overrides that make mlx-lm read a config the way transformers does.

    transformers 5 keeps rope settings under `rope_parameters` ({"rope_theta", "rope_type", scaling fields}, or
    one such dict per layer type); mlx-lm reads top-level `rope_theta` / `rope_scaling` and silently falls back
    to its own defaults otherwise. The mapping is prtcore.legacy_config's, which the torch backend also writes
    into the checkpoints it saves.
    """
    return legacy_fields(config)


def read_config(path: Path) -> dict:
    if not Path(path).is_dir():
        raise ModelLoadError(f"{path}: model directory not found")
    file = Path(path) / "config.json"
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no config.json (not a model directory)") from None
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{file}:{e.lineno}:{e.colno}: invalid JSON ({e.msg})") from None


def text_config(config: dict) -> dict:
    """The language model's part of a (possibly multimodal) config."""
    return config["text_config"] if isinstance(config.get("text_config"), dict) and "hidden_size" not in config else config


# ------------------------------------------------------------------------------------------------ loading
def quantize_model(model: nn.Module, bits: int, group_size: int = 64) -> None:
    """Quantise every linear / embedding whose input width is a multiple of `group_size` (mlx nn.quantize)."""
    if bits not in (4, 8):
        raise ConfigError(f"quantize={bits!r}: must be 4 or 8")
    own = getattr(model, "quant_predicate", None)

    def predicate(path, module):
        if not hasattr(module, "to_quantized") or module.weight.shape[-1] % group_size:
            return False
        return own(path, module) if own is not None else True

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=predicate)


def load_model(path, *, quantize: int | None = None, group_size: int = 64, dtype: str | None = None,
               trust_remote_code: bool = False, lazy: bool = False) -> tuple[nn.Module, dict]:
    """An mlx-lm model from a local directory (config normalised), optionally cast and quantised."""
    from mlx_lm.utils import load_model as mlx_load_model

    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: model directory not found")
    config = read_config(path)
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: must be one of {', '.join(DTYPES)}")
    if quantize and ("quantization" in config or "quantization_config" in config):
        raise ConfigError(f"quantize={quantize}: {path} is already quantised")
    try:
        model, _ = mlx_load_model(path, lazy=True, model_config=normalize_config(config),
                                  trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(f"{path}: mlx-lm cannot load this model ({message})") from None
    use_configured_activation(model, config)
    if dtype is not None:
        model.set_dtype(DTYPES[dtype])
    if quantize:
        quantize_model(model, int(quantize), group_size)
    if not lazy:
        mx.eval(model.parameters())
    return model, config


def use_configured_activation(model, config: dict) -> None:
    """mlx-lm's starcoder2 MLP applies exact gelu whatever `hidden_act` says (mlx-lm 0.32.2); transformers, and the
    checkpoints trained with it, use the config's `gelu_pytorch_tanh`. Those MLPs get the tanh approximation, so
    both backends compute the same model (logits differed by ~1.1e-4 x their scale)."""
    if config.get("model_type") != "starcoder2" or config.get("hidden_act", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        return
    from mlx_lm.models import starcoder2

    for layer in getattr(getattr(model, "model", None), "layers", []):
        if type(layer.mlp) is starcoder2.MLP:
            layer.mlp.__class__ = _tanh_gelu_mlp()


@functools.cache
def _tanh_gelu_mlp():
    from mlx_lm.models import starcoder2

    class TanhGeluMLP(starcoder2.MLP):
        def __call__(self, x):
            return self.c_proj(nn.gelu_approx(self.c_fc(x)))

    return TanhGeluMLP


# ------------------------------------------------------------------------------------------------ forward
class _Tap:
    """Stands in for a model's trunk during one call and remembers what the trunk returned."""

    def __init__(self, trunk):
        self.trunk, self.hidden = trunk, None

    def __call__(self, *args, **kwargs):
        self.hidden = self.trunk(*args, **kwargs)
        return self.hidden

    def __getattr__(self, name):
        return getattr(self.trunk, name)


def trunk_owner(model: nn.Module) -> nn.Module:
    """The module holding the trunk `model` (the model itself, or its `language_model`)."""
    owner = model
    while "model" not in owner and "language_model" in owner:
        owner = owner["language_model"]
    if "model" not in owner:
        raise BackendError(f"{type(model).__module__}: no `model` trunk found to read hidden states from")
    return owner


def forward_with_hidden(model: nn.Module, ids, cache=None):
    """(logits, last hidden states): the model's own head (tied embeddings, soft-capping, scaling) is reused.

    The trunk `model.model` is shadowed by an instance attribute for one call; the parameter tree is untouched.
    """
    owner = trunk_owner(model)
    tap = _Tap(owner["model"])
    object.__setattr__(owner, "model", tap)
    try:
        logits = model(ids, cache=cache)
    finally:
        object.__delattr__(owner, "model")
    return logits, tap.hidden


def output_layer(model: nn.Module):
    """(the module holding the trunk, the output layer: its `lm_head`, else the trunk's `embed_tokens` (tied) or
    None)."""
    owner = trunk_owner(model)
    head = owner.get("lm_head")
    return owner, head if head is not None else owner["model"].get("embed_tokens")


def plain_head_weight(model: nn.Module):
    """The output layer's weight (V, H) when `model`'s logits are exactly `hidden @ weightᵀ` of the hidden states
    `forward_with_hidden` reads (its `lm_head`, or its tied embedding's `as_linear`), else None. Probed on one
    token: that layer is shadowed by a function that records its input and returns a marker, and the logits are
    plain when the layer read those very hidden states (no scaling before it) and the model returns that very
    array (no soft-capping or scaling after it; quantised layers are not plain)."""
    owner, head = output_layer(model)
    tied = head is not owner.get("lm_head")
    if type(head) is not (nn.Embedding if tied else nn.Linear) or "bias" in head:
        return None
    layer, name = (head, "as_linear") if tied else (owner, "lm_head")
    weight = head.weight
    marker, seen = mx.zeros((1, 1, weight.shape[0])), []
    object.__setattr__(layer, name, lambda x: seen.append(x) or marker)
    try:
        logits, hidden = forward_with_hidden(model, as_ids([[0]]))
    finally:
        object.__delattr__(layer, name)
    return weight if logits is marker and len(seen) == 1 and seen[0] is hidden else None


@contextlib.contextmanager
def adapters_off(layers):
    """Switch LoRA layers off (scale 0) for the duration: the frozen base they wrap computes alone."""
    saved = [layer.scale for layer in layers]
    for layer in layers:
        layer.scale = 0.0
    try:
        yield
    finally:
        for layer, scale in zip(layers, saved):
            layer.scale = scale


def shared_vocab_size(tokenizer) -> int:
    """The shared vocabulary the loss and the composers work over: the tokenizer's ids [0, len)."""
    return len(tokenizer_vocab(tokenizer))


def as_ids(ids) -> mx.array:
    """(B, T) int32 ids from an mlx array or nested lists (a flat list is one row)."""
    if not isinstance(ids, mx.array):
        ids = mx.array(np.asarray(ids, dtype=np.int32))
    return ids if ids.ndim == 2 else ids.reshape(1, -1)


class MLXBaseLM(BaseLM):
    """A frozen mlx-lm model with its tokenizer. `adapter_layers` are LoRA layers a twin reward added in place
    (sharing these weights); they are switched off for every forward of the base."""

    def __init__(self, backend, model: nn.Module, tokenizer, config: dict, path: Path | None, options: dict | None = None):
        self.backend, self.model, self.tokenizer, self.config, self.path = backend, model, tokenizer, config, path
        self.options = dict(options or {})
        self.adapter_layers: list = []
        self.model.freeze()

    @property
    def vocab_size(self) -> int:
        return int(text_config(self.config)["vocab_size"])

    @property
    def hidden_size(self) -> int:
        return int(text_config(self.config)["hidden_size"])

    @property
    def quantized(self) -> bool:
        return any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in self.model.named_modules())

    def forward(self, ids, cache=None, *, hidden: bool = False, attention_mask=None, position_ids=None) -> ForwardOutput:
        """Logits (and hidden states) of (B, T) ids continuing `cache`; `attention_mask` (B, past + T) and
        `position_ids` (B, T) serve left-padded batches (prt_mlx.batching)."""
        ids = as_ids(ids)
        shapes = contextlib.nullcontext()
        if attention_mask is not None:
            cache = batched_cache(cache, attention_mask, position_ids, ids.shape[1], self.make_batch_cache)
            shapes = batch_shapes(self.model_type)
        with adapters_off(self.adapter_layers), shapes:
            if hidden:
                logits, h = forward_with_hidden(self.model, ids, cache)
            else:
                logits, h = self.model(ids, cache=cache), None
        return ForwardOutput(logits.astype(mx.float32), h)

    def plain_output_weight(self):
        """The output layer's weight (V, H) when the logits are exactly `hidden @ weightᵀ`, else None (probed by
        `plain_head_weight`, again whenever that weight is another array, e.g. after an update)."""
        probed = getattr(self, "_plain_probe", None)
        if probed is None or probed[0] is not self._output_layer_weight():
            with adapters_off(self.adapter_layers):
                self._plain_probe = (self._output_layer_weight(), plain_head_weight(self.model))
        return self._plain_probe[1]

    def _output_layer_weight(self):
        layer = output_layer(self.model)[1]
        return None if layer is None else layer.get("weight")

    def make_cache(self):
        from mlx_lm.models.cache import make_prompt_cache

        return make_prompt_cache(self.model)

    def make_batch_cache(self, left_padding):
        """A cache for left-padded rows (`left_padding[i]` pad tokens before row i's prompt)."""
        return batch_cache(self.model, left_padding)


def batch_cache(model: nn.Module, left_padding) -> list:
    """mlx-lm batch caches (one per layer) for left-padded rows of `model`: per-row rope offsets and padding
    masks (prt_mlx.batching). Models whose caches are neither plain KV caches nor sliding windows are refused."""
    from mlx_lm.models.cache import make_prompt_cache

    return batch_caches(make_prompt_cache(model), list(left_padding))
