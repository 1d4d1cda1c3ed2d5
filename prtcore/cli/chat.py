"""`prt chat`: an interactive multi-turn chat with the reward applied (like `mlx_lm chat`).

Reads stdin line by line, so it also runs from a script or a pipe: each non-empty line is one user turn, and the
reply streams to stdout followed by a blank line. The history goes through the tokenizer's chat template every
turn. The commands (`COMMANDS`) are handled here and never sent to the model: `/help` lists them, `/reset` forgets
the history and says so, `/quit` (or `/exit`, `/q`, or end of input) ends the chat. What they print goes to stderr,
as does the `>>` prompt on a terminal.
"""

from __future__ import annotations

import sys

from ..errors import ConfigError
from .common import (
    add_compose_argument, add_model_arguments, add_sampling_arguments, chat_ids, check_sampling, load_model,
    sampling_kwargs,
)


COMMANDS = {"/help": "list these commands", "/reset": "forget the conversation so far",
            "/quit": "end the chat (also /exit, /q, or end of input)"}
QUIT = ("/quit", "/exit", "/q")


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    add_compose_argument(parser)
    add_sampling_arguments(parser, max_tokens=512)


def run(args) -> int:
    check_sampling(args)
    if args.ignore_chat_template:
        raise ConfigError("--ignore-chat-template: prt chat keeps its history through the chat template")
    model = load_model(args)
    if not getattr(model.tokenizer, "chat_template", None):
        raise ConfigError(f"{args.model}: the tokenizer has no chat template; prt chat needs one (use prt generate)")
    interactive = sys.stdin.isatty()
    system = [{"role": "system", "content": args.system_prompt}] if args.system_prompt else []
    history: list[dict] = []
    kwargs = sampling_kwargs(args, model)
    if interactive:
        sys.stderr.write("[prt chat] /help for the commands, /reset to forget the history, /quit to end\n")
    while True:
        if interactive:
            sys.stderr.write(">> ")
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:  # end of input
            break
        text = line.rstrip("\r\n")
        command = text.strip()
        if command in QUIT:
            break
        if command == "/help":
            sys.stderr.write("".join(f"{name:<8} {what}\n" for name, what in COMMANDS.items()))
            continue
        if command == "/reset":
            history = []
            sys.stderr.write("[prt chat] history cleared\n")
            continue
        if command.startswith("/") and " " not in command:  # a mistyped command, not a message
            sys.stderr.write(f"[prt chat] unknown command {command}; /help lists the commands\n")
            continue
        if not command:
            continue
        history.append({"role": "user", "content": text})
        ids = chat_ids(model, system + history)
        pieces = []
        for piece in model.stream(ids, **kwargs):
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n\n")
        sys.stdout.flush()
        history.append({"role": "assistant", "content": "".join(pieces)})
    return 0
