"""`prt train`: train a portable reward (or, with --method sft, a plain fine-tune) with mlx-lm's conventions.

Precedence: flag > --config YAML > default (`prt train --help` shows each default). mlx-lm's flags and keys mean what
they mean there: `--fine-tune-type lora|full`, the LoRA settings (`--num-layers`, `--lora-r`, `lora_parameters`)
make the reward a twin of the source trained that way (the kind `--reward` names, when given, must use them:
a setting no part of the run uses is an error, never ignored); `--test` evaluates on test.jsonl after training, or
with `--test` alone (no `--train`) the artifact already in the output directory; `--resume-adapter-file` starts from
a reward's weights; `--report-to wandb,tensorboard` logs the metrics there too. The data directory is checked
before any model loads; an output directory that already holds a run is never written into unless --resume
(continue it) or --overwrite (replace it, once the new run's model and data are checked) says what to do with it
(prtcore.rundir).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import attrs

from ..config import LoRAConfig, RewardConfig, TrainingConfig
from ..errors import ConfigError
from ..plugins import reward_kinds
from .train_settings import (  # noqa: F401  (load_yaml and FIELDS are read from here too)
    FIELDS, PRT_ONLY, REPORT_TARGETS, check_flags_fit_the_kind, default_of, flag_of, load_yaml, report_targets,
    shown_default,
)

DORA_REFUSAL = ("DoRA twins and fine-tunes are not implemented on any prt backend yet (mlx-lm's DoRALinear and "
                "peft's use_dora are not wired into the reward artifact); use --fine-tune-type lora (the closest) or "
                "full")


def add_arguments(parser) -> None:
    def a(*flags, help, shown=None, **kwargs):
        """An option whose help ends with its default: `shown`, else the config classes' (prtcore.config)."""
        dest = kwargs.get("dest") or flags[0].lstrip("-").replace("-", "_")
        shown = shown if shown is not None else shown_default(dest) if dest in FIELDS else "off"
        parser.add_argument(*flags, help=f"{help} (default: {shown})".replace("%", "%%"), **kwargs)

    a("--config", "-c", help="YAML file with any of these settings, mlx-lm's keys included (flags override it)",
      shown="none")
    a("--model", help="source base model: a directory or a Hub id", shown="required")
    a("--data", help="directory with train.jsonl and valid.jsonl (test.jsonl for --test)", shown="required")
    a("--output-dir", "--adapter-path", dest="output_dir", shown="required",
      help="where the reward artifact (or fine-tune), best/, checkpoint/ and the metrics are written")
    a("--backend", help="mlx or torch")
    a("--method", choices=("prt", "sft"), help="prt: train a reward; sft: a plain LoRA/full fine-tune of the base")
    a("--train", action="store_true", default=None, shown="on unless --test is given alone",
      help="train (mlx-lm's flag; with --test, test after training)")
    a("--test", action="store_true", default=None,
      help="report the loss and perplexity on test.jsonl after training; without --train, of the result already "
           "in --output-dir")
    a("--test-batches", type=int, help="test batches of --batch-size rows (-1: the whole test set)")
    a("--reward", choices=tuple(reward_kinds()), shown="linear, or twin when --fine-tune-type or a LoRA setting "
      "is given", help="reward kind (plugins add others)")
    a("--fine-tune-type", choices=("lora", "dora", "full"),
      help="how the twin reward (or --method sft) trains: LoRA, or every weight (full); implies --reward twin. dora "
           "is refused: not implemented")
    a("--init", choices=("copy", "zero_head"), help="twin initialisation: copy (the paper's: step 0 is the source at "
      "temperature 0.5) or zero_head (a zero output layer: step 0 is the source itself; it transferred worse in "
      "docs/method.md's study)")
    a("--lambda", dest="lam", type=float, help="λ: the reward is added to the base's log-probs as r/λ")
    a("--entropy-coeff", type=float, help="weight of the reward's entropy term (0: none, the paper's main results)")
    a("--reward-d-model", type=int, help="transformer reward: width")
    a("--reward-layers", type=int, help="transformer reward: blocks")
    a("--reward-heads", type=int, help="transformer reward: attention heads")
    a("--reward-ffn-dim", type=int, help="transformer reward: feed-forward width")
    a("--num-layers", type=int, help="LoRA: adapt the last N layers (-1: all); implies --reward twin")
    a("--lora-r", "--lora-rank", dest="lora_r", type=int, help="LoRA rank; implies --reward twin")
    a("--lora-scale", type=float, help="LoRA scale (PEFT's lora_alpha / rank); implies --reward twin")
    a("--lora-dropout", type=float, help="LoRA dropout; implies --reward twin")
    a("--learning-rate", type=float, help="peak learning rate")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--iters", type=int, help="optimiser iterations (default: one epoch, or --epochs)")
    group.add_argument("--epochs", type=int, help="passes over train.jsonl, instead of --iters (default: 1)")
    a("--batch-size", type=int, help="rows per iteration (the global batch under a multi-process launch)")
    a("--max-seq-length", type=int, help="longer rows are truncated, with one warning")
    a("--grad-accumulation-steps", type=int, help="iterations per optimiser update")
    a("--grad-checkpoint", action="store_true", default=None, help="recompute activations to save memory")
    a("--mask-prompt", action="store_true", default=None, help="train on assistant turns only (every one of a chat)")
    a("--optimizer", choices=("adam", "adamw"), help="optimiser")
    a("--weight-decay", type=float, help="AdamW weight decay")
    a("--lr-schedule", choices=("constant", "cosine", "linear"), help="learning-rate schedule after warm-up")
    a("--warmup-steps", type=int, help="optimiser updates of linear warm-up")
    a("--steps-per-report", type=int, help="iterations between training-loss reports")
    a("--steps-per-eval", type=int, help="iterations between validations (one runs before training, too)")
    a("--val-batches", type=int, help="validation batches (-1: the whole validation set)")
    a("--save-every", type=int, help="iterations between checkpoints")
    a("--seed", type=int, help="seed of the reward's initialisation, the batches and dropout")
    a("--resume", action="store_true", help="continue the run in OUTPUT_DIR from its checkpoint")
    a("--resume-adapter-file", metavar="PATH", shown="none",
      help="start a new run from the weights of a reward a run wrote (its directory or a weights file in it), "
           "keeping its settings; --resume instead continues a run where it stopped")
    a("--overwrite", action="store_true",
      help="replace the run in OUTPUT_DIR (kept until the new run has checked its inputs and written a checkpoint)")
    a("--quantize-base", type=int, choices=(4, 8), shown="none", help="quantise the frozen base (mlx)")
    a("--report-to", shown="none", help=f"also log the metrics to {' and/or '.join(REPORT_TARGETS)} "
      "(comma-separated; the package must be installed)")
    a("--project-name", help="--report-to wandb: the project")
    a("--dry-run", action="store_true", help="print parameter counts and the artifact size, train nothing")
    for action in parser._actions:  # the flags every command has (--debug) show their default too
        if action.help and "(default" not in action.help and action.option_strings != ["-h", "--help"]:
            action.help += " (default: off)"


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


def _twin_settings_given(settings: dict) -> list[str]:
    """The settings given that only a twin reward uses (mlx-lm's --fine-tune-type and LoRA settings)."""
    return [n for n in settings if FIELDS[n][0] == "lora" or n in ("fine_tune_type", "init")]


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
    start = None
    if "resume_adapter_file" in settings:
        where = origin.get("resume_adapter_file", "--resume-adapter-file")
        start = starting_config(settings["resume_adapter_file"], where, method, sections["reward"])
    if sections["reward"].get("fine_tune_type") == "dora":
        raise ConfigError(f"{origin.get('fine_tune_type', '--fine-tune-type')} dora: {DORA_REFUSAL}")
    for flag in ("train", "test"):
        if flag in run and not isinstance(run[flag], bool):
            raise ConfigError(f"{origin.get(flag, flag_of(flag))} {run[flag]!r}: must be true or false")
    run["report_to"] = report_targets(run.get("report_to"), origin.get("report_to", "--report-to"))
    run["do_train"] = bool(run.get("train") or not run.get("test"))  # mlx-lm: --test alone tests what is there
    test_batches = run.setdefault("test_batches", default_of("test_batches"))
    if not (isinstance(test_batches, int) and not isinstance(test_batches, bool) and (test_batches > 0 or test_batches == -1)):
        raise ConfigError(f"{origin.get('test_batches', '--test-batches')} {test_batches}: must be an integer > 0, or "
                          "-1 for the whole test set")
    needed = ("model", "data", "output_dir") if not args.dry_run else ("model",)
    for required in needed:
        if required not in run:
            raise ConfigError(f"{flag_of(required)} is required (as a flag or in --config)")
    if method == "sft":
        given = [n for n in PRT_ONLY if n in settings]
        if given:
            raise ConfigError(f"{origin.get(given[0]) or flag_of(given[0])}: a reward setting; --method sft "
                              "fine-tunes the base itself (use --fine-tune-type and the LoRA flags)")
    elif "reward" not in settings and start is None and _twin_settings_given(settings):
        sections["reward"]["kind"] = "twin"  # mlx-lm's --fine-tune-type and LoRA settings: a twin trained so
    check_flags_fit_the_kind(settings, origin, sections["reward"], method)
    try:
        lora = LoRAConfig(**sections["lora"])
        reward = RewardConfig(lora=lora, **sections["reward"])
        training = TrainingConfig(**sections["training"])
    except ConfigError as e:
        raise _explain(e, origin) from None
    except TypeError as e:  # a YAML value of a type attrs cannot even compare (a list where a number goes)
        raise ConfigError(f"{args.config}: {e}") from None
    if start is not None:
        check_same_as_start(settings, origin, start, run["resume_adapter_file"])
        reward, lora = start, start.lora
    return run, reward, training, lora


def starting_config(path, where: str, method: str, reward_section: dict) -> RewardConfig:
    """The configuration of the reward --resume-adapter-file names, which the run keeps: its kind and fine-tune
    type stand in for the defaults when the flags fit the kind (check_flags_fit_the_kind)."""
    from ..training import starting_reward

    if method == "sft":
        raise ConfigError(f"{where}: starts a reward from a saved one's weights; --method sft cannot start a "
                          "fine-tune from saved adapter weights (not implemented; --resume continues a run)")
    config = starting_reward(path).config
    reward_section.setdefault("kind", config.kind)
    reward_section.setdefault("fine_tune_type", config.fine_tune_type)
    return config


def check_same_as_start(settings: dict, origin: dict, start: RewardConfig, path) -> None:
    """A reward or LoRA setting given with --resume-adapter-file must be the saved reward's own."""
    for name, value in settings.items():
        section, field = FIELDS[name]
        if section not in ("reward", "lora"):
            continue
        theirs = getattr(start if section == "reward" else start.lora, field)
        if _as_list(value) != _as_list(theirs):  # YAML gives lists where the config holds tuples
            raise ConfigError(f"{origin.get(name) or flag_of(name)} {value!r}: the reward in {path} has {field} "
                              f"{theirs!r}, and a run that starts from it keeps its settings; drop the setting")


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else value


# ------------------------------------------------------------------------------------------------ run
def run(args) -> int:
    from ..plugins import get_backend
    from ..reporting import check_report_targets, is_main_process
    from ..training import check_test_split

    run_settings, reward, training, lora = build_configs(args)
    method = run_settings.get("method", "prt")
    backend = get_backend(run_settings.get("backend"))
    quantize = run_settings.get("quantize_base")
    if quantize and "quantize" not in backend.capabilities:
        raise ConfigError(f"--quantize-base {quantize}: the {backend.name!r} backend cannot quantise a base (mlx can)")
    if args.dry_run:
        print(json.dumps(dry_run(backend, run_settings, reward, method), indent=2))
        return 0
    check_report_targets(run_settings["report_to"])
    if run_settings.get("test"):
        check_test_split(run_settings["data"])
    if not run_settings["do_train"]:  # mlx-lm's --test without --train: test what the output directory holds
        check_trained(run_settings["output_dir"], method)
        print(json.dumps({"test": report_test(run_settings, training, backend, method)}, indent=2))
        return 0
    summary = train(run_settings, reward, training, lora, backend, method, args)
    if is_main_process():  # one test and one summary, not one per rank of a multi-process launch
        if run_settings.get("test"):
            summary["test"] = report_test(run_settings, training, backend, method)
        print(json.dumps(summary, indent=2))
        sys.stderr.write(wrote(summary, run_settings["output_dir"], method) + "\n")
    return 0


def train(run_settings: dict, reward: RewardConfig, training: TrainingConfig, lora: LoRAConfig, backend, method: str,
          args) -> dict:
    from ..training import train_reward, train_sft

    common = {"backend": backend, "resume": args.resume, "overwrite": args.overwrite,
              "quantize": run_settings.get("quantize_base"), "report_to": run_settings["report_to"],
              "project_name": run_settings.get("project_name")}
    try:
        if method == "sft":
            return train_sft(run_settings["model"], run_settings["data"], run_settings["output_dir"], training,
                             lora=lora if reward.fine_tune_type == "lora" else None, **common)
        return train_reward(run_settings["model"], run_settings["data"], run_settings["output_dir"], reward,
                            training, init_from=run_settings.get("resume_adapter_file"), **common)
    except KeyboardInterrupt:
        from ..training import checkpoint_step

        step = checkpoint_step(run_settings["output_dir"])
        hint = (f"the checkpoint of step {step} in {run_settings['output_dir']}/checkpoint is kept; rerun with "
                "--resume to continue" if step is not None else "no checkpoint was written yet")
        sys.stderr.write(f"\nprt train: {hint}\n")
        raise


def wrote(summary: dict, output_dir, method: str) -> str:
    """The closing line: what the run wrote, and where."""
    from ..reporting import CURVE_FILE, METRICS_FILE, SUMMARY_FILE

    out = Path(output_dir)
    what = "reward artifact" if method == "prt" else "fine-tune"
    files = [f"{what} {out}"]
    if (out / "best").is_dir():
        files.append(f"best validation loss {out / 'best'}")
    files += [f"metrics {out / METRICS_FILE}", f"summary {out / SUMMARY_FILE}"]
    if (out / "tensorboard").is_dir():
        files.append(f"tensorboard logs {out / 'tensorboard'}")
    files.append(f"loss curve {out / CURVE_FILE}" if summary.get("loss_curve") else
                 f"no loss curve ({summary.get('loss_curve_missing', 'not written')})")
    return "prt train: wrote " + "; ".join(files)


def check_trained(output_dir, method: str) -> None:
    """--test without --train needs a result in `output_dir`: a reward artifact (prt), a fine-tune (sft)."""
    from ..artifacts import CONFIG_NAME

    out = Path(output_dir)
    files = (CONFIG_NAME,) if method == "prt" else ("config.json", "adapter_config.json")
    if not any((out / name).is_file() for name in files):
        what = "reward artifact" if method == "prt" else "fine-tune"
        raise ConfigError(f"--test without --train evaluates the {what} in {out}, which holds none; add --train to "
                          "train it first")


def report_test(run_settings: dict, training: TrainingConfig, backend, method: str) -> dict:
    """Test loss (NLL per target token of the trained result: base + reward, or the fine-tune) and perplexity on
    test.jsonl, over `test_batches` batches of the training batch size, printed as mlx-lm does."""
    from ..training import loss_on_test_split

    result = loss_on_test_split(run_settings["model"], run_settings["data"], run_settings["output_dir"], training,
                       method=method, backend=backend, test_batches=run_settings["test_batches"])
    sys.stderr.write(f"Test loss {result['test_loss']:.3f}, Test ppl {result['test_ppl']:.3f}.\n")
    return result


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
