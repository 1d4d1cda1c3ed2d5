"""The `prt` command. Each subcommand lives in its own module; prtcore.cli.commands registers them (hook
`register_commands`), as a plugin registers its own."""

from .main import main

__all__ = ["main"]
