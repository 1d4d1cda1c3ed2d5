"""`prt train`: train a portable reward (or, with --method sft, a plain fine-tune) with mlx-lm's conventions.

Precedence: flag > --config YAML > default. Every flag of the seed scripts is accepted. The data directory is
checked before any model loads; an output directory that already holds a run is never written into unless
--resume (continue it) or --overwrite (replace it, once the new run's model and data are checked) says what to do
with it (prtcore.rundir).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import attrs

from ..config import LoRAConfig, RewardConfig, TrainingConfig
from ..errors import ConfigError
from ..plugins import reward_kinds

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
    "model": ("run", "model"), "data": ("run", "data"), "output_dir": ("run", "output_dir"),
    "backend": ("run", "backend"), "quantize_base": ("run", "quantize_base"), "method": ("run", "method"),
}
YAML_ALIASES = {"lambda": "lam", "adapter_path": "output_dir", "lora_rank": "lora_r", "train_type": "fine_tune_type"}
LORA_PARAMETERS = {"rank": "lora_r", "scale": "lora_scale", "dropout": "lora_dropout", "keys": "lora_keys"}
# mlx-lm config keys that have no meaning here (mlx-lm's `train: true`, logging to wandb, ...): accepted, ignored
YAML_IGNORED = ("train", "test", "test_batches", "report_to", "project_name", "wandb", "clear_cache_threshold")
FLAG_NAMES = {"lam": "--lambda", "output_dir": "--output-dir"}
PRT_ONLY = ("reward", "lam", "entropy_coeff", "reward_d_model", "reward_layers", "reward_heads", "reward_ffn_dim", "init")


def flag_of(name: str) -> str:
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def add_arguments(parser) -> None:
    a = parser.add_argument
    a("--config", "-c", help="YAML file with any of these settings (flags override it)")
    a("--model", help="source base model directory")
    a("--data", help="directory with train.jsonl and valid.jsonl (test.jsonl optional)")
    a("--output-dir", "--adapter-path", dest="output_dir", help="where the reward artifact (or fine-tune) is written")
    a("--backend")
    a("--method", choices=("prt", "sft"), help="prt: train a reward (default); sft: plain LoRA/full fine-tune of the base")
    a("--reward", choices=tuple(reward_kinds()), help="reward kind (default linear; plugins add others)")
    a("--fine-tune-type", choices=("lora", "full"), help="twin reward / sft: LoRA (default) or every weight")
    a("--init", choices=("copy", "zero_head"), help="twin initialisation: copy (default, the paper's: step 0 is the "
      "source at temperature 0.5) or zero_head (a zero output layer: step 0 is the source itself; transferred better "
      "in docs/method.md's study)")
    a("--lambda", dest="lam", type=float)
    a("--entropy-coeff", type=float, help="weight of the reward's entropy term (default 0, the paper's main results)")
    a("--reward-d-model", type=int)
    a("--reward-layers", type=int)
    a("--reward-heads", type=int)
    a("--reward-ffn-dim", type=int)
    a("--num-layers", type=int, help="LoRA: adapt the last N layers (-1: all)")
    a("--lora-r", "--lora-rank", dest="lora_r", type=int)
    a("--lora-scale", type=float)
    a("--lora-dropout", type=float)
    a("--learning-rate", type=float)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--iters", type=int)
    group.add_argument("--epochs", type=int)
    a("--batch-size", type=int)
    a("--max-seq-length", type=int)
    a("--grad-accumulation-steps", type=int)
    a("--grad-checkpoint", action="store_true", default=None)
    a("--mask-prompt", action="store_true", default=None, help="train on assistant turns only (every one of a chat)")
    a("--optimizer", choices=("adam", "adamw"))
    a("--weight-decay", type=float)
    a("--lr-schedule", choices=("constant", "cosine", "linear"))
    a("--warmup-steps", type=int)
    a("--steps-per-report", type=int)
    a("--steps-per-eval", type=int)
    a("--val-batches", type=int)
    a("--save-every", type=int)
    a("--seed", type=int)
    a("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint")
    a("--overwrite", action="store_true", help="replace the run in OUTPUT_DIR (kept until the new run has checked its inputs and written a checkpoint)")
    a("--quantize-base", type=int, choices=(4, 8), help="quantise the frozen base (mlx)")
    a("--dry-run", action="store_true", help="print parameter counts and the artifact size, train nothing")


# ------------------------------------------------------------------------------------------------ YAML
def _key_lines(path: Path, text: str) -> dict[str, int]:
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
    """(settings by flag name, where each setting came from as "file:line")."""
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
    lines = _key_lines(path, text)
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
        if key in YAML_IGNORED:
            continue
        name = YAML_ALIASES.get(key, key).replace("-", "_") if isinstance(key, str) else key
        if name not in FIELDS:
            raise ConfigError(f"{where}: unknown setting {key!r}")
        put(name, value, str(key))
    return settings, origin


# ------------------------------------------------------------------------------------------------ configs
_CLASS_SECTION = {"RewardConfig": "reward", "LoRAConfig": "lora", "TrainingConfig": "training"}
_FIELD_ERROR = re.compile(r"^(?P<cls>\w+)\.(?P<field>\w+)=(?P<value>.*?): (?P<rule>.*)$")


def _explain(error: ConfigError, origin: dict[str, str]) -> ConfigError:
    """Restate a config class's error in terms of the flag or the YAML line that set the value."""
    m = _FIELD_ERROR.match(str(error))
    if not m or m["cls"] not in _CLASS_SECTION:
        return error
    section = _CLASS_SECTION[m["cls"]]
    names = [n for n, (s, f) in FIELDS.items() if s == section and f == m["field"]]
    if not names:
        return error
    name = names[0]
    where = origin.get(name) or flag_of(name)
    return ConfigError(f"{where} {m['value']}: {m['rule']}")


def build_configs(args) -> tuple[dict, RewardConfig, TrainingConfig, LoRAConfig]:
    settings, origin = load_yaml(args.config) if args.config else ({}, {})
    flags = {k: v for k, v in vars(args).items() if k in FIELDS and v is not None}
    for name in flags:
        origin.pop(name, None)
    settings.update(flags)
    if settings.get("iters") is not None and settings.get("epochs") is not None:
        raise ConfigError(f"{origin.get('epochs') or origin.get('iters') or '--iters/--epochs'}: give iters or epochs, not both")
    sections: dict[str, dict] = {"reward": {}, "lora": {}, "training": {}, "run": {}}
    for name, value in settings.items():
        section, field = FIELDS[name]
        sections[section][field] = value
    run = sections["run"]
    method = run.get("method", "prt")
    if method not in ("prt", "sft"):
        raise ConfigError(f"{origin.get('method', '--method')} {method!r}: must be 'prt' or 'sft'")
    for required in ("model", "data", "output_dir"):
        if required not in run and not (required != "model" and args.dry_run):
            raise ConfigError(f"{flag_of(required)} is required (as a flag or in --config)")
    if method == "sft":
        given = [n for n in PRT_ONLY if n in flags]
        if given:
            raise ConfigError(f"{flag_of(given[0])}: a reward setting; --method sft fine-tunes the base itself "
                              "(use --fine-tune-type and the LoRA flags)")
    try:
        lora = LoRAConfig(**sections["lora"])
        reward = RewardConfig(lora=lora, **sections["reward"])
        training = TrainingConfig(**sections["training"])
    except ConfigError as e:
        raise _explain(e, origin) from None
    except TypeError as e:  # a YAML value of a type attrs cannot even compare (a list where a number goes)
        raise ConfigError(f"{args.config}: {e}") from None
    return run, reward, training, lora


def run(args) -> int:
    from ..plugins import get_backend
    from ..training import train_reward, train_sft

    run_settings, reward, training, lora = build_configs(args)
    method = run_settings.get("method", "prt")
    backend = get_backend(run_settings.get("backend"))
    quantize = run_settings.get("quantize_base")
    if quantize and "quantize" not in backend.capabilities:
        raise ConfigError(f"--quantize-base {quantize}: the {backend.name!r} backend cannot quantise a base (mlx can)")
    if args.dry_run:
        print(json.dumps(dry_run(backend, run_settings, reward, method), indent=2))
        return 0
    try:
        if method == "sft":
            summary = train_sft(run_settings["model"], run_settings["data"], run_settings["output_dir"], training,
                                lora=lora if reward.fine_tune_type == "lora" else None, backend=backend,
                                resume=args.resume, overwrite=args.overwrite, quantize=quantize)
        else:
            summary = train_reward(run_settings["model"], run_settings["data"], run_settings["output_dir"], reward,
                                   training, backend=backend, resume=args.resume, overwrite=args.overwrite,
                                   quantize=quantize)
    except KeyboardInterrupt:
        import sys

        from ..training import checkpoint_step

        step = checkpoint_step(run_settings["output_dir"])
        hint = (f"the checkpoint of step {step} in {run_settings['output_dir']}/checkpoint is kept; rerun with "
                "--resume to continue" if step is not None else "no checkpoint was written yet")
        sys.stderr.write(f"\nprt train: {hint}\n")
        raise
    from ..reporting import is_main_process

    if is_main_process():  # one summary, not one per rank of a multi-process launch
        print(json.dumps(summary, indent=2))
    return 0


def dry_run(backend, run_settings: dict, reward: RewardConfig, method: str) -> dict:
    """Parameter counts and artifact size without loading weights."""
    from ..hub import resolve_model

    run_settings = {**run_settings, "model": resolve_model(run_settings["model"])}
    if method == "prt":
        counts = backend.count_parameters(run_settings["model"], reward)
        return {"backend": backend.name, "method": "prt", "reward": reward.to_dict(), **counts}
    twin = RewardConfig(kind="twin", fine_tune_type=reward.fine_tune_type, lora=reward.lora)
    counts = backend.count_parameters(run_settings["model"], twin)
    if reward.fine_tune_type == "full":  # the model itself trains: one copy, not a source plus a twin
        counts["total"] = counts["trainable"]
    out = {"backend": backend.name, "method": "sft", "fine_tune_type": reward.fine_tune_type, **counts}
    if reward.fine_tune_type == "lora":
        out["lora"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in attrs.asdict(reward.lora).items()}
    return out
