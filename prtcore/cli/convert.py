"""`prt convert`: LoRA adapters between mlx-lm's layout, PEFT's layout and a PRT twin reward artifact.

    prt convert ADAPTER_DIR OUT --to peft                      # mlx-lm adapter → PEFT adapter
    prt convert ADAPTER_DIR OUT --to mlx-lm                    # PEFT adapter → mlx-lm adapter
    prt convert ADAPTER_DIR OUT --to reward --source BASE      # either adapter → a PRT twin reward artifact
    prt convert REWARD_DIR OUT --to peft|mlx-lm                # a LoRA twin reward → a plain adapter

Tensors are converted exactly (transposes and renames, float32; prtcore.adapters). `--to mlx-lm` refuses, before
writing anything, a PEFT adapter plain mlx-lm could not load (modules_to_save, biases, DoRA, rank or alpha patterns,
modules outside the numbered blocks...: prtcore.adapters.check_mlx_lm_loadable). A reward artifact records
its source model (path, shape, tokenizer fingerprint), so `--to reward` needs the base the adapter was trained
on: --source, or the base the adapter config records. Only the source's config.json and tokenizer are read.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from ..errors import ArtifactError, ConfigError

LAYOUTS = {"peft": "peft", "mlx-lm": "mlx_lm", "mlx_lm": "mlx_lm", "mlx": "mlx_lm", "reward": "reward"}


def add_arguments(parser) -> None:
    parser.add_argument("src", help="an adapter directory (mlx-lm or PEFT layout) or a LoRA twin reward artifact")
    parser.add_argument("dst", help="output directory")
    parser.add_argument("--to", required=True, choices=sorted(LAYOUTS), help="output layout")
    parser.add_argument("--source", help="the base model the adapter was trained on (needed for --to reward "
                                         "unless the adapter config records it)")
    parser.add_argument("--lambda", dest="lam", type=float, default=1.0, help="λ recorded in a reward (default 1.0)")
    parser.add_argument("--backend", help="backend whose tokenizer loader reads --source (for --to reward)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")


def source_kind(path: Path) -> str:
    from ..adapters import detect_layout
    from ..artifacts import CONFIG_NAME, PEFT_CONFIG

    if not path.is_dir():
        raise ArtifactError(f"{path}: not a directory")
    if (path / CONFIG_NAME).is_file():
        return "reward"
    if (path / PEFT_CONFIG).is_file():
        return detect_layout(path)
    raise ArtifactError(f"{path}: neither an adapter (adapter_config.json) nor a reward artifact (prt_config.json)")


def _layers_of(model_dir) -> int | None:
    if model_dir is None:
        return None
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    return text.get("num_hidden_layers")


def _recorded_base(path: Path) -> str | None:
    from ..artifacts import PEFT_CONFIG, read_json

    config = read_json(path / PEFT_CONFIG)
    value = config.get("base_model_name_or_path") or config.get("model")
    return value if isinstance(value, str) and Path(value).is_dir() else None


def run(args) -> int:
    from .. import adapters

    src, dst, to = Path(args.src), Path(args.dst), LAYOUTS[args.to]
    if not args.lam > 0:
        raise ConfigError(f"--lambda {args.lam}: must be > 0")
    kind = source_kind(src)
    if dst.resolve() == src.resolve():
        raise ConfigError(f"{dst}: the output directory is the input; choose another")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())) and not args.overwrite:
        raise ConfigError(f"{dst}: exists and is not empty; pass --overwrite to replace it")
    if kind == to:
        raise ConfigError(f"{src} is already in the {args.to} layout")
    if kind == "reward":
        from ..artifacts import RewardArtifact

        artifact = RewardArtifact.open(src)
        if artifact.kind != "twin" or artifact.config.fine_tune_type != "lora":
            raise ConfigError(f"{src}: a {artifact.kind} reward is not a LoRA adapter; only LoRA twin rewards convert")
        if to == "reward":
            raise ConfigError(f"{src} is already a reward artifact")
        base = args.source or artifact.source.get("path")
        layers = artifact.source.get("num_hidden_layers") or _layers_of(base)
        if to == "mlx_lm":  # before anything is written: what plain mlx-lm could not load
            adapters.check_mlx_lm_loadable(src, num_hidden_layers=layers)
        _, tensors, lora = adapters.read_adapter(src, num_hidden_layers=layers)
        _write(dst, lambda d: (adapters.write_peft if to == "peft" else adapters.write_mlx)(
            d, tensors, lora, **({"base_model_name_or_path": base} if to == "peft" else {"model": base})))
    elif to in ("peft", "mlx_lm"):
        base = args.source or _recorded_base(src)
        layers = _layers_of(base)
        if to == "mlx_lm":  # before anything is written: what plain mlx-lm could not load
            adapters.check_mlx_lm_loadable(src, num_hidden_layers=layers)
        _, tensors, lora = adapters.read_adapter(src, num_hidden_layers=layers)
        _write(dst, lambda d: (adapters.write_peft if to == "peft" else adapters.write_mlx)(
            d, tensors, lora, **({"base_model_name_or_path": base} if to == "peft" else {"model": base})))
    else:
        base = args.source or _recorded_base(src)
        if base is None:
            raise ConfigError(f"--to reward: pass --source BASE, the model {src} was trained on (a reward records it)")
        to_reward(src, dst, Path(base).resolve(), lam=args.lam, backend=args.backend)
    print(f"{src} ({kind}) → {dst} ({to})")
    return 0


def _write(dst: Path, save) -> None:
    from ..training import publish_dir

    publish_dir(dst, save)


def to_reward(src: Path, dst: Path, base: Path, *, lam: float, backend=None) -> None:
    """Write a LoRA twin reward artifact from the adapter in `src`, trained on `base` (weights are not loaded)."""
    from .. import adapters
    from ..artifacts import PEFT_WEIGHTS, ArtifactWriter, reward_meta
    from ..config import RewardConfig
    from ..plugins import get_backend
    from ..sampling import tokenizer_vocab

    layers = _layers_of(base)
    if layers is None:
        raise ConfigError(f"--source {base}: no readable config.json (not a model directory)")
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    _, tensors, lora = adapters.read_adapter(src, num_hidden_layers=layers)
    extra = adapters.extra_modules(tensors)
    if extra and extra != ["lm_head"]:
        raise ConfigError(f"{src}: the adapter also trains {', '.join(extra)}; a twin reward may add only lm_head")
    reward = RewardConfig(kind="twin", fine_tune_type="lora", lora=lora, lam=lam, entropy_coeff=0.0,
                          init="zero_head" if extra else "copy")
    tokenizer = get_backend(backend).load_tokenizer(base)
    shared = len(tokenizer_vocab(tokenizer))
    source = SimpleNamespace(config=config, path=base, hidden_size=int(text["hidden_size"]),
                             vocab_size=int(text["vocab_size"]))
    with ArtifactWriter(dst) as writer:
        adapters.write_peft(writer.dir, tensors, lora, base_model_name_or_path=str(base))
        writer.copy_tokenizer(base)
        writer.commit(reward_meta(reward, source=source, tokenizer=tokenizer, vocab_size=shared,
                                  output_size=int(text["vocab_size"]), weights=[adapters.PEFT_CONFIG, PEFT_WEIGHTS],
                                  backend="convert", extra={"converted_from": str(src.resolve())}))
