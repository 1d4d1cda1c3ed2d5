"""Frozen base models: any local `AutoModelForCausalLM` checkpoint as a prtcore `BaseLM`."""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
from pathlib import Path

import torch

from prtcore.errors import ConfigError, ModelLoadError
from prtcore.model import BaseLM, ForwardOutput
from prtcore.plugins import before_model_load, family_for_model_type

LOAD_OPTIONS = ("device", "dtype", "attn_implementation", "trust_remote_code")
ATTENTION = ("sdpa", "eager")
FLASH = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}  # implementation: module
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def default_device() -> torch.device:
    """cuda (under a launcher, the GPU of the process's LOCAL_RANK), then mps, then cpu."""
    if torch.cuda.is_available():
        from .distributed import local_rank

        rank = local_rank()
        return torch.device("cuda") if rank is None else torch.device("cuda", rank % torch.cuda.device_count())
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype, device: torch.device):
    """None: float32 on CPU, bfloat16 on a GPU; "auto": the checkpoint's own; else a name or torch.dtype."""
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: must be one of 'auto', {', '.join(map(repr, DTYPES))} or a torch.dtype")
    return DTYPES[dtype]


def read_config(path: Path) -> dict:
    if not path.is_dir():
        raise ModelLoadError(f"{path}: model directory not found")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no config.json (not a Hugging Face model directory)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}/config.json: invalid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path}/config.json: expected a JSON object")
    return config


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def from_pretrained(auto_class, path, *, what: str = "the model", unused: tuple[str, ...] = (), **kwargs):
    """`auto_class.from_pretrained(path, local_files_only=True, **kwargs)`: any failure, or a checkpoint that lacks
    weights the model needs (transformers would initialise them at random: a different model; weights under the
    `unused` prefixes, which the model builds but never runs, aside), is a one-line ModelLoadError naming `path`."""
    try:
        model, loaded = auto_class.from_pretrained(str(path), local_files_only=True, output_loading_info=True, **kwargs)
    except Exception as e:  # transformers raises many types
        raise ModelLoadError(f"{path}: cannot load {what} ({_one_line(e)})") from None
    missing = sorted(k for k in loaded["missing_keys"] if not k.startswith(unused))
    if missing:
        raise ModelLoadError(f"{path}: the checkpoint lacks {len(missing)} weight(s) {what} needs, e.g. {missing[0]!r} "
                             "(a layout transformers does not read?)")
    return model


def load_tokenizer(path, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = Path(path)
    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, local_files_only=True)
    except Exception as e:  # transformers raises many types (OSError, ValueError, ...)
        raise ModelLoadError(f"{path}: cannot load the tokenizer ({_one_line(e)})") from None


def load_base(backend, path, **options) -> "TorchBaseLM":
    """Load a checkpoint directory; see `TorchBackend.load_base` for the options."""
    path = Path(path)
    unknown = sorted(set(options) - set(LOAD_OPTIONS))
    if unknown:
        raise ConfigError(f"load_base: unknown option {unknown[0]!r} (known: {', '.join(LOAD_OPTIONS)})")
    config = read_config(path)
    family = family_for_model_type(config.get("model_type", ""))
    options = dict(options)
    with before_model_load(path, "torch", options):
        if family is not None and "torch" in family.loaders:
            module, _, attribute = family.loaders["torch"].partition(":")
            return getattr(importlib.import_module(module), attribute)(path, **options)
        return _load_hf(backend, path, config, **options)


def _load_hf(backend, path: Path, config: dict, device=None, dtype=None, attn_implementation=None,
             trust_remote_code=False) -> "TorchBaseLM":
    from transformers import AutoModelForCausalLM

    try:
        device = torch.device(device) if device is not None else default_device()
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={device!r}: not a torch device (e.g. 'cpu', 'cuda', 'cuda:1', 'mps')") from None
    dtype = resolve_dtype(dtype, device)
    if attn_implementation in FLASH:
        if importlib.util.find_spec(FLASH[attn_implementation]) is None:
            raise ModelLoadError(f"{path}: attn_implementation={attn_implementation!r} needs flash-attn, which is not installed")
    elif attn_implementation is not None and attn_implementation not in ATTENTION:  # None: sdpa where supported, else eager
        raise ConfigError(f"attn_implementation={attn_implementation!r}: must be one of 'sdpa', 'eager', {', '.join(map(repr, FLASH))}")
    if "auto_map" in config and not trust_remote_code:
        raise ModelLoadError(f"{path}: the model needs its own code (auto_map in config.json); pass trust_remote_code=True to run it")
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    model = from_pretrained(AutoModelForCausalLM, path, dtype=dtype, attn_implementation=attn_implementation,
                            trust_remote_code=trust_remote_code)
    model.to(device).eval().requires_grad_(False)
    return TorchBaseLM(backend, model, tokenizer, path, config)


def save_checkpoint(model, directory) -> None:
    """`model.save_pretrained(directory)`, with the top-level rope fields mlx-lm reads added to config.json
    (prtcore.legacy_config: transformers 5 keeps them only under `rope_parameters`, and plain `mlx_lm.load` would
    fall back to its defaults). The fields stay only if transformers reads the file back with the same rope
    settings; a family whose config class would read them differently keeps transformers' own config.json."""
    from prtcore.legacy_config import add_legacy_fields

    model.save_pretrained(str(directory))
    file = Path(directory) / "config.json"
    saved = file.read_text(encoding="utf-8")
    if add_legacy_fields(directory) and not _same_rope(model.config, directory):
        file.write_text(saved, encoding="utf-8")


def _rope_settings(config):
    """The rope settings of a transformers config (its text config's), "type" aliases of "rope_type" left out."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if not (k == "type" and value.get("rope_type") == v)}
        return value

    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return clean(getattr(text, "rope_parameters", None)), getattr(text, "rope_local_base_freq", None)


def _same_rope(config, directory) -> bool:
    try:
        again = type(config).from_pretrained(str(directory), local_files_only=True)
    except Exception:  # a config class that cannot read the file back: keep transformers' own
        return False
    return _rope_settings(again) == _rope_settings(config)


def cache_keyword(model) -> str:
    """The forward keyword of the KV cache: `cache` in transformers 5.x, `past_key_values` before."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def forward_kwargs(cache_kw: str, device, cache=None, attention_mask=None, position_ids=None, **inputs) -> dict:
    """Keyword arguments of a transformers forward: `inputs` (input_ids or inputs_embeds), `use_cache`, the KV
    cache under `cache_kw` (see `cache_keyword`), and a left-padded batch's `attention_mask` and `position_ids`
    moved to `device`."""
    kwargs = {**inputs, "use_cache": cache is not None}
    if cache is not None:
        kwargs[cache_kw] = cache
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask.to(device)
    if position_ids is not None:
        kwargs["position_ids"] = position_ids.to(device)
    return kwargs


class TorchBaseLM(BaseLM):
    """A frozen transformers causal LM. `forward` runs without gradients and returns float32 logits.

    LoRA twins inject their adapters into `model` (shared weights, `peft`); `forward` and `generate` run under
    peft's `disable_adapter()`, so they compute the base model itself. (Calling `model.generate` directly would
    include the adapter.)
    """

    def __init__(self, backend, model, tokenizer, path: Path | None, config: dict):
        self.backend, self.model, self.tokenizer, self.path, self.config = backend, model, tokenizer, path, config
        head = model.get_output_embeddings()
        self._vocab_size, self._hidden_size = int(head.weight.shape[0]), int(head.weight.shape[1])
        self.cache_kw = cache_keyword(model)
        self.peft = None  # the PeftModel of LoRA rewards sharing these weights (prt_torch.rewards)
        backend.device = self.device

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def hidden_size(self) -> int:
        return self._hidden_size

    def asarray(self, ids) -> torch.Tensor:
        return torch.as_tensor(ids, dtype=torch.long, device=self.device)

    def make_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def model_inputs(self, ids, cache=None, attention_mask=None, position_ids=None) -> dict:
        return forward_kwargs(self.cache_kw, self.device, cache, attention_mask, position_ids,
                              input_ids=self.asarray(ids))

    @torch.no_grad()
    def forward(self, ids, cache=None, *, hidden: bool = False, attention_mask=None, position_ids=None) -> ForwardOutput:
        """Logits (B, T, V) float32; `hidden` adds the states that feed the output layer (after the final norm).

        `attention_mask` (B, past + T) and `position_ids` (B, T) serve left-padded batches.
        """
        return self._forward_output(self.model_inputs(ids, cache, attention_mask, position_ids), hidden)

    def _forward_output(self, kwargs: dict, hidden: bool, logits: bool = True) -> ForwardOutput:
        """The base model (adapters off) on `kwargs`: float32 logits, and with `hidden` the states that feed the
        output layer. Without `logits` that layer is given no positions (the logits are None)."""
        captured = {}

        def capture(module, args):
            captured["hidden"] = args[0]
            return None if logits else (args[0][..., :0, :],) + args[1:]

        hook = None
        if hidden or not logits:
            hook = self.model.get_output_embeddings().register_forward_pre_hook(capture)
        try:
            with self.adapters_off():
                out = self.model(**kwargs)
        finally:
            if hook is not None:
                hook.remove()
        return ForwardOutput(out.logits.float() if logits else None, captured.get("hidden"))

    @torch.no_grad()
    def hidden_states(self, ids) -> torch.Tensor:
        """The states (B, T, H) that feed the output layer, without computing the logits. Only for sources whose
        `plain_output_weight` is not None: their logits are nothing more."""
        return self._forward_output(self.model_inputs(ids), hidden=True, logits=False).hidden

    def plain_output_weight(self) -> torch.Tensor | None:
        """The output layer's weight (V, H) when the model's logits are exactly `hidden @ weightᵀ` of the layer's
        input, else None.

        Probed on one token (again whenever the layer's weight is another tensor, e.g. sharded): the layer's result
        is replaced by a marker before any other hook sees it, and the logits are plain when the model returns that
        very tensor (no bias, soft-capping, scaling or slicing after the layer; a plain float weight, not quantised
        or sharded)."""
        head = self.model.get_output_embeddings()
        probed = getattr(self, "_plain_probe", None)
        if probed is None or probed[0] is not head.weight:
            self._plain_probe = (head.weight, head.weight if self._plain_logits(head) else None)
        return self._plain_probe[1]

    def _plain_logits(self, head) -> bool:
        if type(head) is not torch.nn.Linear or head.bias is not None or type(head.weight.data) is not torch.Tensor \
                or getattr(self.model, "is_quantized", False):
            return False
        marker = torch.zeros(1, 1, head.out_features, device=self.device)
        hook = head.register_forward_hook(lambda module, args, output: marker, prepend=True)
        try:
            with torch.no_grad(), self.adapters_off():
                return self.model(**self.model_inputs([[0]])).logits is marker
        finally:
            hook.remove()

    def adapters_off(self):
        """peft's `disable_adapter()` when LoRA rewards share these weights: the source pass sees the base model."""
        return self.peft.disable_adapter() if self.peft is not None else contextlib.nullcontext()

    def generate(self, *args, **kwargs):
        """`model.generate` of transformers (e.g. with a `PRTLogitsProcessor`)."""
        with torch.no_grad(), self.adapters_off():
            return self.model.generate(*args, **kwargs)
