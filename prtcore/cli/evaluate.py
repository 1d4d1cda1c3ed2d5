"""`prt eval`: per-token NLL, perplexity and exact match on a jsonl split, for the base alone, PRT and EFT.

    prt eval --model TARGET --reward DIR [--reward DIR2:λ] --data DIR [--split test] [--ft FT --source SRC]
             [--batch-size 8] [--output results.json]

Every model is evaluated on the same target: `base` (the target alone), `prt` (target + rewards, when --reward
is given) and `eft` (target + fine-tuned − source, when --ft and --source are given). The table goes to stdout,
the full results (with every generated answer) to --output as JSON. Answers are decoded greedily, --batch-size
at a time (left-padded; the same answers as one at a time).

    prt eval --task drivelm --predictions output.json --references test_eval.json [--output report.json]

scores DriveLM predictions offline as the challenge does (no model; see prtcore.apps.drivelm.evaluate).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import ConfigError, DataError
from .common import (
    add_model_arguments, check_output_file, load_finetuned, load_options, parse_reward, write_output,
)


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--data", help="a data directory (with --split) or a .jsonl file")
    for action in parser._actions:  # --model and --data are required by run(), not by --task drivelm
        action.required = action.required and action.dest != "model"
    parser.add_argument("--task", choices=("lm", "drivelm"), default="lm",
                        help="lm: NLL, perplexity, exact match of models (default); drivelm: score a DriveLM "
                             "predictions file against its references, no model")
    parser.add_argument("--predictions", help="--task drivelm: [{id, answer}] JSON (output.json), submission or jsonl")
    parser.add_argument("--references", help="--task drivelm: tagged annotation JSON or `prt data drivelm` jsonl")
    parser.add_argument("--split", default="test", help="split of a data directory (default test)")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--max-examples", type=int, help="evaluate the first N rows only")
    parser.add_argument("--max-tokens", type=int, help="generation limit per answer (default: answer length + 8)")
    parser.add_argument("--max-seq-length", type=int, default=2048)
    parser.add_argument("--stop", action="append", default=None, help="stop string for answers (repeatable)")
    parser.add_argument("--all-tokens", action="store_true", help="score every token, not only the answers")
    parser.add_argument("--no-generate", action="store_true", help="skip exact match (no generation)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="answers decoded together, left-padded (default 8; the same greedy answers as 1; "
                             "backends with capability 'batched', text-only models)")


def data_file(args) -> Path:
    path = Path(args.data)
    if path.is_dir():
        path = path / f"{args.split}.jsonl"
        if not path.exists():
            raise DataError(f"{path}: missing (--split {args.split} of data directory {args.data})")
    elif not path.exists():
        raise DataError(f"{path}: data file or directory not found")
    return path


def run(args) -> int:
    from ..data import parse_split
    from ..evaluation import evaluate_split, format_results
    from ..model import ComposedLM, PRTForCausalLM
    from ..plugins import get_backend

    if args.task == "drivelm":
        return run_drivelm(args)
    if args.predictions or args.references:
        raise ConfigError("--predictions and --references are read by --task drivelm only")
    missing = [flag for flag, value in (("--model/--base", args.model), ("--data", args.data)) if value is None]
    if missing:
        raise ConfigError(f"the following arguments are required: {', '.join(missing)}")
    for flag in ("max_examples", "max_tokens", "max_seq_length", "batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} {value}: must be >= 1")
    if args.max_kv_size is not None:
        raise ConfigError("--max-kv-size: prt eval scores whole sequences; the option applies to generate and chat")
    if args.ft and not args.source:
        raise ConfigError("--ft needs --source BASE (the model it was fine-tuned from) for EFT")
    output = check_output_file(args.output, "--output") if args.output else None
    path = data_file(args)
    parse_split(path)  # malformed data fails before any model loads
    backend = get_backend(args.backend)
    options = load_options(args)
    rewards = [parse_reward(r) for r in args.reward]
    if rewards:
        prt = PRTForCausalLM.from_pretrained(args.model, [p for p, _ in rewards], backend=backend, source=args.source,
                                             **options)
        lams = [lam if lam is not None else r.config.lam for (_, lam), r in zip(rewards, prt.rewards)]
        prt = PRTForCausalLM(backend, prt.target, prt.rewards, lams, prt.sources)
        target = prt.target
    else:
        prt, target = None, backend.load_base(args.model, **options)
    models = {"base": PRTForCausalLM(backend, target)}
    if prt is not None:
        models["prt"] = prt
    if args.ft:
        models["eft"] = ComposedLM(backend, [target] + load_finetuned(args, backend), "eft")
    report = evaluate_split(models, path, mask_prompt=False if args.all_tokens else None,
                            max_seq_length=args.max_seq_length, max_tokens=args.max_tokens,
                            max_examples=args.max_examples, stop=args.stop, generate=not args.no_generate,
                            batch_size=args.batch_size)
    report.update(model=args.model, rewards=args.reward, ft=args.ft, source=args.source, backend=backend.name)
    print(format_results(report))
    for name, scores in report["results"].items():
        if "batch_fallback" in scores:
            print(f"note: {name}: answers decoded one at a time ({scores['batch_fallback']})", file=sys.stderr)
    if output:
        write_output(output, json.dumps(report, indent=2) + "\n")
    return 0


def run_drivelm(args) -> int:
    from ..apps.drivelm.evaluate import evaluate_files, format_report

    if args.model or args.data or args.reward:
        raise ConfigError("--task drivelm scores --predictions against --references; "
                          "--model, --reward and --data are not used")
    if not args.predictions or not args.references:
        raise ConfigError("--task drivelm needs --predictions FILE and --references FILE")
    if args.output:
        check_output_file(args.output, "--output")
    print(format_report(evaluate_files(args.predictions, args.references, args.output)))
    return 0
