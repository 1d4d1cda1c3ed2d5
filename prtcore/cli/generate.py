"""`prt generate`: stream text from a base model with portable rewards (or an EFT / proxy-tuning baseline).

The text goes to stdout; then, as `mlx_lm generate` ends, the prompt and generation rates and the peak memory
(the backend's `memory_meter`, as `prt bench` measures it: over loading and generation) go to stderr.
"""

from __future__ import annotations

import sys
import time

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
    from ..plugins import get_backend

    check_sampling(args)
    text = sys.stdin.read() if args.prompt == "-" else args.prompt
    with get_backend(args.backend).memory_meter() as meter:
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
        ids = prompt_ids(model, text, args)
        timing = stream_to_stdout(model.stream_steps(ids, images=images, **sampling_kwargs(args, model)))
    sys.stdout.write("\n")
    sys.stdout.flush()
    sys.stderr.write(statistics(len(ids), *timing, meter.bytes) + "\n")
    return 0


def stream_to_stdout(steps) -> tuple[float, int, float]:
    """Write each step's text as it comes; (seconds to the first token, tokens, seconds from the first token to
    the last)."""
    start = time.perf_counter()
    first = last = None
    tokens = 0
    for step in steps:
        last = time.perf_counter()
        if first is None:
            first = last
        tokens += 1
        sys.stdout.write(step.text)
        sys.stdout.flush()
    end = time.perf_counter()
    return (first if first is not None else end) - start, tokens, (last - first) if tokens > 1 else 0.0


def statistics(prompt_tokens: int, prompt_seconds: float, tokens: int, decode_seconds: float, peak_bytes: int) -> str:
    """mlx_lm generate's closing lines. The first token comes with the prompt's pass, so the generation rate counts
    the tokens after it over the time after it."""
    prompt_rate = prompt_tokens / prompt_seconds if prompt_seconds > 0 else 0.0
    decode_rate = (tokens - 1) / decode_seconds if decode_seconds > 0 else 0.0
    return ("==========\n"
            f"Prompt: {prompt_tokens} tokens, {prompt_rate:.3f} tokens-per-sec\n"
            f"Generation: {tokens} tokens, {decode_rate:.3f} tokens-per-sec\n"
            f"Peak memory: {peak_bytes / 1e9:.3f} GB")
