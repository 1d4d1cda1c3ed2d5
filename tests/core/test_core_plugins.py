"""The plugin manager: built-in plugins, backend errors, environment switches and entry-point discovery."""

from __future__ import annotations

import json
import textwrap

import pytest

import prtcore
from prtcore import BackendError

from .conftest import run_python

BUILTINS = {"mlx", "torch", "eagle2"}


def test_describe_plugins_lists_builtins_with_hooks_and_versions(fresh_plugins):
    described = {entry["name"]: entry for entry in fresh_plugins.describe_plugins()}
    assert BUILTINS <= set(described)
    for name in BUILTINS:
        entry = described[name]
        assert entry["version"] == prtcore.__version__
        assert entry["distribution"] == "prtcore"
        assert entry["hooks"]
    assert described["mlx"]["hooks"] == ["register_backends"]
    assert described["torch"]["hooks"] == ["register_backends"]
    assert "register_model_families" in described["eagle2"]["hooks"]
    assert described["mlx"]["backends"]["mlx"]["extra"] == "mlx"
    assert described["torch"]["backends"]["torch"]["extra"] == "torch"
    assert "backends" not in described["eagle2"]
    assert [e["name"] for e in fresh_plugins.describe_plugins()] == sorted(described)


def test_builtin_backend_specs(fresh_plugins):
    specs = fresh_plugins.backends()
    assert {"mlx", "torch"} <= set(specs)
    assert specs["mlx"].array_module == "mlx.core" and specs["torch"].array_module == "torch"
    assert specs["mlx"].plugin == "mlx" and specs["torch"].plugin == "torch"
    assert all(isinstance(s.factory, str) for s in specs.values())  # imported lazily
    assert "eagle2" in fresh_plugins.model_families()


def test_unknown_backend_lists_available(fresh_plugins):
    with pytest.raises(BackendError) as e:
        fresh_plugins.get_backend("nope")
    msg = str(e.value)
    assert "'nope'" in msg and "available:" in msg and "mlx" in msg and "torch" in msg


class _GhostPlugin:
    @prtcore.hookimpl
    def register_backends(self, register):
        register("ghost", "ghost_pkg.backend:GhostBackend", array_module="ghost.core", extra="ghostextra",
                 requires=("surely_missing_module_xyz",), description="not installed anywhere")


def test_uninstalled_backend_names_the_extra(fresh_plugins):
    pm = fresh_plugins.plugin_manager()
    pm.register(_GhostPlugin(), name="ghost-plugin")
    fresh_plugins.backends.cache_clear()
    spec = fresh_plugins.backends()["ghost"]
    assert not spec.installed and spec.plugin == "ghost-plugin"
    with pytest.raises(BackendError) as e:
        fresh_plugins.get_backend("ghost")
    msg = str(e.value)
    assert "'ghost' is not installed" in msg and "surely_missing_module_xyz" in msg
    assert "pip install 'prtcore[ghostextra]'" in msg
    # Listed, as not installed, for other unknown names too.
    with pytest.raises(BackendError, match=r"ghost \(pip install prtcore\[ghostextra\]\)"):
        fresh_plugins.get_backend("nope")
    described = {e["name"]: e for e in fresh_plugins.describe_plugins()}
    assert described["ghost-plugin"]["backends"] == {"ghost": {"installed": False, "extra": "ghostextra"}}
    # Arrays of its module are not claimed by any installed backend.
    with pytest.raises(BackendError, match="ghost"):
        fresh_plugins.backend_for_array_module("ghost.core")


def test_prt_load_plugins_restricts_loading(fresh_plugins, monkeypatch):
    monkeypatch.setenv("PRT_LOAD_PLUGINS", "mlx")
    fresh_plugins.reset()
    assert set(fresh_plugins.backends()) == {"mlx"}
    assert [e["name"] for e in fresh_plugins.describe_plugins()] == ["mlx"]
    assert fresh_plugins.model_families() == {}
    monkeypatch.setenv("PRT_LOAD_PLUGINS", " torch , eagle2 ,")
    fresh_plugins.reset()
    assert set(fresh_plugins.backends()) == {"torch"}
    assert {e["name"] for e in fresh_plugins.describe_plugins()} == {"torch", "eagle2"}
    monkeypatch.setenv("PRT_LOAD_PLUGINS", "")
    fresh_plugins.reset()
    assert fresh_plugins.backends() == {} and fresh_plugins.describe_plugins() == []
    with pytest.raises(BackendError, match="no backend is installed"):
        fresh_plugins.get_backend()


def test_prt_backend_sets_the_default(fresh_plugins, monkeypatch):
    monkeypatch.setenv("PRT_BACKEND", "nope")
    assert fresh_plugins.default_backend_name() == "nope"
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        fresh_plugins.get_backend()


def test_prt_load_plugins_in_a_subprocess():
    code = "import json, prtcore.plugins as p; print(json.dumps(sorted(p.backends())))"
    out = run_python(code, env_extra={"PRT_LOAD_PLUGINS": "mlx"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["mlx"]


def test_prt_trace_plugins_prints_hook_calls():
    code = "import prtcore.plugins as p; p.backends(); p.model_families(); print('done')"
    out = run_python(code, env_extra={"PRT_TRACE_PLUGINS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
    err = out.stderr
    assert "[prtcore] register_model_families(" in err and "eagle2" in err
    assert "[prtcore] register_backends(" in err
    assert "returned" in err
    quiet = run_python(code)
    assert "[prtcore]" not in quiet.stderr


TOY_PLUGIN = '''
import prtcore


class ToyBackend:
    name = "toy"


@prtcore.hookimpl
def register_backends(register):
    register("toy", "toy_backend_plugin:ToyBackend", array_module="toy", extra="toy", requires=(),
             description="a throw-away test backend")
'''

TOY_CHECK = '''
import json, sys
import prtcore.plugins as p
specs = p.backends()
described = {e["name"]: e for e in p.describe_plugins()}
backend = p.get_backend("toy")
print(json.dumps({
    "backends": sorted(specs),
    "toy_plugin": specs["toy"].plugin,
    "toy_spec": [specs["toy"].factory, specs["toy"].array_module, specs["toy"].extra, list(specs["toy"].requires)],
    "described": described.get("toy"),
    "instance": type(backend).__module__ + "." + type(backend).__name__,
    "frameworks": [m for m in ("mlx", "torch", "transformers") if m in sys.modules],
}))
'''


def _install_toy(root):
    (root / "toy_backend_plugin.py").write_text(TOY_PLUGIN)
    info = root / "toy_backend_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-backend-plugin\nVersion: 0.1\n"
                                   "Summary: throw-away prtcore plugin\n")
    (info / "entry_points.txt").write_text("[prtcore]\ntoy = toy_backend_plugin\n")
    (info / "top_level.txt").write_text("toy_backend_plugin\n")


def test_entry_point_plugin_is_discovered(tmp_path):
    _install_toy(tmp_path)
    out = run_python(TOY_CHECK, pythonpath=[tmp_path])
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert "toy" in result["backends"] and {"mlx", "torch"} <= set(result["backends"])
    assert result["toy_plugin"] == "toy"
    assert result["toy_spec"] == ["toy_backend_plugin:ToyBackend", "toy", "toy", []]
    described = result["described"]
    assert described["version"] == "0.1"
    assert described["distribution"] == "toy-backend-plugin"
    assert described["hooks"] == ["register_backends"]
    assert described["backends"] == {"toy": {"installed": True, "extra": "toy"}}
    assert result["instance"] == "toy_backend_plugin.ToyBackend"
    assert result["frameworks"] == []


def test_entry_point_plugin_respects_prt_load_plugins(tmp_path):
    _install_toy(tmp_path)
    code = "import json, prtcore.plugins as p; print(json.dumps(sorted(p.backends())))"
    only_toy = run_python(code, pythonpath=[tmp_path], env_extra={"PRT_LOAD_PLUGINS": "toy"})
    assert only_toy.returncode == 0, only_toy.stderr
    assert json.loads(only_toy.stdout) == ["toy"]
    without = run_python(code, pythonpath=[tmp_path], env_extra={"PRT_LOAD_PLUGINS": "mlx,torch"})
    assert json.loads(without.stdout) == ["mlx", "torch"]


def test_reset_picks_up_a_plugin_installed_later(tmp_path):
    code = textwrap.dedent(f"""
        import sys, prtcore.plugins as p
        before = "toy" in p.backends()
        sys.path.insert(0, {str(tmp_path)!r})
        import importlib; importlib.invalidate_caches()
        still = "toy" in p.backends()
        p.reset()
        print(before, still, "toy" in p.backends())
    """)
    _install_toy(tmp_path)
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "True"]
