"""The plugin module of the `prt hello` command: what an entry point in group "prtcore" names."""

import prtcore

HELP = "greet someone (an example command added by a plugin)"


@prtcore.hookimpl
def register_commands(register):
    register("hello", "prt_command_example.hello", HELP)
