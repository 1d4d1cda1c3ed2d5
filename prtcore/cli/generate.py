"""`prt generate`: stream text from a base model with portable rewards (or an EFT / proxy-tuning baseline)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ConfigError


def add_model_arguments(parser) -> None:
    """Flags shared by generate, chat, eval and explain."""
    parser.add_argument("--model", "--base", dest="model", required=True, help="target base model directory")
    parser.add_argument("--reward", action="append", default=[], metavar="DIR[:λ]",
                        help="reward artifact, optionally with its λ; repeat to compose several")
    parser.add_argument("--source", help="the source model the reward or fine-tuned model came from")
    parser.add_argument("--ft", help="fine-tuned source model (for --compose eft/proxy)")
    parser.add_argument("--compose", choices=("prt", "eft", "proxy", "base"), default="prt")
    parser.add_argument("--alpha", type=float, default=1.0, help="proxy-tuning weight")
    parser.add_argument("--backend", help="backend name (default: PRT_BACKEND, else mlx on Apple silicon, else torch)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own Python code")


def add_sampling_arguments(parser) -> None:
    parser.add_argument("--max-tokens", "-m", type=int, default=256)
    parser.add_argument("--temp", type=float, default=0.0, help="sampling temperature (0: greedy)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--min-p", type=float, default=0.0)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--system-prompt", help="system message when a chat template is used")
    parser.add_argument("--ignore-chat-template", action="store_true", help="feed the prompt as raw text")


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--prompt", "-p", required=True, help="prompt text, or - to read it from stdin")
    add_sampling_arguments(parser)


def parse_reward(spec: str) -> tuple[str, float | None]:
    """'DIR' or 'DIR:λ'."""
    path, sep, lam = spec.rpartition(":")
    if not sep or Path(spec).exists():
        return spec, None
    try:
        value = float(lam)
    except ValueError:
        return spec, None
    if not value > 0:
        raise ConfigError(f"--reward {spec}: λ={lam} must be > 0")
    return path, value


def load_model(args):
    """PRTForCausalLM or ComposedLM from the shared flags."""
    from ..model import ComposedLM, PRTForCausalLM

    options = {"trust_remote_code": True} if args.trust_remote_code else {}
    if args.compose == "prt":
        rewards = [parse_reward(r) for r in args.reward]
        if not rewards:
            raise ConfigError("--compose prt needs at least one --reward DIR (use --compose base for the base alone)")
        lams = [lam for _, lam in rewards]
        model = PRTForCausalLM.from_pretrained(args.model, [p for p, _ in rewards], backend=args.backend,
                                               source=args.source, **options)
        if any(lam is not None for lam in lams):
            model = PRTForCausalLM(model.backend, model.target, model.rewards,
                                   [lam if lam is not None else r.config.lam for lam, r in zip(lams, model.rewards)],
                                   model.sources)
        return model
    if args.reward:
        raise ConfigError(f"--reward is only used with --compose prt, not --compose {args.compose}")
    return ComposedLM.from_pretrained(args.model, finetuned=args.ft, source=args.source, method=args.compose,
                                      alpha=args.alpha, backend=args.backend, **options)


def prompt_ids(model, text: str, args, history: list[dict] | None = None) -> list[int]:
    """Token ids of the prompt: through the chat template when the tokenizer has one."""
    if args.ignore_chat_template or not getattr(model.tokenizer, "chat_template", None):
        return model.encode(text)
    messages = list(history or [])
    if args.system_prompt and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": args.system_prompt})
    messages.append({"role": "user", "content": text})
    return model.apply_chat_template(messages)


def sampling_kwargs(args) -> dict:
    return {"max_tokens": args.max_tokens, "temperature": args.temp, "top_p": args.top_p, "top_k": args.top_k,
            "min_p": args.min_p, "repetition_penalty": args.repetition_penalty, "seed": args.seed, "stop": args.stop}


def run(args) -> int:
    text = sys.stdin.read() if args.prompt == "-" else args.prompt
    model = load_model(args)
    for piece in model.stream(prompt_ids(model, text, args), **sampling_kwargs(args)):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
