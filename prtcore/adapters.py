"""LoRA adapters in mlx-lm's and PEFT's layouts: detection and conversion, with NumPy only.

| aspect      | mlx-lm (`adapters.safetensors`)          | PEFT (`adapter_model.safetensors`)                    |
|-------------|------------------------------------------|-------------------------------------------------------|
| key         | `model.layers.3.mlp.up_proj.lora_a`      | `base_model.model.model.layers.3.mlp.up_proj.lora_A.weight` |
| A / B shape | (in, r) / (r, out)                       | (r, in) / (out, r)                                    |
| scaling     | `scale`                                  | `lora_alpha / r`  (rsLoRA: `lora_alpha / sqrt(r)`)    |
| layers      | last `num_layers` blocks, `keys`         | `layers_to_transform`, `target_modules`               |
| other       | trained tensors by name (`lm_head.weight`)| `modules_to_save` (`base_model.model.lm_head.weight`) |

Both layouts name their config `adapter_config.json`; `detect_layout` tells them apart. The settings of an
adapter are returned as a prtcore LoRAConfig whose `keys` are the adapted modules' paths inside a block.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from .artifacts import (PEFT_CONFIG, PEFT_WEIGHTS, check_safetensors, load_numpy_tensors, read_json,
                        save_numpy_tensors, write_json_atomic)
from .config import LoRAConfig
from .errors import ArtifactError

MLX_CONFIG = "adapter_config.json"
MLX_WEIGHTS = "adapters.safetensors"
PEFT_PREFIX = "base_model.model."

_MLX_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[ab])$")
_PEFT_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")
_LAYER = re.compile(r"(?:^|\.)layers\.(?P<index>\d+)\.(?P<inner>.+)$")


def detect_layout(path) -> str:
    """"peft" or "mlx_lm" for an adapter directory (by its adapter_config.json schema)."""
    path = Path(path)
    config = read_json(path / PEFT_CONFIG, "adapter config (adapter_config.json)")
    if "peft_type" in config:
        return "peft"
    if "lora_parameters" in config or "fine_tune_type" in config:
        return "mlx_lm"
    raise ArtifactError(f"{path / PEFT_CONFIG}: neither PEFT ('peft_type') nor mlx-lm ('lora_parameters') adapter config")


# ------------------------------------------------------------------------------------------------ tensors
def mlx_to_peft_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """mlx-lm names and shapes → PEFT's; other trained tensors (a new head) keep their name under the prefix."""
    out = {}
    for name, value in tensors.items():
        m = _MLX_KEY.match(name)
        if m:
            out[f"{PEFT_PREFIX}{m['module']}.lora_{m['ab'].upper()}.weight"] = np.ascontiguousarray(np.asarray(value).T)
        elif name.endswith(".m"):
            raise ArtifactError(f"tensor {name!r}: DoRA adapters are not supported")
        else:
            out[PEFT_PREFIX + name] = np.asarray(value)
    return out


def peft_to_mlx_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """PEFT names and shapes → mlx-lm's (the inverse of `mlx_to_peft_tensors`)."""
    out = {}
    for name, value in tensors.items():
        m = _PEFT_KEY.match(name)
        if m:
            out[f"{m['module']}.lora_{m['ab'].lower()}"] = np.ascontiguousarray(np.asarray(value).T)
        elif "lora_magnitude_vector" in name:
            raise ArtifactError(f"tensor {name!r}: DoRA adapters are not supported")
        elif name.startswith(PEFT_PREFIX):
            out[name[len(PEFT_PREFIX):]] = np.asarray(value)
        else:
            raise ArtifactError(f"tensor {name!r}: not a PEFT adapter tensor (expected prefix {PEFT_PREFIX!r})")
    return out


def adapted_modules(mlx_tensors: dict[str, np.ndarray]) -> dict[str, int]:
    """Adapted module path → rank, from mlx-lm tensor names."""
    out = {}
    for name, value in mlx_tensors.items():
        m = _MLX_KEY.match(name)
        if m and m["ab"] == "a":
            out[m["module"]] = int(np.shape(value)[1])
    return out


def _layers_and_keys(modules) -> tuple[list[int], tuple[str, ...]]:
    layers, keys = set(), set()
    for module in modules:
        m = _LAYER.search(module)
        if not m:
            raise ArtifactError(f"adapted module {module!r} is not inside a numbered block (`layers.N.`)")
        layers.add(int(m["index"]))
        keys.add(m["inner"])
    return sorted(layers), tuple(sorted(keys))


def extra_modules(mlx_tensors: dict[str, np.ndarray]) -> list[str]:
    """Modules trained as a whole next to the adapter (e.g. `lm_head` for init "zero_head")."""
    return sorted({name.rsplit(".", 1)[0] for name in mlx_tensors if not _MLX_KEY.match(name)})


# ------------------------------------------------------------------------------------------------ configs
def settings_from_tensors(mlx_tensors, *, scale: float, dropout: float, num_hidden_layers: int | None) -> LoRAConfig:
    """The LoRAConfig an adapter's tensors imply: rank, the last-N-layers span and the in-block keys."""
    modules = adapted_modules(mlx_tensors)
    if not modules:
        raise ArtifactError("the adapter holds no LoRA tensors")
    ranks = set(modules.values())
    if len(ranks) != 1:
        raise ArtifactError(f"the adapter mixes LoRA ranks {sorted(ranks)}; one rank per adapter is supported")
    layers, keys = _layers_and_keys(modules)
    if layers != list(range(layers[0], layers[-1] + 1)):
        raise ArtifactError(f"adapted layers {layers} are not contiguous; mlx-lm adapts the last N layers")
    if num_hidden_layers is not None and layers[-1] != num_hidden_layers - 1:
        raise ArtifactError(f"adapted layers {layers} are not the last of {num_hidden_layers} layers")
    num_layers = -1 if num_hidden_layers is not None and len(layers) == num_hidden_layers else len(layers)
    return LoRAConfig(rank=ranks.pop(), scale=float(scale), dropout=float(dropout), num_layers=num_layers, keys=keys)


def peft_config(mlx_tensors, lora: LoRAConfig, *, base_model_name_or_path: str | None = None) -> dict:
    """adapter_config.json in PEFT's schema for adapter tensors in mlx-lm naming."""
    layers, keys = _layers_and_keys(adapted_modules(mlx_tensors))
    extra = extra_modules(mlx_tensors)
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": int(lora.rank),
        "lora_alpha": float(lora.scale) * int(lora.rank),
        "lora_dropout": float(lora.dropout),
        "target_modules": sorted({k.rsplit(".", 1)[-1] for k in keys}),
        "layers_to_transform": layers,
        "layers_pattern": "layers",  # adapted modules sit in `layers.N` (_LAYER): not in other numbered blocks (a VLM's vision tower)
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": [m.rsplit(".", 1)[-1] for m in extra] or None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "base_model_name_or_path": base_model_name_or_path,
        "revision": None,
    }


def mlx_config(lora: LoRAConfig, *, model: str | None = None) -> dict:
    """adapter_config.json in mlx-lm's schema."""
    params = {"rank": int(lora.rank), "scale": float(lora.scale), "dropout": float(lora.dropout)}
    if lora.keys is not None:
        params["keys"] = list(lora.keys)
    out = {"fine_tune_type": "lora", "num_layers": int(lora.num_layers), "lora_parameters": params}
    if model is not None:
        out["model"] = model
    return out


def _peft_scale(config: dict, where: Path) -> float:
    for field in ("rank_pattern", "alpha_pattern"):
        if config.get(field):
            raise ArtifactError(f"{where}: field {field!r} (per-module ranks or alphas) is not supported")
    if config.get("use_dora"):
        raise ArtifactError(f"{where}: DoRA adapters (use_dora) are not supported")
    if config.get("fan_in_fan_out"):
        raise ArtifactError(f"{where}: fan_in_fan_out adapters are not supported")
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(r, int) or r <= 0 or not isinstance(alpha, (int, float)):
        raise ArtifactError(f"{where}: fields 'r' and 'lora_alpha' must be a positive integer and a number")
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


# ------------------------------------------------------------------------------------------------ mlx-lm's limits
# What mlx-lm's `load_adapters` (mlx_lm/tuner/utils.py) builds: `linear_to_lora_layers` turns the modules named by
# `keys` in the last `num_layers` blocks into LoRA layers of one rank and one scale (no bias, no magnitude unless
# fine_tune_type "dora"), then it loads `adapters.safetensors` accepting only their `lora_a` / `lora_b` (and DoRA's
# `m`) leaves. PEFT settings it has no counterpart for, with what they mean (a falsy value is fine; `bias`: "none").
MLX_LM_UNSUPPORTED = {
    "modules_to_save": "modules trained whole next to the adapter, which mlx-lm's adapters cannot hold",
    "bias": "trained biases of the base layers, which mlx-lm's adapters cannot hold",
    "lora_bias": "a bias on lora_B, which mlx-lm's LoRA layers do not have",
    "use_dora": "a DoRA adapter, which prtcore converts only as LoRA",
    "rank_pattern": "per-module ranks; an mlx-lm adapter has one rank",
    "alpha_pattern": "per-module alphas; an mlx-lm adapter has one scale",
    "fan_in_fan_out": "transposed base weights (Conv1D), which mlx-lm's models do not have",
    "target_parameters": "LoRA on parameters (e.g. fused experts); mlx-lm adapts linear modules only",
    "trainable_token_indices": "trained embedding rows, which mlx-lm's adapters cannot hold",
    "layer_replication": "replicated layers; mlx-lm adapts the model's own layers",
    "alora_invocation_tokens": "activated LoRA (aLoRA); mlx-lm applies the adapter to every token",
    "use_qalora": "QALoRA (pooled inputs); mlx-lm's LoRA layers read the full input",
    "use_bdlora": "block-diagonal LoRA, which mlx-lm's LoRA layers do not have",
    "arrow_config": "an Arrow mixture of adapters, which mlx-lm does not route",
    "kasa_config": "KaSA, which mlx-lm's LoRA layers do not have",
    "monteclora_config": "MonteCLoRA, which mlx-lm's LoRA layers do not have",
}
_EXPERT = re.compile(r"(?:^|\.)experts\.\d+\.")


def _shown(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def check_mlx_lm_loadable(path, *, num_hidden_layers: int | None = None) -> None:
    """Refuse a PEFT adapter (directory `path`) that plain mlx-lm cannot load once converted, naming the
    adapter_config.json field and value; nothing is read but the config and the tensor names."""
    path = Path(path)
    where = path / PEFT_CONFIG
    config = read_json(where, "adapter config (adapter_config.json)")
    if "peft_type" not in config:
        return  # mlx-lm's own layout
    if config.get("peft_type") != "LORA":
        raise ArtifactError(f"{where}: field 'peft_type' = {_shown(config.get('peft_type'))}: mlx-lm loads only "
                            "LORA adapters")
    for field, why in MLX_LM_UNSUPPORTED.items():
        value = config.get(field)
        if (value not in (None, "none") if field == "bias" else bool(value)):
            raise ArtifactError(f"{where}: field {field!r} = {_shown(value)}: {why}")
    names = sorted(k for k in check_safetensors(path / PEFT_WEIGHTS) if k != "__metadata__")
    targets = _shown(config.get("target_modules"))
    for name in names:
        if ".lora_A." in name or ".lora_B." in name:
            if name.endswith(".bias"):
                raise ArtifactError(f"{where}: field 'lora_bias' = {_shown(config.get('lora_bias', False))}, but "
                                    f"tensor {name} is a LoRA bias, which mlx-lm's LoRA layers do not have")
        elif "lora_embedding_" in name:
            raise ArtifactError(f"{where}: field 'target_modules' = {targets}: tensor {name} adapts an embedding, "
                                "which prtcore converts only for linear layers")
        elif "lora_magnitude_vector" in name:
            raise ArtifactError(f"{where}: field 'use_dora' = {_shown(config.get('use_dora', False))}, but tensor "
                                f"{name} is a DoRA magnitude, which prtcore converts only as LoRA")
        else:
            field = "bias" if name.endswith(".bias") else "modules_to_save"
            raise ArtifactError(f"{where}: field {field!r} = {_shown(config.get(field))}, but tensor {name} is not a "
                                "LoRA matrix: mlx-lm's adapters hold only lora_a / lora_b")
    modules = sorted({m["module"] for m in map(_PEFT_KEY.match, names) if m})
    for module in modules:
        if not _LAYER.search(module):
            raise ArtifactError(f"{where}: field 'target_modules' = {targets}: module {module} is not in a numbered "
                                "block (layers.N), where mlx-lm places LoRA layers")
        if _EXPERT.search(module):
            raise ArtifactError(f"{where}: field 'target_modules' = {targets}: module {module} is one expert of a "
                                "mixture, which mlx-lm stacks into one switch layer")
    layers = sorted({int(_LAYER.search(m)["index"]) for m in modules})
    if layers and (layers != list(range(layers[0], layers[-1] + 1))
                   or (num_hidden_layers is not None and layers[-1] != num_hidden_layers - 1)):
        of = f" of {num_hidden_layers}" if num_hidden_layers is not None else ""
        raise ArtifactError(f"{where}: field 'layers_to_transform' = {_shown(config.get('layers_to_transform'))}: "
                            f"adapted layers {layers}{of}; mlx-lm adapts the last N layers")


# ------------------------------------------------------------------------------------------------ files
def read_adapter(path, *, num_hidden_layers: int | None = None) -> tuple[str, dict[str, np.ndarray], LoRAConfig]:
    """(layout, tensors in mlx-lm naming, LoRAConfig) of an adapter directory in either layout."""
    path = Path(path)
    layout = detect_layout(path)
    config = read_json(path / PEFT_CONFIG)
    where = path / PEFT_CONFIG
    if layout == "peft":
        if config.get("peft_type") != "LORA":
            raise ArtifactError(f"{where}: peft_type {config.get('peft_type')!r} is not supported (only 'LORA')")
        tensors = peft_to_mlx_tensors(load_numpy_tensors(path / PEFT_WEIGHTS))
        scale, dropout = _peft_scale(config, where), config.get("lora_dropout", 0.0)
    else:
        fine_tune = config.get("fine_tune_type", "lora")
        if fine_tune != "lora":
            raise ArtifactError(f"{where}: fine_tune_type {fine_tune!r} is not supported here (only 'lora')")
        params = config.get("lora_parameters")
        if not isinstance(params, dict) or "scale" not in params:
            raise ArtifactError(f"{where}: field 'lora_parameters' must hold 'rank' and 'scale'")
        tensors = {k: v for k, v in load_numpy_tensors(path / MLX_WEIGHTS).items()}
        scale, dropout = params["scale"], params.get("dropout", 0.0)
    return layout, tensors, settings_from_tensors(tensors, scale=scale, dropout=dropout,
                                                  num_hidden_layers=num_hidden_layers)


def write_peft(path, mlx_tensors, lora: LoRAConfig, *, base_model_name_or_path: str | None = None) -> None:
    """Write adapter_config.json + adapter_model.safetensors (float32) into existing directory `path`."""
    path = Path(path)
    peft = {k: np.asarray(v, dtype=np.float32) for k, v in mlx_to_peft_tensors(mlx_tensors).items()}
    save_numpy_tensors(path / PEFT_WEIGHTS, peft, metadata={"format": "pt"})
    write_json_atomic(path / PEFT_CONFIG, peft_config(mlx_tensors, lora, base_model_name_or_path=base_model_name_or_path))


def write_mlx(path, mlx_tensors, lora: LoRAConfig, *, model: str | None = None) -> None:
    """Write adapter_config.json + adapters.safetensors in mlx-lm's layout into existing directory `path`."""
    path = Path(path)
    save_numpy_tensors(path / MLX_WEIGHTS, {k: np.asarray(v, dtype=np.float32) for k, v in mlx_tensors.items()})
    write_json_atomic(path / MLX_CONFIG, mlx_config(lora, model=model))


def convert(src, dst, layout: str, *, num_hidden_layers: int | None = None, base_model_name_or_path: str | None = None) -> Path:
    """Convert the adapter in directory `src` to `layout` ("peft" or "mlx_lm") in directory `dst`."""
    if layout not in ("peft", "mlx_lm"):
        raise ArtifactError(f"layout {layout!r}: must be 'peft' or 'mlx_lm'")
    _, tensors, lora = read_adapter(src, num_hidden_layers=num_hidden_layers)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    if layout == "peft":
        write_peft(dst, tensors, lora, base_model_name_or_path=base_model_name_or_path)
    else:
        write_mlx(dst, tensors, lora, model=base_model_name_or_path)
    return dst
