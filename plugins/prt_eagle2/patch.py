"""A scoped, reversible runtime patch that lets Eagle2's remote code load where flash-attn is missing (Macs).

    with no_flash_attn(attn_implementation="sdpa"):
        model = AutoModel.from_pretrained(path, trust_remote_code=True)

While active:
1. transformers' import check (`dynamic_module_utils.get_imports`) ignores optional packages that are not
   installed (flash_attn, decord), so `check_imports` no longer refuses the remote files;
2. imports of `flash_attn` and its submodules resolve to stubs whose functions raise when called, so vendored
   files that import it unguarded (the old `eagle_chat` format) still import;
3. every config that asks for flash attention (`attn_implementation` or `_attn_implementation` in config.json,
   in any sub-config, also when the remote `__init__` sets it, also through the internal field) gets `sdpa` or
   `eager` instead: transformers' `PreTrainedConfig._attn_implementation` property is wrapped.
On exit everything is put back and what was patched is printed. The remote modules keep references to the stub
functions; nothing calls them, since no config asks for flash attention any more.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

FLASH_PACKAGE = "flash_attn"
OPTIONAL_IMPORTS = (FLASH_PACKAGE, "flash_attn_interface", "decord")  # filtered from the check when missing
SAFE_ATTENTION = ("sdpa", "eager")


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# ------------------------------------------------------------------------------------------------ flash_attn stubs
class _StubModule(types.ModuleType):
    """A stand-in `flash_attn` module: every attribute is a function that raises when called."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*args, **kwargs):
            raise ImportError(f"{self.__name__}.{name}: flash_attn is not installed (prt_eagle2 stub; "
                              "attention runs through sdpa/eager instead)")

        unavailable.__name__ = name
        return unavailable


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves `flash_attn` and `flash_attn.*` to stub packages (each with a real `__spec__`)."""

    def __init__(self):
        self.created: list[str] = []

    def find_spec(self, name, path=None, target=None):
        if name == FLASH_PACKAGE or name.startswith(FLASH_PACKAGE + "."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        self.created.append(spec.name)
        return _StubModule(spec.name)

    def exec_module(self, module):
        module.__path__ = []


# ------------------------------------------------------------------------------------------------ the patch
class PatchReport:
    """What a patch changed, printed on exit."""

    def __init__(self, path: str = ""):
        self.path = path
        self.filtered: dict[str, set[str]] = {}  # package -> files whose check ignored it
        self.attention: dict[str, set[str]] = {}  # config class -> requested implementations replaced
        self.stubbed: list[str] = []
        self.options: list[str] = []

    def lines(self) -> list[str]:
        out = [f"prt_eagle2: patched the load of {self.path or 'a remote-code model'} (no flash-attn here):"]
        for package, files in sorted(self.filtered.items()):
            out.append(f"  import check: ignored {package} (in {', '.join(sorted(files))})")
        if self.stubbed:
            out.append(f"  stubbed modules: {', '.join(self.stubbed)}")
        for cls, requested in sorted(self.attention.items()):
            out.append(f"  attention: {cls}: {', '.join(sorted(requested))}")
        out += [f"  option: {o}" for o in self.options]
        out.append("  patch removed")
        return out


def _filtered_get_imports(original, optional, report: PatchReport):
    def get_imports(filename):
        found = original(filename)
        dropped = [m for m in found if m in optional]
        for m in dropped:
            report.filtered.setdefault(m, set()).add(Path(filename).name)
        return [m for m in found if m not in optional]

    return get_imports


def _guarded_attention(original: property, attn: str, report: PatchReport) -> property:
    """`PreTrainedConfig._attn_implementation` rewriting flash attention to `attn`, when set and when read
    (so also a value some code put into `_attn_implementation_internal` directly)."""

    def safe(config, value):
        replaced = _safe_attention(value, attn)
        if replaced != value:
            report.attention.setdefault(type(config).__name__, set()).add(f"{_describe(value)} -> {attn}")
        return replaced

    return property(lambda self: safe(self, original.fget(self)),
                    lambda self, value: original.fset(self, safe(self, value)), doc=original.__doc__)


def _safe_attention(value, attn: str):
    if isinstance(value, str) and value.startswith("flash_attention"):
        return attn
    if isinstance(value, dict):
        return {k: _safe_attention(v, attn) for k, v in value.items()}
    return value


def _describe(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k or 'top'}: {v}" for k, v in value.items() if str(v).startswith("flash")) + "}"
    return str(value)


@contextlib.contextmanager
def no_flash_attn(attn_implementation: str = "sdpa", *, path: str = "", optional=OPTIONAL_IMPORTS,
                  report=None, echo=True):
    """Patch transformers for the duration of a remote-code load on a machine without flash-attn (see above).

    `report` (a PatchReport) collects what was patched; `echo` prints it to stderr on exit.
    """
    from transformers import dynamic_module_utils
    from transformers.configuration_utils import PreTrainedConfig

    if attn_implementation not in SAFE_ATTENTION:
        raise ValueError(f"attn_implementation={attn_implementation!r}: the patch forces one of {', '.join(SAFE_ATTENTION)}")
    report = report if report is not None else PatchReport(path)
    missing = {m for m in optional if not installed(m)}
    finder = _StubFinder() if FLASH_PACKAGE in missing else None
    saved_get_imports = dynamic_module_utils.get_imports
    saved_attention = PreTrainedConfig.__dict__["_attn_implementation"]
    dynamic_module_utils.get_imports = _filtered_get_imports(saved_get_imports, missing, report)
    PreTrainedConfig._attn_implementation = _guarded_attention(saved_attention, attn_implementation, report)
    if finder is not None:
        sys.meta_path.insert(0, finder)
    try:
        yield report
    finally:
        dynamic_module_utils.get_imports = saved_get_imports
        PreTrainedConfig._attn_implementation = saved_attention
        if finder is not None:
            sys.meta_path.remove(finder)
            for name in finder.created:
                if isinstance(sys.modules.get(name), _StubModule):
                    del sys.modules[name]
            report.stubbed = list(finder.created)
        if echo:
            print("\n".join(report.lines()), file=sys.stderr)


def patch_active() -> bool:
    """True while any part of `no_flash_attn` is in place (tests check it is gone afterwards)."""
    from transformers import dynamic_module_utils
    from transformers.configuration_utils import PreTrainedConfig

    return (dynamic_module_utils.get_imports.__module__ != dynamic_module_utils.__name__
            or PreTrainedConfig.__dict__["_attn_implementation"].fget.__module__ == __name__
            or any(isinstance(f, _StubFinder) for f in sys.meta_path)
            or any(isinstance(m, _StubModule) for m in list(sys.modules.values())))


# ------------------------------------------------------------------------------------------------ dtypes
MPS_UNSAFE = ("bfloat16", "bf16")


def mps_safe_dtype(dtype, device_type: str, bf16_supported: bool):
    """float16 instead of bfloat16 (requested, "auto" or the default) on an MPS device without bf16 (macOS < 14)."""
    if device_type != "mps" or bf16_supported:
        return dtype
    name = str(dtype).replace("torch.", "") if dtype is not None else None
    if name is None or name == "auto" or name in MPS_UNSAFE:
        return "float16"
    return dtype


def mps_bf16_supported() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    check = getattr(mps, "is_macos_or_newer", None)
    return bool(mps is not None and mps.is_available() and check is not None and check(14, 0))
