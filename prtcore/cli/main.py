"""`prt` entry point: argument parsing, and one-line errors (a traceback only with --debug)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from ..errors import PRTError

# name -> (module, one-line help); modules define add_arguments(parser) and run(args) -> int
COMMANDS = {
    "conformance": ("prtcore.cli.conformance", "check backends against NumPy and each other, per model family"),
    "demo": ("prtcore.cli.demo", "a reward trained on an old base, reused on a newer, bigger one, against the baselines"),
    "generate": ("prtcore.cli.generate", "generate text with portable rewards applied to a base model"),
    "plugins": ("prtcore.cli.plugins", "list installed plugins, their hooks and versions as JSON"),
    "env": ("prtcore.cli.env", "versions, backends, devices, BLAS and settings, to paste into a bug report"),
    "train": ("prtcore.cli.train", "train a portable reward on a frozen base model (or --method sft: fine-tune it)"),
    "chat": ("prtcore.cli.chat", "chat with a base model and portable rewards (reads stdin line by line)"),
    "eval": ("prtcore.cli.evaluate", "NLL, perplexity and exact match of base, PRT and EFT on a jsonl split"),
    "explain": ("prtcore.cli.explain", "each token's reward and how it moved the base's top choices"),
    "data": ("prtcore.cli.data", "convert a public data set (DriveLM) into jsonl splits"),
    "convert": ("prtcore.cli.convert", "convert LoRA adapters: mlx-lm <-> PEFT <-> PRT twin reward"),
    "bench": ("prtcore.cli.bench", "measure PRT's generation speed and training cost against its two models, EFT and LoRA"),
}


def one_line(message) -> str:
    """`message` on one line: newlines and other control or line-separating characters (which a bad argument
    can carry) are written as escapes."""
    text = str(message)
    return "".join(c if c.isprintable() or c == " " else ascii(c)[1:-1] for c in text)


def setup(command: str) -> None:
    """Quiet third-party progress bars and log chatter, and show warnings as one line each
    ("prt train: warning: ..."), before any library is imported."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    warnings.filterwarnings("ignore", category=FutureWarning)

    def show(message, category, filename, lineno, file=None, line=None):
        stream = file or sys.stderr
        try:
            stream.write(f"prt {command}: warning: {str(message).splitlines()[0]}\n")
        except (OSError, ValueError):
            pass

    warnings.showwarning = show


def stdout_closed() -> int:
    """Stop quietly, as Unix tools do, when the reader of stdout has gone: the rest goes to /dev/null so that
    Python's final flush cannot fail again (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, what a shell reports for a tool that SIGPIPE stopped


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="prt", description="Portable Reward Tuning: train a reward once, reuse it on any base.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        command.set_defaults(module=module)
        importlib.import_module(module).add_arguments(command)
    return parser


def main(argv=None) -> int:
    try:
        try:
            return run_command(argv)
        finally:
            sys.stdout.flush()  # a reader that left (`prt ... | head`) shows here rather than at exit
    except BrokenPipeError:
        return stdout_closed()


def run_command(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    setup(args.command)
    try:
        return int(importlib.import_module(args.module).run(args) or 0)
    except BrokenPipeError:
        raise
    except PRTError as e:
        if args.debug:
            raise
        print(f"prt {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"prt {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: still one line unless --debug
        if args.debug:
            raise
        print(f"prt {args.command}: internal error: {type(e).__name__}: {one_line(e)} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
