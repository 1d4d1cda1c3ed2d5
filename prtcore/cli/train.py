"""`prt train`: train a portable reward (or, with --method sft, a plain fine-tune) with mlx-lm's conventions.

Precedence: flag > --config YAML > default. Every flag of the seed scripts is accepted.
"""

from __future__ import annotations

import json
from pathlib import Path


from ..config import LoRAConfig, RewardConfig, TrainingConfig
from ..errors import ConfigError

# flag dest -> (config section, field); sections: reward, lora, training, run
FIELDS = {
    "reward": ("reward", "kind"), "lam": ("reward", "lam"), "entropy_coeff": ("reward", "entropy_coeff"),
    "reward_d_model": ("reward", "d_model"), "reward_layers": ("reward", "num_layers"),
    "reward_heads": ("reward", "num_heads"), "reward_ffn_dim": ("reward", "ffn_dim"),
    "fine_tune_type": ("reward", "fine_tune_type"), "init": ("reward", "init"),
    "num_layers": ("lora", "num_layers"), "lora_r": ("lora", "rank"), "lora_scale": ("lora", "scale"),
    "lora_dropout": ("lora", "dropout"),
    **{name: ("training", name) for name in (
        "learning_rate", "iters", "epochs", "batch_size", "max_seq_length", "grad_accumulation_steps",
        "grad_checkpoint", "mask_prompt", "optimizer", "weight_decay", "lr_schedule", "warmup_steps",
        "steps_per_report", "steps_per_eval", "val_batches", "save_every", "seed")},
    "model": ("run", "model"), "data": ("run", "data"), "output_dir": ("run", "output_dir"),
    "backend": ("run", "backend"), "quantize_base": ("run", "quantize_base"), "method": ("run", "method"),
}
YAML_ALIASES = {"lambda": "lam", "adapter_path": "output_dir", "lora_rank": "lora_r", "train_type": "fine_tune_type"}


def add_arguments(parser) -> None:
    a = parser.add_argument
    a("--config", "-c", help="YAML file with any of these settings (flags override it)")
    a("--model", help="source base model directory")
    a("--data", help="directory with train.jsonl and valid.jsonl (test.jsonl optional)")
    a("--output-dir", "--adapter-path", dest="output_dir", help="where the reward artifact is written")
    a("--backend")
    a("--method", choices=("prt", "sft"), help="prt: train a reward (default); sft: plain LoRA/full fine-tune")
    a("--reward", choices=("linear", "transformer", "twin"), help="reward kind (default linear)")
    a("--fine-tune-type", choices=("lora", "full"))
    a("--init", choices=("copy", "zero_head"), help="twin initialisation")
    a("--lambda", dest="lam", type=float)
    a("--entropy-coeff", type=float)
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
    a("--mask-prompt", action="store_true", default=None)
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
    a("--quantize-base", type=int, choices=(4, 8), help="quantise the frozen base (mlx)")
    a("--dry-run", action="store_true", help="print parameter counts and the artifact size, train nothing")


def load_yaml(path) -> dict:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, found {type(data).__name__}")
    settings = {}
    for key, value in data.items():
        if key in ("lora_parameters",) and isinstance(value, dict):  # mlx-lm's nested LoRA block
            for sub, v in value.items():
                settings[{"rank": "lora_r", "scale": "lora_scale", "dropout": "lora_dropout"}.get(sub, sub)] = v
            continue
        name = YAML_ALIASES.get(key, key).replace("-", "_")
        if name not in FIELDS:
            raise ConfigError(f"{path}: unknown setting {key!r}")
        settings[name] = value
    return settings


def build_configs(args) -> tuple[dict, RewardConfig, TrainingConfig]:
    settings = load_yaml(args.config) if args.config else {}
    settings.update({k: v for k, v in vars(args).items() if k in FIELDS and v is not None})
    sections: dict[str, dict] = {"reward": {}, "lora": {}, "training": {}, "run": {}}
    for name, value in settings.items():
        section, field = FIELDS[name]
        sections[section][field] = value
    for required in ("model", "data", "output_dir"):
        if required not in sections["run"] and not (required != "model" and args.dry_run):
            raise ConfigError(f"--{required.replace('_', '-')} is required (as a flag or in --config)")
    lora = LoRAConfig(**sections["lora"])
    reward = RewardConfig(lora=lora, **sections["reward"])
    training = TrainingConfig(**sections["training"])
    return sections["run"], reward, training


def run(args) -> int:
    from ..plugins import get_backend
    from ..training import train_reward

    run_settings, reward, training = build_configs(args)
    backend = get_backend(run_settings.get("backend"))
    if run_settings.get("method", "prt") == "sft":
        raise ConfigError("--method sft is not available yet in this version")
    if args.dry_run:
        counts = backend.count_parameters(run_settings["model"], reward)
        print(json.dumps({"backend": backend.name, "reward": reward.to_dict(), **counts}, indent=2))
        return 0
    summary = train_reward(run_settings["model"], run_settings["data"], run_settings["output_dir"], reward, training,
                           backend=backend, resume=args.resume, quantize=run_settings.get("quantize_base"))
    print(json.dumps(summary, indent=2))
    return 0
