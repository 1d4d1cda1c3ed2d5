"""Capabilities are declared: `Backend` declares every optional method (prtcore.capabilities) with a default that
raises BackendError naming the backend and the capability; a backend lists what it implements in `capabilities`,
callers ask `backend.supports(name)`; and the decoding loop's pipeline is declared by the array namespace."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import numpy as np
import pytest

from prtcore import Backend, BackendError, ConfigError, TrainingConfig
from prtcore.arrays import NUMPY, NumpyNamespace
from prtcore.capabilities import CAPABILITIES, METHODS, is_default, missing_methods
from prtcore.sampling import BaseComposer, Pipeline, Sampler, decode

from .conftest import REPO_ROOT

OPTIONAL_CALLS = {  # capability -> a call of its method with arguments of the right shape
    "train": lambda b: b.train(None, None, {}, TrainingConfig(), "out", iters=1),
    "train_sft": lambda b: b.train_sft("model", {}, TrainingConfig(), "out", iters=1),
    "bench": lambda b: b.benchmark(None, workdir="w"),
    "count_parameters": lambda b: b.count_parameters("model", None),
    "reward_gradients": lambda b: b.reward_gradients(None, None, [[1, 2]], [[1, 1]], lam=1.0, entropy_coeff=0.0),
    "reward_from_adapter": lambda b: b.reward_from_adapter("adapter", None),
    "rotating_cache": lambda b: b.use_rotating_cache(None, 8),
}


class Minimal(Backend):
    """The required methods only."""

    name = "minimal"
    xp = NUMPY
    capabilities = frozenset({"load", "generate"})

    def load_base(self, path, **options):
        raise NotImplementedError

    def create_reward(self, config, source, *, seed=0):
        raise NotImplementedError

    def load_reward(self, artifact, source):
        raise NotImplementedError

    def load_tokenizer(self, path):
        raise NotImplementedError

    def asarray(self, ids):
        return np.asarray(ids)


def test_every_optional_method_is_declared_with_a_default_naming_backend_and_capability():
    assert set(OPTIONAL_CALLS) == set(METHODS) and set(METHODS) <= set(CAPABILITIES)
    backend = Minimal()
    for capability, call in OPTIONAL_CALLS.items():
        method = getattr(Backend, METHODS[capability])
        assert is_default(method) and method.__doc__, capability
        with pytest.raises(BackendError) as e:
            call(backend)
        assert "'minimal'" in str(e.value), capability
        if capability not in ("train", "bench"):  # their defaults predate prtcore.capabilities
            assert f"lacks capability {capability!r}" in str(e.value)
    assert Minimal.model_types is None  # loads any model type


def test_supports_and_require():
    backend = Minimal()
    assert backend.supports("load") and not backend.supports("train_sft")
    backend.require("generate")
    with pytest.raises(BackendError, match=r"backend 'minimal' cannot fine-tune a base model: it lacks capability "
                                           r"'train_sft'"):
        backend.require("train_sft", "fine-tune a base model")


def test_a_capability_without_its_method_is_refused_when_the_class_is_defined():
    with pytest.raises(TypeError, match=r"lists capabilities it does not implement: count_parameters "
                                        r"\(count_parameters\), train_sft \(train_sft\)"):
        class Liar(Minimal):  # noqa: F841
            capabilities = frozenset({"load", "train_sft", "count_parameters"})

    class Honest(Minimal):
        capabilities = frozenset({"load", "train_sft"})

        def train_sft(self, model_path, data, config, output_dir, *, lora=None, iters, resume=False, reporter=None,
                      **options):
            return {"done": True}

    assert Honest().train_sft("m", {}, None, "o", iters=1) == {"done": True}
    assert missing_methods(Honest) == []

    class Restricted(Honest):  # a subclass may offer less than it inherits
        capabilities = frozenset({"load"})

    assert not Restricted().supports("train_sft")


def _backend_classes():
    """The Backend classes of the installed built-in backends and of the NumPy example (imported, not created)."""
    from prtcore.plugins import backends

    out = {}
    for name, spec in backends().items():
        if spec.installed and isinstance(spec.factory, str):
            module, _, attribute = spec.factory.partition(":")
            out[name] = getattr(importlib.import_module(module), attribute)
    try:
        from prt_numpy.backend import NumpyBackend
    except ImportError:
        pass
    else:
        out.setdefault("numpy", NumpyBackend)
    return out


@pytest.mark.parametrize("name", sorted(_backend_classes()))
def test_backends_list_exactly_the_optional_methods_they_implement(name):
    cls = _backend_classes()[name]
    for capability, method in METHODS.items():
        implemented = not is_default(getattr(cls, method))
        assert implemented == (capability in cls.capabilities), f"{name}: {capability} ({method})"


def test_builtin_capabilities():
    classes = _backend_classes()
    if "mlx" in classes:
        assert {"train", "train_sft", "quantize", "count_parameters", "reward_gradients", "reward_from_adapter",
                "rotating_cache"} <= classes["mlx"].capabilities
    if "torch" in classes:
        assert {"train", "train_sft", "batched", "count_parameters", "reward_gradients"} <= classes["torch"].capabilities
        assert "rotating_cache" not in classes["torch"].capabilities


# ---------------------------------------------------------------------------------------------- callers
def test_train_sft_refuses_a_backend_without_the_capability_before_reading_anything(tmp_path):
    from prtcore.training import train_sft

    with pytest.raises(BackendError, match=r"backend 'minimal' cannot fine-tune a base model: it lacks capability "
                                           r"'train_sft'"):
        train_sft("no-model", str(tmp_path / "no-data"), tmp_path / "out", TrainingConfig(iters=1), backend=Minimal())
    assert not (tmp_path / "out").exists()


def test_train_reward_refuses_a_backend_without_the_capability(tmp_path):
    from prtcore import RewardConfig
    from prtcore.training import train_reward

    with pytest.raises(BackendError, match=r"lacks capability 'train'"):
        train_reward("no-model", str(tmp_path / "no-data"), tmp_path / "out", RewardConfig(kind="linear"),
                     TrainingConfig(iters=1), backend=Minimal())


def test_max_kv_size_needs_the_rotating_cache_capability():
    from prtcore.cli.common import check_max_kv_size

    check_max_kv_size(Minimal(), None)
    with pytest.raises(ConfigError, match=r"--max-kv-size: the 'minimal' backend has no rotating KV cache \(capability "
                                          r"'rotating_cache'; installed backends with it: "):
        check_max_kv_size(Minimal(), 8)

    class Rotating(Minimal):
        capabilities = frozenset({"load", "rotating_cache"})

        def use_rotating_cache(self, model, size):
            pass

    check_max_kv_size(Rotating(), 8)


PROBES = ("hasattr(backend", "getattr(backend", "backend.name ==", "backend.name !=",
          '.name == "mlx"', '.name != "mlx"', '.name == "torch"', '.name != "torch"')


def test_no_backend_is_probed_by_hasattr_or_by_name():
    """The library and the applications ask `backend.supports(...)`, never `hasattr` or the backend's name."""
    found = []
    for path in sorted((REPO_ROOT / "prtcore").rglob("*.py")):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if any(probe in code for probe in PROBES):
                found.append(f"{path.relative_to(REPO_ROOT)}:{lineno}: {line.strip()}")
    assert not found, "\n".join(found)


# ---------------------------------------------------------------------------------------------- pipelines
def test_nothing_registers_a_pipeline_at_import_time():
    import prtcore.sampling as sampling

    assert not hasattr(sampling, "register_pipeline") and not hasattr(sampling, "_PIPELINES")
    assert NUMPY.pipeline is None
    tree = ast.parse(Path(sampling.__file__).read_text(encoding="utf-8"))
    assert not [n for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)]


class _Recording(Pipeline):
    def __init__(self):
        self.started = self.finished = 0

    def active(self, token) -> bool:
        return True

    def start(self, token):
        self.started += 1
        return np.array(token)

    def finish(self, token, handle):
        self.finished += 1
        return handle


class _PipelinedNumpy(NumpyNamespace):
    name = "pipelined-numpy"

    def __init__(self):
        self.pipeline = _Recording()


class _Script:
    """Logits favouring script[i] at the i-th generated token (ids as (1, n) arrays)."""

    def __init__(self, script, vocab):
        self.script, self.vocab, self.seen, self.prompt = list(script), vocab, 0, None

    def __call__(self, ids):
        ids = np.asarray(ids)
        if self.prompt is None:
            self.prompt = ids.shape[1]
        else:
            self.seen += ids.shape[1]
        logits = np.zeros((1, self.vocab))
        if self.seen < len(self.script):
            logits[0, self.script[self.seen]] = 20.0
        return logits


def test_decode_uses_the_pipeline_the_namespace_declares():
    script, vocab = [3, 1, 4, 1, 5, 9, 2, 6], 12

    def run(xp, pipeline=None):
        steps = decode([_Script(script, vocab)], BaseComposer(vocab), Sampler(), [0, 1], xp=xp, max_tokens=len(script),
                       to_backend=np.asarray, pipeline=pipeline)
        return [(s.token, s.finish_reason) for s in steps]

    xp = _PipelinedNumpy()
    assert run(xp) == run(NUMPY) == run(xp, pipeline=False)
    assert [t for t, _ in run(NUMPY)] == script
    assert xp.pipeline.started == xp.pipeline.finished == len(script)  # the first run pipelined; the third did not
