"""Backend-neutral entry points for training: a reward (PRT) or a plain fine-tune (SFT) of a base model.

    summary = train_reward("models/base", "data/", "rewards/task", RewardConfig(kind="twin"),
                           TrainingConfig(iters=200), backend="mlx")
    summary = train_sft("models/base", "data/", "adapters/task", TrainingConfig(iters=200), lora=LoRAConfig(),
                        backend="mlx")

The data directory is checked (JSON, formats, keys) before any model loads. The output directory receives the
result (a reward artifact; an adapter in mlx-lm's layout (mlx) or PEFT's (torch) for a LoRA fine-tune; a
complete checkpoint for a full fine-tune), `best/` (the same with the best validation loss), `checkpoint/`
(everything `resume=True` needs to continue exactly), metrics.jsonl, loss_curve.png and summary.json.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .artifacts import CONFIG_NAME, RewardArtifact, read_json
from .config import LoRAConfig, RewardConfig, TrainingConfig
from .data import batches_per_epoch, check_data_dir, load_dataset
from .errors import ConfigError, ModelLoadError, PRTError
from .checkpoints import (TRAINER_STATE, checkpoint_step, repair_checkpoint, trainer_checkpoint_complete,
                          trainer_checkpoints)
from .rundir import RunDirectory
from .tokens import checkpoint_rows

def resolve_iters(config: TrainingConfig, n_train: int) -> int:
    if config.iters is not None:
        return config.iters
    epochs = config.epochs or 1
    return epochs * batches_per_epoch(n_train, config.batch_size)


def train_reward(model, data_dir, output_dir, reward: RewardConfig, training: TrainingConfig, *,
                 backend=None, resume: bool = False, overwrite: bool = False, quantize: int | None = None,
                 reporter=None, report_to=(), project_name: str | None = None, init_from=None,
                 **load_options) -> dict:
    """Train a reward for base `model` on `data_dir`; returns the run summary. An output directory that holds a
    previous run needs `resume` (continue it) or `overwrite` (replace it): prtcore.rundir.

    `init_from`: a saved reward (its directory, or a weights file in it) of configuration `reward` whose weights
    the run starts from (mlx-lm's --resume-adapter-file); a new run otherwise, with its own step 0 and schedule.
    `report_to`: also log the metrics to "wandb" and/or "tensorboard" (prtcore.reporting), under `project_name` for
    wandb."""
    check_arguments(model=model, data_dir=data_dir, output_dir=output_dir, reward=(reward, RewardConfig),
                    training=(training, TrainingConfig), init_from=(init_from, ((str, os.PathLike), None)))
    backend = as_backend(backend)
    backend.require("train", "train a reward")
    check_data_dir(data_dir, mask_prompt=training.mask_prompt)
    start = starting_reward(init_from, reward) if init_from is not None else None
    if quantize:
        load_options["quantize"] = quantize
    record = run_settings("prt", backend, model, data_dir, reward=reward.to_dict(), training=training,
                          quantize=quantize, **({"init_from": as_given(start.path)} if start else {}))
    inputs = {"--model": model, "--data": data_dir, "--resume-adapter-file": start.path if start else None}
    with RunDirectory(output_dir, record, inputs=inputs, resume=resume, overwrite=overwrite) as run:
        model = run.resolve_model(model, remote_code=bool(load_options.get("trust_remote_code")))
        source = backend.load_base(model, **load_options)
        data = load_dataset(data_dir, source.tokenizer, max_seq_length=training.max_seq_length,
                            mask_prompt=training.mask_prompt, vision=source.vision,
                            embedding_rows=source.vocab_size, model_config=source.config)
        iters = resolve_iters(training, len(data["train"]))
        reward_model = backend.create_reward(reward, source, seed=training.seed)
        if start is not None:
            from .model import check_artifact_tokenizer

            check_artifact_tokenizer(start, source, backend)
            reward_model.load_trained(start)
        reporter = reporter or _reporter(output_dir, iters, resume, report_to, project_name, record)
        run.begin(reporter)
        return backend.train(source, reward_model, data, training, Path(output_dir), iters=iters, resume=resume,
                             reporter=reporter)


def starting_reward(path, reward: RewardConfig | None = None) -> RewardArtifact:
    """The saved reward a run starts from: directory `path`, or the one holding weights file `path` (as mlx-lm's
    --resume-adapter-file names adapters.safetensors). Its configuration must be `reward`'s, when given."""
    directory = Path(path).parent if Path(path).is_file() else Path(path)
    if directory.is_dir() and not (directory / CONFIG_NAME).is_file():
        raise ConfigError(f"{path}: not a reward artifact (no {CONFIG_NAME} in {directory}); give a reward a prt run "
                          "wrote, its directory or a weights file in it")
    artifact = RewardArtifact.open(directory)
    if reward is None:
        return artifact
    theirs, ours = artifact.config.to_dict(), reward.to_dict()
    for key in sorted(set(theirs) | set(ours)):
        if theirs.get(key) != ours.get(key):
            raise ConfigError(f"{artifact.path}: its reward has {key} {theirs.get(key)!r}, this run's "
                              f"{ours.get(key)!r}; a run starts from a reward of its own configuration")
    return artifact


def as_backend(backend):
    """The Backend `backend` is, or the one it names (None: the default; prtcore.get_backend)."""
    from .model import Backend
    from .plugins import get_backend

    return backend if isinstance(backend, Backend) else get_backend(backend)


def check_arguments(**arguments) -> None:
    """Paths must be str or os.PathLike; `name=(value, cls)` must be a `cls` (or None when `cls` is a tuple
    `(cls, None)`)."""
    for name, value in arguments.items():
        value, expected = value if isinstance(value, tuple) else (value, (str, os.PathLike))
        if isinstance(expected, tuple) and None in expected:
            if value is None:
                continue
            expected = expected[0]
        if not isinstance(value, expected):
            wanted = "a path" if expected == (str, os.PathLike) else f"a {expected.__name__}"
            raise ConfigError(f"{name}={value!r:.80}: expected {wanted}")


def run_settings(method: str, backend, model, data_dir, *, training: TrainingConfig, **settings) -> dict:
    """What a run's record (prt_run.json) holds: everything a resume must repeat."""
    import attrs

    return {"method": method, "backend": backend.name, "model": as_given(model), "data": as_given(data_dir),
            "training": attrs.asdict(training), **settings}


def as_given(path) -> str:
    """A local path made absolute; a Hub id as it is."""
    return os.path.abspath(path) if os.path.exists(path) else str(path)


def _reporter(output_dir, iters: int, resume: bool, report_to=(), project_name=None, record=None):
    from .reporting import TrainingReporter, metric_sinks

    return TrainingReporter(output_dir, total_steps=iters, quiet=bool(os.environ.get("PRT_QUIET")), resume=resume,
                            sinks=metric_sinks(report_to, output_dir, project_name=project_name, config=record))


def what_to_change(reward_config) -> str:
    """For a step that trains nothing: the reward's settings that cause it (None: a fine-tune)."""
    if reward_config is None:
        return "; check the data and the learning rate"
    return (f", with λ {reward_config.lam:g} and entropy coefficient {reward_config.entropy_coeff:g}; use a "
            f"larger --lambda or a smaller --entropy-coeff")


def run_record(reporter, data, *, iters: int, trained_tokens: int, best_val_loss, best_iteration) -> dict:
    """What a final artifact records of the run that made it (prt_config.json, and its model card): steps, tokens,
    losses, and the data (directory and examples per split)."""
    last = reporter.train[-1]["train_loss"] if reporter is not None and reporter.train else None
    directory = getattr(data, "directory", None)
    return {"training": {"iterations": iters, "trained_tokens": trained_tokens, "best_val_loss": best_val_loss,
                         "best_iteration": best_iteration, "final_train_loss": last},
            "data": {**({"path": str(directory)} if directory else {}),
                     **{split: len(examples) for split, examples in data.items()}}}


def train_sft(model, data_dir, output_dir, training: TrainingConfig, *, lora: LoRAConfig | None = None,
              backend=None, resume: bool = False, overwrite: bool = False, quantize: int | None = None,
              reporter=None, report_to=(), project_name: str | None = None, **load_options) -> dict:
    """Fine-tune base `model` itself on `data_dir` (LoRA when `lora` is given, else every weight); returns the
    run summary. The result is what `--compose eft --ft` reads: an adapter directory or a checkpoint.
    `report_to`, `project_name`: as for train_reward."""
    import attrs

    check_arguments(model=model, data_dir=data_dir, output_dir=output_dir, training=(training, TrainingConfig),
                    lora=(lora, (LoRAConfig, None)))
    backend = as_backend(backend)
    backend.require("train_sft", "fine-tune a base model")
    check_data_dir(data_dir, mask_prompt=training.mask_prompt)
    if quantize:
        load_options["quantize"] = quantize
    record = run_settings("sft", backend, model, data_dir, training=training, quantize=quantize,
                          lora=attrs.asdict(lora) if lora is not None else None)
    with RunDirectory(output_dir, record, inputs={"--model": model, "--data": data_dir}, resume=resume,
                      overwrite=overwrite) as run:
        model = run.resolve_model(model, remote_code=bool(load_options.get("trust_remote_code")))
        tokenizer = backend.load_tokenizer(model)
        data = load_dataset(data_dir, tokenizer, max_seq_length=training.max_seq_length,
                            mask_prompt=training.mask_prompt, embedding_rows=checkpoint_rows(model),
                            model_config=read_json(Path(model) / "config.json", "model config (config.json)"))
        iters = resolve_iters(training, len(data["train"]))
        reporter = reporter or _reporter(output_dir, iters, resume, report_to, project_name, record)
        run.begin(reporter)
        return backend.train_sft(model, data, training, Path(output_dir), lora=lora, iters=iters, resume=resume,
                                 reporter=reporter, **load_options)


# ------------------------------------------------------------------------------------------------ testing
def check_test_split(data_dir) -> Path:
    """`data_dir`/test.jsonl, parsed (a DataError naming the file, before any model loads)."""
    from .data import parse_split
    from .errors import DataError

    path = Path(data_dir) / "test.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: missing; --test evaluates on the data directory's test.jsonl")
    parse_split(path)
    return path


def loss_on_test_split(model, data_dir, output_dir, training: TrainingConfig, *, method: str = "prt", backend=None,
              test_batches: int = -1, **load_options) -> dict:
    """mlx-lm's test: the loss (NLL per target token) and perplexity on `data_dir`/test.jsonl of what a run wrote
    into `output_dir`: base `model` + that reward (`method` "prt"), or that fine-tune ("sft"); over `test_batches`
    batches of `training.batch_size` rows (-1: every row), target tokens as in training (`mask_prompt`)."""
    from .evaluation import evaluate_split
    from .model import PRTForCausalLM

    path = check_test_split(data_dir)
    backend = as_backend(backend)
    if method == "prt":
        composed = PRTForCausalLM.from_pretrained(model, output_dir, backend=backend, **load_options)
    else:
        composed = PRTForCausalLM(backend, backend.load_base(output_dir, adapter_base=model, **load_options))
    rows = None if test_batches == -1 else test_batches * training.batch_size
    report = evaluate_split({"test": composed}, path, mask_prompt=training.mask_prompt,
                            max_seq_length=training.max_seq_length, max_examples=rows, generate=False)
    scores = report["results"]["test"]
    return {"test_loss": scores["nll"], "test_ppl": scores["perplexity"], "tokens": scores["tokens"],
            "examples": scores["examples"]}


# ------------------------------------------------------------------------------------------------ adapters as models
ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path) -> bool:
    """A LoRA adapter directory (mlx-lm's or PEFT's layout) rather than a complete checkpoint."""
    path = Path(path)
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def adapter_base_path(path, base=None) -> Path:
    """The base model an adapter directory applies to: `base` when given, else the one its config records
    (PEFT: base_model_name_or_path; mlx-lm: model), resolved against the current directory."""
    from .hub import resolve_model

    path = Path(path)
    if base is not None:
        return resolve_model(base, what="base model")
    config = read_json(path / ADAPTER_CONFIG, "adapter config (adapter_config.json)")
    recorded = config.get("base_model_name_or_path") or config.get("model")
    if not isinstance(recorded, str) or not recorded:
        raise ModelLoadError(f"{path}: an adapter directory needs its base model; pass it with --source BASE")
    try:  # a local directory, or a Hub id as PEFT records it
        return resolve_model(recorded, what="base model")
    except PRTError as e:
        raise ModelLoadError(f"{path}: the adapter's base model {recorded!r} cannot be found ({e}); "
                             "pass it with --source BASE") from None


# ------------------------------------------------------------------------------------------------ writing outputs
def publish_into(directory, save, *, last: tuple[str, ...] = ("adapter_config.json", "config.json")) -> None:
    """Write files with `save(staging_dir)`, then move them into `directory` (keeping the run's other files there:
    best/, checkpoint/, metrics). Config files move last, so a reader never sees a config without its weights."""
    directory = Path(directory)
    staging = directory / ".output.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        save(staging)
        names = sorted(p.name for p in staging.iterdir())
        for name in [n for n in names if n not in last] + [n for n in last if n in names]:
            target = directory / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_dir(path, save) -> Path:
    """Write a whole directory with `save(tmp_dir)` and put it at `path` atomically (a previous one survives
    until the new one is complete)."""
    import tempfile

    from .artifacts import replace_dir

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
    try:
        save(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def copy_model_files(model_path, directory, *, configs: bool = True) -> None:
    """Copy a checkpoint's tokenizer files and, with `configs`, its config.json and generation_config.json."""
    from .artifacts import TOKENIZER_FILES

    for name in (("config.json", "generation_config.json") if configs else ()) + TOKENIZER_FILES:
        src = Path(model_path) / name
        if src.is_file():
            shutil.copy2(src, Path(directory) / name)
