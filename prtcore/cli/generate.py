"""`prt generate`: stream text from a base model with portable rewards (or an EFT / proxy-tuning baseline)."""

from __future__ import annotations

import sys

from .common import (  # noqa: F401  (re-exported: older imports read these from here)
    add_compose_argument, add_model_arguments, add_sampling_arguments, check_sampling, load_model, parse_reward,
    prompt_ids, sampling_kwargs,
)


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    add_compose_argument(parser)
    parser.add_argument("--prompt", "-p", required=True, help="prompt text, or - to read it from stdin")
    parser.add_argument("--image", action="append", metavar="PATH",
                        help="an image for a vision-language model (repeatable); it goes where the prompt says "
                             "<image>, else before the prompt")
    add_sampling_arguments(parser)


def run(args) -> int:
    check_sampling(args)
    text = sys.stdin.read() if args.prompt == "-" else args.prompt
    model = load_model(args)
    images = None
    if args.image:
        from ..errors import ConfigError
        from ..vision import Images, with_placeholders

        encoders = model.vision_encoders()
        if not encoders:
            raise ConfigError(f"--image: {args.model} is not a vision-language model")
        images = Images(args.image)
        text = with_placeholders(text, len(images), encoders[0].placeholder)
    for piece in model.stream(prompt_ids(model, text, args), images=images, **sampling_kwargs(args, model)):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
