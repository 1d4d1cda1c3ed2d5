"""`prt` commands are plugins: the built-in ones register through the `register_commands` hook (prtcore.cli.commands),
and a plugin from outside prtcore (tests/plugins/prt_command_example, command "hello") adds one that `prt` lists,
runs and reports errors of like its own. In-process through `prtcore.cli.main.main`, except the import check."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import prtcore
from prtcore.cli.main import main

PLUGIN_NAME = "prt-command-example"
BUILTIN = "prtcore.cli.commands"


@pytest.fixture
def plugins(register_example):
    return register_example("prt_command_example", PLUGIN_NAME)


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- the registry
def test_builtin_commands_register_through_the_hook(plugins):
    from prtcore.cli.commands import COMMANDS

    registered = plugins.commands()
    assert list(registered)[:len(COMMANDS)] == list(COMMANDS)  # the built-in ones first, in their order
    for name, (module, help_text) in COMMANDS.items():
        assert registered[name] == plugins.CommandSpec(name, module, help_text, BUILTIN)
    assert registered["hello"] == plugins.CommandSpec("hello", "prt_command_example.hello",
                                                      "greet someone (an example command added by a plugin)",
                                                      PLUGIN_NAME)


def test_builtin_commands_stay_with_prt_load_plugins(monkeypatch):
    import prtcore.plugins as plugins

    monkeypatch.setenv("PRT_LOAD_PLUGINS", "")
    plugins.reset()
    try:
        assert {"train", "generate", "plugins", "conformance"} <= set(plugins.commands())
        assert plugins.describe_plugins() == []  # prtcore's own plugin is not an installed plugin
    finally:
        plugins.reset()


# ---------------------------------------------------------------------------------------------- prt hello
def test_the_plugin_command_runs(plugins, capsys):
    assert main(["hello", "--name", "PRT", "--times", "2"]) == 0
    out = capsys.readouterr()
    assert out.out == "hello, PRT!\nhello, PRT!\n" and out.err == ""


def test_the_plugin_commands_errors_are_one_line(plugins, capsys):
    assert main(["hello", "--times", "0"]) == 2
    assert capsys.readouterr().err == "prt hello: error: --times 0: must be >= 1\n"


def test_prt_help_lists_the_plugin_command(plugins, capsys):
    out = _help(capsys)
    assert "hello" in out and "greet someone (an example command added by a plugin)" in out
    assert "train" in out and "conformance" in out
    own = _help(capsys, "hello")
    assert own.startswith("usage: prt hello") and "--name" in own and "--times" in own
    assert "greet someone" in own


def test_without_the_plugin_there_is_no_such_command(capsys):
    import prtcore.plugins as plugins

    plugins.reset()
    with pytest.raises(SystemExit) as e:
        main(["hello"])
    assert e.value.code == 2
    assert "invalid choice: 'hello'" in capsys.readouterr().err


def test_prt_plugins_shows_the_hook_and_the_command(plugins, capsys):
    assert main(["plugins"]) == 0
    described = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert described[PLUGIN_NAME]["hooks"] == ["register_commands"]
    assert described[PLUGIN_NAME]["commands"] == ["hello"]
    assert BUILTIN not in described


# ---------------------------------------------------------------------------------------------- clashes and bugs
class _Clash:
    def __init__(self, name):
        self.name = name

    @prtcore.hookimpl
    def register_commands(self, register):
        register(self.name, "prt_command_example.hello", "the same name again")


@pytest.mark.parametrize("name, first", [("hello", PLUGIN_NAME), ("train", BUILTIN)])
def test_a_name_registered_twice_is_an_error_naming_both_plugins(plugins, capsys, name, first):
    plugins.plugin_manager().register(_Clash(name), name="clashing-plugin")
    with pytest.raises(prtcore.ConfigError) as e:
        plugins.commands()
    message = str(e.value)
    assert f"prt command {name!r} is registered twice" in message
    assert f"by plugin {first!r}" in message and "by plugin 'clashing-plugin'" in message
    assert main(["--help"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prt: error: ") and "'clashing-plugin'" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(prtcore.ConfigError):
        main(["--debug", "hello"])


class _Broken:
    @prtcore.hookimpl
    def register_commands(self, register):
        register("broken", "prt_command_example.no_such_module", "a command whose module is missing")


def test_a_command_module_that_cannot_be_imported_names_its_plugin(plugins, capsys):
    plugins.plugin_manager().register(_Broken(), name="broken-plugin")
    assert main(["hello"]) == 2
    err = capsys.readouterr().err
    assert "command 'broken' of plugin 'broken-plugin': cannot import module 'prt_command_example.no_such_module'" in err


class _BadName:
    @prtcore.hookimpl
    def register_commands(self, register):
        register("Bad Name", "prt_command_example.hello", "spaces and capitals")


def test_a_bad_command_name_is_refused(plugins):
    plugins.plugin_manager().register(_BadName(), name="bad-name-plugin")
    with pytest.raises(prtcore.ConfigError, match=r"plugin 'bad-name-plugin' registered prt command 'Bad Name'"):
        plugins.commands()


# ---------------------------------------------------------------------------------------------- imports
def test_prt_help_imports_no_framework():
    code = ("import sys\nfrom prtcore.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print([m for m in ('torch', 'mlx', 'mlx.core', 'mlx_lm', 'transformers', 'peft') if m in sys.modules])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRT_")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]"
