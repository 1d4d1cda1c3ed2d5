"""Hook specifications of prtcore's plugin system (pluggy, project and entry-point group "prtcore").

A plugin is a module (or object) with functions marked `@prtcore.hookimpl` and named after the specs below,
exposed through an entry point in group "prtcore":

    [project.entry-points.prtcore]
    mybackend = "my_package.plugin"

The built-in plugins (prt_mlx, prt_torch, prt_eagle2) register through these same hooks.
"""

import pluggy

hookspec = pluggy.HookspecMarker("prtcore")
hookimpl = pluggy.HookimplMarker("prtcore")


@hookspec
def register_backends(register):
    """Register backends.

    Call `register(name, factory, *, array_module, extra, requires=(), description="", reward_kinds={})`:
    - `factory`: a Backend subclass, or "module:attribute" naming one (imported only when the backend is used,
      so `import prtcore` never imports a framework);
    - `array_module`: the module of the backend's array type ("mlx.core", "torch"), used by `prtcore.to_numpy`;
    - `extra`: the pip extra that installs it (`pip install prtcore[extra]`), named in errors;
    - `requires`: importable module names that must be present for the backend to count as installed;
    - `reward_kinds`: {reward kind name: "module:attribute"}, the backend's implementations of reward kinds (its own
      or another plugin's; see prtcore.kinds), imported only when a reward of the kind is made on this backend.
    """


@hookspec
def register_reward_kinds(register):
    """Register reward kinds.

    Call `register(kind)` with a prtcore.kinds.RewardKind: the kind's name (RewardConfig.kind, `prt train --reward`,
    prt_config.json), a one-line description for the model card, its settings and their validation, its storage,
    for a kind stored as tensors their shapes and a NumPy reference forward, and optionally its implementations per
    backend as "module:attribute" strings. The built-in kinds (linear, transformer, twin) register through this hook
    too (prtcore.kinds.builtin). A name registered twice is an error naming both plugins.
    """


@hookspec
def register_model_families(register):
    """Register model families that need their own loading code (e.g. "eagle2").

    Call `register(ModelFamily(...))` (see prtcore.plugins.ModelFamily): the config `model_type`s it claims,
    and per backend a "module:function" loader taking `(path, **options)` and returning a BaseLM.
    """


@hookspec
def register_commands(register):
    """Register `prt` subcommands.

    Call `register(name, module, help)`:
    - `name`: the subcommand (`prt NAME ...`): lowercase letters, digits and "-";
    - `module`: "package.module" defining `add_arguments(parser)` (an argparse parser) and `run(args) -> int` (the
      exit status; raise a prtcore.PRTError for bad input: `prt` prints it as one line). `prt` imports it when it
      builds its parser, so keep its top level light (import frameworks inside `run`);
    - `help`: one line, shown by `prt --help` and as the command's description.
    The built-in commands register through this hook too (prtcore.cli.commands). A name registered twice is an
    error naming both plugins.
    """


@hookspec
def before_model_load(path, backend, options):
    """Called before a base model is loaded from `path` with backend name `backend`.

    Return a context manager to apply a runtime patch for the duration of the load (for example to let remote
    code import on machines without flash-attn), or None. `options` is the mutable dict of load options.
    """
