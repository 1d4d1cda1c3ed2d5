"""The settings of `prt train`: which config field each flag sets, the defaults its help shows, and the YAML file.

A setting is named by its flag's dest (`lora_r`, `learning_rate`, ...). `FIELDS` maps it to a section (reward, lora,
training: the attrs classes of prtcore.config; run: the rest) and a field; the defaults shown by `--help` are read
from those classes, so there is one place for each. The YAML file (`--config`) may use mlx-lm's keys
(`fine_tune_type`, `lora_parameters: {rank, scale, dropout, keys}`, `num_layers`, `adapter_path`, `lr_schedule:
{name, warmup}`, `train`, `test`, `test_batches`, `resume_adapter_file`, `report_to`, `project_name`).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import attrs

from ..config import LoRAConfig, RewardConfig, TrainingConfig
from ..errors import ConfigError

# flag dest -> (config section, field); sections: reward, lora, training, run
FIELDS = {
    "reward": ("reward", "kind"), "lam": ("reward", "lam"), "entropy_coeff": ("reward", "entropy_coeff"),
    "reward_d_model": ("reward", "d_model"), "reward_layers": ("reward", "num_layers"),
    "reward_heads": ("reward", "num_heads"), "reward_ffn_dim": ("reward", "ffn_dim"),
    "fine_tune_type": ("reward", "fine_tune_type"), "init": ("reward", "init"),
    "num_layers": ("lora", "num_layers"), "lora_r": ("lora", "rank"), "lora_scale": ("lora", "scale"),
    "lora_dropout": ("lora", "dropout"), "lora_keys": ("lora", "keys"),
    **{name: ("training", name) for name in (
        "learning_rate", "iters", "epochs", "batch_size", "max_seq_length", "grad_accumulation_steps",
        "grad_checkpoint", "mask_prompt", "optimizer", "weight_decay", "lr_schedule", "warmup_steps",
        "steps_per_report", "steps_per_eval", "val_batches", "save_every", "seed")},
    **{name: ("run", name) for name in (
        "model", "data", "output_dir", "backend", "quantize_base", "method", "train", "test", "test_batches",
        "resume_adapter_file", "report_to", "project_name")},
}
SECTION_CLASSES = {"reward": RewardConfig, "lora": LoRAConfig, "training": TrainingConfig}
# defaults of the run section (the others come from their config class)
RUN_DEFAULTS = {"method": "prt", "backend": "PRT_BACKEND, else mlx on Apple silicon, else torch",
                "test_batches": 500, "project_name": "the output directory's name"}
YAML_ALIASES = {"lambda": "lam", "adapter_path": "output_dir", "lora_rank": "lora_r", "train_type": "fine_tune_type"}
LORA_PARAMETERS = {"rank": "lora_r", "scale": "lora_scale", "dropout": "lora_dropout", "keys": "lora_keys"}
# mlx-lm config keys with no counterpart here (its allocator's cache limit): read, and warned about
YAML_IGNORED = ("clear_cache_threshold",)
FLAG_NAMES = {"lam": "--lambda", "output_dir": "--output-dir"}
PRT_ONLY = ("reward", "lam", "entropy_coeff", "reward_d_model", "reward_layers", "reward_heads", "reward_ffn_dim", "init")
REPORT_TARGETS = ("wandb", "tensorboard")


def flag_of(name: str) -> str:
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def default_of(name: str):
    """The value a setting takes when neither a flag nor the YAML file gives it (None: none)."""
    section, field = FIELDS[name]
    if section == "run":
        return RUN_DEFAULTS.get(name)
    attribute = attrs.fields_dict(SECTION_CLASSES[section])[field]
    default = attribute.default
    return default.factory() if isinstance(default, attrs.Factory) else default


def shown_default(name: str) -> str:
    value = default_of(name)
    if isinstance(value, bool) or value is None:
        return "off" if not value else "on"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


# ------------------------------------------------------------------------------------------------ YAML
def _key_lines(text: str) -> dict[str, int]:
    """Line of every top-level key (and of each key inside lora_parameters) of a YAML mapping."""
    import yaml

    lines: dict[str, int] = {}
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if not isinstance(node, yaml.MappingNode):
        return lines
    for key, value in node.value:
        lines[str(key.value)] = key.start_mark.line + 1
        if key.value == "lora_parameters" and isinstance(value, yaml.MappingNode):
            for sub, _ in value.value:
                lines[f"lora_parameters.{sub.value}"] = sub.start_mark.line + 1
    return lines


def _lr_schedule(value, where: str) -> dict:
    """mlx-lm's `lr_schedule: {name, arguments, warmup}` → lr_schedule / warmup_steps."""
    names = {"cosine_decay": "cosine", "linear_schedule": "linear", "constant": "constant", "cosine": "cosine",
             "linear": "linear"}
    if isinstance(value, str):
        return {"lr_schedule": names.get(value, value)}
    if not isinstance(value, dict) or value.get("name") not in names:
        raise ConfigError(f"{where}: lr_schedule must be constant, cosine or linear (or mlx-lm's "
                          "{name: cosine_decay, ...}), found " + repr(value))
    out = {"lr_schedule": names[value["name"]]}
    if "warmup" in value:
        out["warmup_steps"] = value["warmup"]
    return out


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _number(value):
    """YAML 1.1 reads `1e-4` (no dot) as a string; take it as the number it is meant to be, as mlx-lm does."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        text = value.strip()
        return int(text) if text.lstrip("+-").isdigit() else float(text)
    return value


def load_yaml(path) -> tuple[dict, dict[str, str]]:
    """(settings by flag dest, where each setting came from as "file:line: key")."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: config file not found") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {path}: not a YAML file ({type(e).__name__})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, found {type(data).__name__}")
    lines = _key_lines(text)
    settings, origin = {}, {}

    def put(name, value, key):
        settings[name] = _number(value)
        origin[name] = f"{path}:{lines.get(key, 1)}: {key.split('.')[-1]}"

    for key, value in data.items():
        where = f"{path}:{lines.get(str(key), 1)}"
        if key == "lora_parameters":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: lora_parameters must be a mapping (rank, scale, dropout, keys)")
            if "alpha" in value and "scale" not in value:
                raise ConfigError(f"{where}: lora_parameters has 'alpha' but no 'scale'; mlx-lm and prtcore use "
                                  "scale (= PEFT's lora_alpha / rank)")
            for sub, v in value.items():
                if sub not in LORA_PARAMETERS:
                    raise ConfigError(f"{path}:{lines.get(f'lora_parameters.{sub}', 1)}: unknown lora_parameters key "
                                      f"{sub!r} (known: {', '.join(LORA_PARAMETERS)})")
                put(LORA_PARAMETERS[sub], v, f"lora_parameters.{sub}")
            continue
        if key == "lr_schedule":
            for name, v in _lr_schedule(value, where).items():
                put(name, v, "lr_schedule")
            continue
        if key == "wandb":  # mlx-lm's former key: `wandb: PROJECT` reported to wandb in that project
            if value:
                put("report_to", "wandb", "wandb")
                put("project_name", value, "wandb")
            continue
        if key in YAML_IGNORED:
            warnings.warn(f"{where}: {key} is an mlx-lm memory setting with no effect in prt train")
            continue
        name = YAML_ALIASES.get(key, key).replace("-", "_") if isinstance(key, str) else key
        if name not in FIELDS:
            raise ConfigError(f"{where}: unknown setting {key!r}")
        put(name, value, str(key))
    return settings, origin


# ------------------------------------------------------------------------------------------------ run settings
def report_targets(value, where: str) -> tuple[str, ...]:
    """mlx-lm's `report_to` ("wandb", "tensorboard", or both comma-separated; a YAML list too) as a tuple."""
    if value is None or value == "":
        return ()
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = tuple(str(item).strip().lower() for item in items if str(item).strip())
    for name in names:
        if name not in REPORT_TARGETS:
            raise ConfigError(f"{where} {value}: {name!r} is not a place to report to (known: "
                              f"{', '.join(REPORT_TARGETS)})")
    return names


def check_flags_fit_the_kind(settings: dict, origin: dict, reward: dict, method: str) -> None:
    """Every reward or LoRA setting given must be one the run uses: a setting of a kind other than the run's, or
    LoRA settings on a full fine-tune, is an error naming it and what uses it (never silently ignored)."""
    from ..plugins import reward_kind, reward_kinds

    kind_name = reward.get("kind", default_of("reward"))
    kind = reward_kind(kind_name) if method == "prt" else None
    fine_tune = reward.get("fine_tune_type", default_of("fine_tune_type"))
    for name in settings:
        section, field = FIELDS[name]
        if section not in ("reward", "lora") or field in ("kind", "lam", "entropy_coeff"):
            continue
        where = origin.get(name) or flag_of(name)
        used = field if section == "reward" else "lora"
        if kind is not None and used not in kind.fields:
            users = [k.name for k in reward_kinds().values() if used in k.fields]
            alternative = f"use --reward {' or '.join(users)}" if users else "no installed reward kind uses it"
            raise ConfigError(f"{where}: the {kind_name!r} reward does not use this setting; {alternative}, or "
                              "drop it")
        if section == "lora" and fine_tune == "full":
            what = ("every layer trains with --fine-tune-type full (prt has no partial full fine-tune)"
                    if field == "num_layers" else "a LoRA setting has no effect with --fine-tune-type full")
            raise ConfigError(f"{where}: {what}; use --fine-tune-type lora, or drop it")
