"""`prt` entry point: argument parsing, and one-line errors (a traceback only with --debug).

The subcommands are those registered through the `register_commands` hook (prtcore.plugins.commands): prtcore's own
(prtcore.cli.commands) and any plugin's. Each command's module is imported when the parser is built.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from ..errors import ConfigError, PRTError
from ..plugins import commands
from ..quiet import QUIET_ENVIRONMENT


def one_line(message) -> str:
    """`message` on one line: newlines and other control or line-separating characters (which a bad argument
    can carry) are written as escapes."""
    text = str(message)
    return "".join(c if c.isprintable() or c == " " else ascii(c)[1:-1] for c in text)


def setup(command: str) -> None:
    """Quiet third-party progress bars and log chatter, and show warnings as one line each
    ("prt train: warning: ..."), before any library is imported."""
    for name, value in QUIET_ENVIRONMENT.items():  # what from_pretrained applies for one load (prtcore.quiet)
        os.environ.setdefault(name, value)
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


def say(line: str) -> None:
    """`line` on stderr in one write, so that the lines of processes sharing the stream (torchrun, accelerate
    launch, which may run Python unbuffered) do not interleave."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


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
    for spec in commands().values():
        command = sub.add_parser(spec.name, help=spec.help.replace("%", "%%"), description=spec.help)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        command.set_defaults(module=spec.module)
        command_module(spec).add_arguments(command)
    return parser


def command_module(spec):
    """The module of command `spec` (a prtcore.plugins.CommandSpec), imported; ConfigError naming the plugin when
    it cannot be imported (a plugin's bug, reported without a traceback unless --debug)."""
    try:
        return importlib.import_module(spec.module)
    except ImportError as e:
        raise ConfigError(f"command {spec.name!r} of plugin {spec.plugin!r}: cannot import module {spec.module!r} "
                          f"({type(e).__name__}: {e})") from e


def main(argv=None) -> int:
    try:
        try:
            return run_command(argv)
        finally:
            sys.stdout.flush()  # a reader that left (`prt ... | head`) shows here rather than at exit
    except BrokenPipeError:
        return stdout_closed()


def run_command(argv) -> int:
    try:
        parser = build_parser()
    except PRTError as e:  # a plugin's command cannot be registered or imported
        if "--debug" in (sys.argv[1:] if argv is None else list(argv)):
            raise
        say(f"prt: error: {one_line(e)}")
        return 2
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
        say(f"prt {args.command}: error: {one_line(e)}")
        return 2
    except KeyboardInterrupt:
        say(f"prt {args.command}: interrupted")
        return 130
    except Exception as e:  # a bug, not bad input: still one line unless --debug
        if args.debug:
            raise
        say(f"prt {args.command}: internal error: {type(e).__name__}: {one_line(e)} "
            "(rerun with --debug for the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
