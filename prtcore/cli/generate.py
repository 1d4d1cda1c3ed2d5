"""`prt generate`: stream text from a base model with portable rewards (or an EFT / proxy-tuning baseline)."""

from __future__ import annotations

import sys

from .common import (  # noqa: F401  (re-exported: older imports read these from here)
    add_compose_argument, add_model_arguments, add_sampling_arguments, check_sampling, load_model, parse_reward,
    prompt_ids, sampling_kwargs, setup,
)


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    add_compose_argument(parser)
    parser.add_argument("--prompt", "-p", required=True, help="prompt text, or - to read it from stdin")
    add_sampling_arguments(parser)


def run(args) -> int:
    setup("generate")
    check_sampling(args)
    text = sys.stdin.read() if args.prompt == "-" else args.prompt
    model = load_model(args)
    for piece in model.stream(prompt_ids(model, text, args), **sampling_kwargs(args, model)):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
