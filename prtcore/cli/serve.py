"""`prt serve`: an OpenAI-compatible server (/v1/completions, /v1/chat/completions, /v1/models) for a base model
with portable rewards; any OpenAI client reaches it with `base_url="http://HOST:PORT/v1"`.

A request may choose the composition (`compose`: prt, eft, proxy, base) and, for prt, the rewards and their λs
(`rewards`: ["NAME", "NAME:λ"], NAME a --reward directory's name) among what the server loaded; see
docs/serving.md. Needs the `serve` extra (starlette, uvicorn).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import ConfigError
from .common import add_compose_argument, add_model_arguments, apply_max_kv_size, load_finetuned, load_model, parse_reward

API_KEY_VARIABLE = "PRT_API_KEY"


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    add_compose_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one, printed at start)")
    parser.add_argument("--served-model-name", metavar="NAME",
                        help="the model id clients send (default: the --model directory's name)")
    parser.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_VARIABLE}, if set)")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens generated when a request sets no max_tokens")
    parser.add_argument("--max-batch", type=int, default=16,
                        help="requests decoded together (backends with capability 'batched'; 1: one at a time)")
    parser.add_argument("--max-queue", type=int, default=64, help="requests that may wait; more get a 503")
    parser.add_argument("--request-timeout", type=float, default=600.0, metavar="SECONDS",
                        help="a request not answered in time gets a 504")
    parser.add_argument("--max-body", type=int, default=1 << 20, metavar="BYTES", help="largest request body (413)")


def check_limits(args) -> None:
    for flag, value, low in (("--max-tokens", args.max_tokens, 1), ("--max-batch", args.max_batch, 1),
                             ("--max-queue", args.max_queue, 1), ("--max-body", args.max_body, 1),
                             ("--port", args.port, 0)):
        if value < low:
            raise ConfigError(f"{flag} {value}: must be >= {low}")
    if args.port > 65535:
        raise ConfigError(f"--port {args.port}: must be <= 65535")
    if not args.request_timeout > 0:
        raise ConfigError(f"--request-timeout {args.request_timeout}: must be > 0")


def load_served(args):
    """The ServedModels of the flags: the rewards (if any) and the fine-tuned model (if --ft) on one target."""
    from ..model import ComposedLM
    from ..serve.models import ServedModels, reward_names, short_name

    prt, finetuned = None, None
    if args.reward:
        prt = load_model(argparse.Namespace(**{**vars(args), "ft": None}), "prt")
        target, backend = prt.target, prt.backend
        if args.ft:
            finetuned = load_finetuned(args, backend)
            apply_max_kv_size(ComposedLM(backend, [target, *finetuned], "eft"), args.max_kv_size)
    else:  # the flags' composition: base, or eft / proxy with --ft and --source (prt without a reward is refused)
        model = load_model(args)
        target = model.target
        finetuned = model.models[1:] if args.compose in ("eft", "proxy") else None
    name = args.served_model_name or short_name(args.model)
    names = reward_names(parse_reward(r)[0] for r in args.reward)
    return ServedModels(name, target, prt=prt, names=names, finetuned=finetuned, compose=args.compose, alpha=args.alpha)


def run(args) -> int:
    check_limits(args)
    api_key = args.api_key or os.environ.get(API_KEY_VARIABLE) or None
    try:
        from ..serve.app import Service, create_app
        from ..serve.engine import Engine
        from ..serve.server import serve
    except ImportError as e:
        raise ConfigError(f"prt serve needs starlette and uvicorn ({e}): pip install 'prtcore[serve]'") from None
    served = load_served(args)
    batch = args.max_batch if served.backend.supports("batched") else 1
    engine = Engine(max_batch=batch, max_queue=args.max_queue, end_thread=served.backend.end_thread)
    service = Service(served, engine, api_key=api_key, max_body=args.max_body, timeout=args.request_timeout,
                      max_tokens=args.max_tokens)

    def announce(url: str) -> None:
        rewards = ", ".join(served.names) or "none"
        print(f"prt serve: {url}/v1 serves {served.name!r} on {served.backend.name} (rewards: {rewards}; "
              f"compositions: {', '.join(served.compositions())}; batches of up to {batch})", flush=True)
        if batch == 1 and args.max_batch > 1:
            print(f"prt serve: the {served.backend.name} backend has no batched decoding (capability 'batched'): "
                  "requests are decoded one at a time", file=sys.stderr, flush=True)

    serve(create_app(service), args.host, args.port, grace=args.request_timeout, announce=announce)
    return 0
