"""The `prt` command. Each subcommand lives in its own module and registers itself in COMMANDS."""

from .main import main

__all__ = ["main"]
