"""`prt explain`: each token's reward and how it moved the base's top choices (the paper's qualitative view).

    prt explain --model BASE --reward DIR --prompt "..." [--continuation "..."] [--html out.html] [--json out.json]

Without --continuation the continuation is generated with base + reward (greedy unless --temp is given).
The terminal view is coloured (ANSI) only on a TTY or with --color always.
"""

from __future__ import annotations

import json
import sys

from ..errors import ConfigError
from .common import (
    add_model_arguments, add_sampling_arguments, check_output_file, check_sampling, encode_continuation, load_model,
    prompt_ids, sampling_kwargs, write_output,
)


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--prompt", "-p", required=True, help="prompt text, or - to read it from stdin")
    parser.add_argument("--continuation", help="the continuation to explain (default: generate one)")
    parser.add_argument("--top", type=int, default=3, help="top choices shown per position (default 3)")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    parser.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page")
    parser.add_argument("--json", metavar="FILE", help="also write the per-token values as JSON")
    add_sampling_arguments(parser, max_tokens=32)


def run(args) -> int:
    from ..explain import explain, render_html, render_terminal

    check_sampling(args)
    if args.top < 1:
        raise ConfigError(f"--top {args.top}: must be >= 1")
    if args.continuation is not None and not args.continuation:
        raise ConfigError("--continuation: the continuation is empty")
    html, json_file = (check_output_file(path, flag) if path else None
                       for path, flag in ((args.html, "--html"), (args.json, "--json")))
    text = sys.stdin.read() if args.prompt == "-" else args.prompt
    model = load_model(args, compose="prt")
    ids = prompt_ids(model, text, args)
    if args.continuation is not None:
        continuation = encode_continuation(model.tokenizer, args.continuation)
    else:
        # every generated token, the one that ended the generation (EOS, a stop string) included
        continuation = [step.token for step in model.stream_steps(ids, **sampling_kwargs(args, model))]
        if not continuation:
            raise ConfigError("the model generated nothing to explain; pass --continuation TEXT or raise --max-tokens")
    rows = explain(model, ids, continuation, top=args.top)
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    shown_prompt = model.tokenizer.decode(ids)
    print(render_terminal(rows, color=color, prompt=shown_prompt))
    details = {"model": args.model, "rewards": ", ".join(args.reward), "continuation tokens": len(rows)}
    if html:
        write_output(html, render_html(rows, prompt=shown_prompt, details=details))
    if json_file:
        write_output(json_file, json.dumps({"prompt": shown_prompt, **details,
                                            "tokens": [r.to_dict() for r in rows]}, indent=2) + "\n")
    return 0
