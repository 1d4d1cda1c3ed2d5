"""An example third-party `prt` command, "hello", added from outside prtcore exactly as a plugin package would add it.

- prt_command_example.plugin: the plugin module (hook `register_commands`), what an entry point in group "prtcore"
  would name (`[project.entry-points.prtcore] hello = "prt_command_example.plugin"`);
- prt_command_example.hello: the command's module (`add_arguments(parser)`, `run(args) -> int`), imported when `prt`
  builds its parser.
"""
