"""The plugin manager: discovery of plugins by entry point, the backend, reward-kind, model-family and command
registries.

Environment:
- `PRT_LOAD_PLUGINS=a,b` loads only the named entry-point plugins (empty: none);
- `PRT_TRACE_PLUGINS=1` prints every hook call with its arguments and results to stderr;
- `PRT_BACKEND=name` sets the default backend.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import platform
import re
import sys
from functools import lru_cache

import attrs
import pluggy

from . import hookspecs
from .errors import BackendError, ConfigError
from .kinds import RewardKind, load_attribute

ENTRY_POINT_GROUP = "prtcore"
DEFAULT_BACKEND_ORDER = ("mlx", "torch")  # on Apple silicon
DEFAULT_BACKEND_ORDER_OTHER = ("torch", "mlx")  # elsewhere
# prtcore's own plugins: always registered (whatever PRT_LOAD_PLUGINS says), not listed by describe_plugins
BUILTIN_PLUGINS = ("prtcore.kinds.builtin", "prtcore.cli.commands")
COMMAND_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")


@attrs.frozen
class BackendSpec:
    name: str
    factory: object
    array_module: str
    extra: str
    requires: tuple[str, ...] = ()
    description: str = ""
    plugin: str = ""
    reward_kinds: dict = attrs.field(factory=dict)  # kind name -> "module:attribute" (the backend's implementations)

    @property
    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.requires)

    def load(self):
        factory = self.factory
        if isinstance(factory, str):
            module, _, attribute = factory.partition(":")
            factory = getattr(importlib.import_module(module), attribute)
        return factory()


@attrs.frozen
class ModelFamily:
    """A family of base models with loading code of its own."""

    name: str
    model_types: tuple[str, ...] = attrs.field(converter=tuple)
    loaders: dict = attrs.field(factory=dict)  # backend name -> "module:function"
    description: str = ""


def _trace(hook_name, hook_impls, kwargs):
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    print(f"[prtcore] {hook_name}({args}) -> {[impl.plugin_name for impl in hook_impls]}", file=sys.stderr)


@lru_cache(maxsize=1)
def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("prtcore")
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    allowed = os.environ.get("PRT_LOAD_PLUGINS")
    if allowed is None:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    else:
        for name in filter(None, (n.strip() for n in allowed.split(","))):
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
    if os.environ.get("PRT_TRACE_PLUGINS"):
        pm.add_hookcall_monitoring(_trace, lambda outcome, name, impls, kwargs: print(
            f"[prtcore] {name} returned {outcome.get_result()!r}", file=sys.stderr))
    pm.check_pending()
    return pm


def reset() -> None:
    """Forget loaded plugins and registries (tests use this after installing a plugin)."""
    plugin_manager.cache_clear()
    backends.cache_clear()
    reward_kinds.cache_clear()
    model_families.cache_clear()
    commands.cache_clear()
    _backend_instance.cache_clear()


@lru_cache(maxsize=1)
def backends() -> dict[str, BackendSpec]:
    found: dict[str, BackendSpec] = {}

    def registrar(plugin):
        def register(name, factory, *, array_module, extra, requires=(), description="", reward_kinds=None):
            found[name] = BackendSpec(name, factory, array_module, extra, tuple(requires), description, plugin,
                                      dict(reward_kinds or {}))
        return register

    _call_each_plugin("register_backends", registrar, last_first=True)
    return found


def _call_each_plugin(hook: str, registrar, *, last_first: bool = False) -> None:
    """Call `hook(register=registrar(plugin name))` for one plugin at a time, so that each registration knows its
    plugin; through the hook (so PRT_TRACE_PLUGINS shows it)."""
    pm = plugin_manager()
    impls = getattr(pm.hook, hook).get_hookimpls()
    for impl in reversed(impls) if last_first else impls:
        others = [p for p in pm.get_plugins() if p is not impl.plugin]
        pm.subset_hook_caller(hook, others)(register=registrar(impl.plugin_name))


@lru_cache(maxsize=1)
def reward_kinds() -> dict[str, RewardKind]:
    """Every registered reward kind by name (prtcore.kinds), the built-in ones first."""
    found: dict[str, RewardKind] = {}

    def registrar(plugin):
        def register(kind):
            if not isinstance(kind, RewardKind):
                raise ConfigError(f"plugin {plugin!r} registered {kind!r} as a reward kind: expected a "
                                  "prtcore.kinds.RewardKind")
            if kind.name in found:
                raise ConfigError(f"reward kind {kind.name!r} is registered twice: by plugin "
                                  f"{found[kind.name].plugin!r} and by plugin {plugin!r}")
            found[kind.name] = attrs.evolve(kind, plugin=plugin)
        return register

    _call_each_plugin("register_reward_kinds", registrar)
    return found


def reward_kind(name: str) -> RewardKind:
    """The registered reward kind called `name`; ConfigError listing the registered ones otherwise."""
    kinds = reward_kinds()
    if not isinstance(name, str) or name not in kinds:
        raise ConfigError(f"unknown reward kind {name!r}; registered: {', '.join(kinds) or 'none'} "
                          "(a plugin adds others: prtcore.kinds)")
    return kinds[name]


def reward_implementation(kind: str, backend: str):
    """Backend `backend`'s implementation of reward kind `kind` (imported): the one the backend declares when it
    registers, else the one the kind lists; BackendError naming the backends that have one otherwise."""
    specs, own = backends(), reward_kind(kind).implementations
    target = (specs[backend].reward_kinds.get(kind) if backend in specs else None) or own.get(backend)
    if target is None:
        having = sorted({n for n, s in specs.items() if kind in s.reward_kinds} | set(own))
        raise BackendError(f"backend {backend!r} does not implement reward kind {kind!r} "
                           f"(implemented by: {', '.join(having) or 'none'})")
    return load_attribute(target)


@attrs.frozen
class CommandSpec:
    """A `prt` subcommand (hook register_commands): `module` defines add_arguments(parser) and run(args) -> int."""

    name: str
    module: str
    help: str
    plugin: str = ""


@lru_cache(maxsize=1)
def commands() -> dict[str, CommandSpec]:
    """Every registered `prt` subcommand by name, the built-in ones (prtcore.cli.commands) first; nothing imported."""
    found: dict[str, CommandSpec] = {}

    def registrar(plugin):
        def register(name, module, help):
            where = f"plugin {plugin!r} registered prt command {name!r}"
            if not isinstance(name, str) or not COMMAND_NAME.match(name):
                raise ConfigError(f"{where}: a name is lowercase letters, digits and '-', starting with a letter")
            if not isinstance(module, str) or not MODULE_NAME.match(module):
                raise ConfigError(f"{where} with module {module!r}: expected a module name 'package.module'")
            if not isinstance(help, str) or "\n" in help:
                raise ConfigError(f"{where}: its help must be one line of text")
            if name in found:
                raise ConfigError(f"prt command {name!r} is registered twice: by plugin {found[name].plugin!r} "
                                  f"(module {found[name].module}) and by plugin {plugin!r} (module {module})")
            found[name] = CommandSpec(name, module, help, plugin)
        return register

    _call_each_plugin("register_commands", registrar)
    return found


@lru_cache(maxsize=1)
def model_families() -> dict[str, ModelFamily]:
    found: dict[str, ModelFamily] = {}
    plugin_manager().hook.register_model_families(register=lambda family: found.__setitem__(family.name, family))
    return found


def family_for_model_type(model_type: str) -> ModelFamily | None:
    for family in model_families().values():
        if model_type in family.model_types:
            return family
    return None


def installed_backend_names() -> list[str]:
    return [name for name, spec in backends().items() if spec.installed]


def default_backend_name() -> str:
    """PRT_BACKEND if set; else mlx on Apple silicon and torch elsewhere, whichever is installed first."""
    if os.environ.get("PRT_BACKEND"):
        return os.environ["PRT_BACKEND"]
    apple = sys.platform == "darwin" and platform.machine() == "arm64"
    specs = backends()
    for name in DEFAULT_BACKEND_ORDER if apple else DEFAULT_BACKEND_ORDER_OTHER:
        if name in specs and specs[name].installed:
            return name
    for name, spec in specs.items():
        if spec.installed:
            return name
    raise BackendError(
        "no backend is installed: pip install 'prtcore[mlx]' or 'prtcore[torch]'"
        f" (registered: {', '.join(specs) or 'none'})"
    )


def get_backend(name: str | None = None):
    """The Backend instance called `name` (None: the default)."""
    return _backend_instance(name or default_backend_name())


@lru_cache(maxsize=None)
def _backend_instance(name: str):
    specs = backends()
    available = ", ".join(f"{n} ({'installed' if s.installed else f'pip install prtcore[{s.extra}]'})" for n, s in specs.items())
    if name not in specs:
        raise BackendError(f"unknown backend {name!r}; available: {available or 'none'}")
    spec = specs[name]
    if not spec.installed:
        missing = [m for m in spec.requires if importlib.util.find_spec(m) is None]
        raise BackendError(
            f"backend {name!r} is not installed (missing {', '.join(missing)}): pip install 'prtcore[{spec.extra}]'; "
            f"available: {available}"
        )
    return spec.load()


def backend_for_array_module(module: str):
    """The backend whose arrays live in `module` (e.g. 'mlx.core', 'torch')."""
    top = module.split(".")[0]
    for spec in backends().values():
        if spec.array_module.split(".")[0] == top:
            return get_backend(spec.name)
    raise BackendError(f"no installed backend owns arrays of module {module!r}")


@contextlib.contextmanager
def before_model_load(path, backend: str, options: dict):
    """Apply every plugin's pre-load patch for the duration of a model load."""
    managers = plugin_manager().hook.before_model_load(path=str(path), backend=backend, options=options)
    with contextlib.ExitStack() as stack:
        for manager in managers:
            if manager is not None:
                stack.enter_context(manager)
        yield


def describe_plugins() -> list[dict]:
    """Installed plugins with their hooks and versions (what `prt plugins` prints)."""
    pm = plugin_manager()
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    out = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None or name in BUILTIN_PLUGINS:
            continue
        hooks = sorted(caller.name for caller in (pm.get_hookcallers(plugin) or []))
        entry = {"name": name, "hooks": hooks}
        dist = dists.get(id(plugin))
        if dist is not None:
            entry["version"] = dist.version
            entry["distribution"] = dist.project_name
        backends_here = [s.name for s in backends().values() if s.plugin == name]
        if backends_here:
            entry["backends"] = {b: {"installed": backends()[b].installed, "extra": backends()[b].extra} for b in backends_here}
        kinds_here = [k.name for k in reward_kinds().values() if k.plugin == name]
        if kinds_here:
            entry["reward_kinds"] = kinds_here
        commands_here = [c.name for c in commands().values() if c.plugin == name]
        if commands_here:
            entry["commands"] = commands_here
        out.append(entry)
    return sorted(out, key=lambda e: e["name"])
