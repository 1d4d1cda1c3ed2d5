"""`prt bench`: generation speed and training cost of PRT against its two models alone, EFT and plain LoRA.

    prt bench                              # both installed backends, the CPU preset (~250M target)
    prt bench --small --output bench.json  # seconds (tests); JSON on disk
    prt bench --backend torch --target-hidden 2048 --target-layers 22 --device cuda --dtype bfloat16
    prt bench --gpu-check --output gpu.json   # the one-shot GPU check (TinyLlama-1.1B shape, bfloat16)
    prt bench --serve --small                 # `prt serve`: requests/s and latency, batched or not (docs/serving.md)
    prt bench --sweep --backend torch         # training over vocabularies 32k-256k x 512-4096 positions
    prt bench --eval-batches --small          # `prt eval`'s decoding: tokens/s at batch 1, 8, 32, PRT and target

Random models are built in memory from transformers' config classes; nothing is downloaded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import ConfigError

SHAPE_FIELDS = ("hidden", "layers", "ffn", "heads", "kv_heads")


def add_arguments(parser) -> None:
    parser.add_argument("--backend", default="all", help="mlx, torch or all (every installed one; default)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--small", action="store_true", help="tiny models: runs in seconds (for tests)")
    which.add_argument("--preset", default=None, help="cpu (default), small, tinyllama or gpu-1b")
    which.add_argument("--gpu-check", action="store_true",
                       help="the GPU check: torch on cuda, TinyLlama-1.1B-shaped target, ~0.25B source, bfloat16")
    for role in ("target", "source"):
        for field in SHAPE_FIELDS:
            parser.add_argument(f"--{role}-{field.replace('_', '-')}", type=int, default=None, metavar="N",
                                help=argparse_help(role, field))
    parser.add_argument("--vocab", type=int, default=None, help="vocabulary size (tokenizer trained to it; 32000)")
    parser.add_argument("--prompt-tokens", type=int, default=None, help="prompt length")
    parser.add_argument("--max-tokens", type=int, default=None, help="tokens generated per run")
    parser.add_argument("--repeats", type=int, default=None, help="rounds of side-by-side runs (median)")
    parser.add_argument("--gen-reward", choices=("twin", "linear", "transformer"), default=None,
                        help="reward kind used for generation (default twin)")
    parser.add_argument("--train-rewards", default=None, help="reward kinds trained, comma-separated")
    parser.add_argument("--train-batch", type=int, default=None, help="training batch size")
    parser.add_argument("--train-seq", type=int, default=None, help="training sequence length")
    parser.add_argument("--train-steps", type=int, default=None, help="timed steps per configuration and round")
    parser.add_argument("--train-repeats", type=int, default=None, help="rounds of side-by-side training steps")
    parser.add_argument("--lora-layers", type=int, default=None, help="LoRA on the last N blocks (default 8)")
    parser.add_argument("--reward-d-model", type=int, default=None,
                        help="width of the transformer reward (default 512)")
    parser.add_argument("--sweep", action="store_true",
                        help="training only, over vocabulary sizes and sequence lengths (prtcore.apps.bench.sweep; "
                             "with --small: tiny ones, seconds)")
    parser.add_argument("--sweep-vocabs", default=None, metavar="V,V,...",
                        help="--sweep: vocabulary sizes (default 32000,128000,152000,256000)")
    parser.add_argument("--sweep-seqs", default=None, metavar="T,T,...",
                        help="--sweep: sequence lengths (default 512,2048,4096)")
    parser.add_argument("--device", default=None, help="torch device (default cuda, then cpu)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None)
    parser.add_argument("--no-generation", action="store_true", help="skip generation")
    parser.add_argument("--no-training", action="store_true", help="skip training")
    parser.add_argument("--output", default=None, help="write the result as JSON to this file")
    parser.add_argument("--workdir", default=None, help="cache for tokenizers (default: $PRT_BENCH_DIR or a temp dir)")
    parser.add_argument("--quiet", action="store_true", help="print only the table")
    parser.add_argument("--serve", action="store_true",
                        help="measure `prt serve` instead: requests/s, tokens/s, p50/p99 latency at 1, 4 and 16 "
                             "clients, batched and one at a time (prtcore.serve.bench; docs/serving.md)")
    parser.add_argument("--serve-requests", type=int, default=8, metavar="N", help="--serve: requests per client")
    parser.add_argument("--eval-batches", action="store_true",
                        help="measure `prt eval`'s batched greedy decoding instead: tokens/s at batch 1, 8 and 32, "
                             "PRT (target + reward) and the target alone (prtcore.benchmarking.eval_throughput)")


def argparse_help(role: str, field: str) -> str:
    what = {"hidden": "width", "layers": "depth", "ffn": "MLP width", "heads": "attention heads",
            "kv_heads": "key/value heads"}[field]
    return f"{role} model's {what}"


def int_list(text: str | None, flag: str) -> tuple[int, ...] | None:
    """Comma-separated integers > 1 (None when not given)."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: must be comma-separated integers") from None
    if not values or any(v <= 1 for v in values):
        raise ConfigError(f"{flag} {text!r}: must be integers > 1")
    return values


def build_config(args):
    from ..apps.bench import ModelShape, preset

    name = "tinyllama" if args.gpu_check else "small" if args.small else (args.preset or "cpu")
    changes = {}
    base = preset(name)
    for role in ("target", "source"):
        given = {f: getattr(args, f"{role}_{f}") for f in SHAPE_FIELDS}
        if any(v is not None for v in given.values()):
            shape = getattr(base, role)
            if given["hidden"] is not None and given["hidden"] != shape.hidden:
                # a new width: llama proportions unless given
                shape = ModelShape.of(given["hidden"], given["layers"] or shape.layers, given["ffn"], given["heads"],
                                      given["kv_heads"])
            else:
                import attrs

                shape = attrs.evolve(shape, **{k: v for k, v in given.items() if v is not None})
            changes[role] = shape
    for field in ("vocab", "prompt_tokens", "max_tokens", "repeats", "gen_reward", "train_batch", "train_seq",
                  "train_steps", "train_repeats", "lora_layers", "reward_d_model", "device", "dtype"):
        value = getattr(args, field)
        if value is not None:
            if isinstance(value, int) and value <= 0:
                raise ConfigError(f"--{field.replace('_', '-')}={value}: must be > 0")
            changes[field] = value
    if args.train_rewards:
        changes["train_rewards"] = tuple(k.strip() for k in args.train_rewards.split(",") if k.strip())
    if args.gpu_check and "device" not in changes:
        changes["device"] = "cuda"
    changes["generation"] = False if args.no_generation else None  # None: the preset's (gpu-1b: training only)
    changes["training"] = False if args.no_training else None
    return preset(name, **changes)


def backends_of(args) -> list[str]:
    from ..plugins import installed_backend_names

    if args.gpu_check:
        return ["torch"]
    if args.backend in ("all", None):
        names = [n for n in ("mlx", "torch") if n in installed_backend_names()]
        if not names:
            raise ConfigError("prt bench needs the mlx or torch backend: pip install -e '.[mlx]' or '.[torch]'")
        return names
    names = [n.strip() for n in args.backend.split(",") if n.strip()]
    for n in names:
        if n not in ("mlx", "torch"):
            raise ConfigError(f"--backend {n!r}: must be mlx, torch or all")
    return names


def run(args) -> int:

    config = build_config(args)
    backends = backends_of(args)
    if args.gpu_check and args.device is None:  # an explicit --device rehearses the check elsewhere
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--gpu-check needs a CUDA GPU (torch.cuda.is_available() is False); "
                              "pass --device cpu to rehearse it")
    from ..apps.bench import run as run_bench

    log = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    if args.sweep:
        from ..apps.bench.sweep import SWEEPS, sweep

        grid = SWEEPS["small" if args.small else "full"]
        result = sweep(config, backends, vocabs=int_list(args.sweep_vocabs, "--sweep-vocabs") or grid["vocabs"],
                       seqs=int_list(args.sweep_seqs, "--sweep-seqs") or grid["seqs"], workdir=args.workdir, log=log)
    elif args.eval_batches:
        from ..apps.bench import default_workdir
        from ..benchmarking.eval_throughput import run as run_eval_batches

        result = run_eval_batches(backends, config, workdir=args.workdir or default_workdir(), log=log)
    elif args.serve:
        from ..apps.bench import default_workdir
        from ..serve.bench import run as run_serve_bench

        if args.serve_requests < 1:
            raise ConfigError(f"--serve-requests {args.serve_requests}: must be >= 1")
        result = run_serve_bench(backends, config, workdir=args.workdir or default_workdir(),
                                 per_client=args.serve_requests, log=log)
    else:
        result = run_bench(config, backends, workdir=args.workdir, log=log)
    print(result["table"])
    if args.output:
        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    return 0
