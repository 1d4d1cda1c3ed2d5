"""Security: nothing is ever unpickled, remote code only on explicit opt-in (see also test_fuzz for artifact paths
that would leave their directory)."""

from __future__ import annotations

import inspect
import io
import re
from pathlib import Path

import pytest

from prtcore.errors import ModelLoadError

from .conftest import BACKENDS

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [ROOT / "prtcore", *sorted((ROOT / "plugins").iterdir())]


def _sources():
    for package in PACKAGES:
        if package.is_dir():
            yield from sorted(package.rglob("*.py"))


def _calls(text: str, name: str):
    """The text of every call `name(...)` (balanced parentheses)."""
    for m in re.finditer(re.escape(name) + r"\(", text):
        depth, i = 0, m.end() - 1
        for i in range(m.end() - 1, len(text)):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                break
        yield text[m.start(): i + 1]


def test_package_source_never_unpickles():
    found = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        if re.search(r"\b(c?pickle|dill|joblib|marshal)\b", text):
            found.append(f"{rel}: imports or names a pickle module")
        for call in _calls(text, "torch.load"):
            if "weights_only=True" not in call:
                found.append(f"{rel}: {call} without weights_only=True")
        if re.search(r"allow_pickle\s*=\s*True", text):
            found.append(f"{rel}: allow_pickle=True")
    assert not found, "\n".join(found)


def test_transformers_trainer_checkpoints_load_with_weights_only():
    """Resuming a torch run reads the Trainer's optimizer.pt / scheduler.pt / rng_state.pth through torch.load:
    every such call in the installed transformers must say weights_only=True (no arbitrary unpickling)."""
    pytest.importorskip("torch")
    import transformers.trainer as trainer

    text = Path(trainer.__file__).read_text(encoding="utf-8")
    calls = list(_calls(text, "torch.load"))
    assert calls, "transformers' Trainer no longer calls torch.load: check how it reads checkpoints"
    unsafe = [c for c in calls if "weights_only=True" not in c]
    assert not unsafe, unsafe


def test_a_malicious_rng_state_is_refused_not_executed(tmp_path):
    """What the Trainer's own allow-list (numpy arrays and dtypes) lets through does not include code."""
    torch = pytest.importorskip("torch")
    import pickle  # only to build the hostile file
    from transformers.trainer_pt_utils import safe_globals

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "rng_state.pth"
    buffer = io.BytesIO()
    torch.save({"python": Evil()}, buffer, pickle_module=pickle)
    path.write_bytes(buffer.getvalue())
    with safe_globals(), pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not marker.exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_trust_remote_code_defaults_to_false(backend):
    if backend == "torch":
        from prt_torch import base
        fns = [base._load_hf, base.load_tokenizer]
    else:
        from prt_mlx import base
        fns = [base.load_model]
    for fn in fns:
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False, fn


def test_torch_refuses_a_model_that_needs_its_own_code(rws, tmp_path):
    pytest.importorskip("torch")
    from prtcore.plugins import get_backend

    if "torch" not in BACKENDS:
        pytest.skip("torch backend not installed")
    from prtcore.testing.checkpoints import copy_with_remote_code

    model = copy_with_remote_code(rws["source"], tmp_path / "remote", tmp_path / "pwned")
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        get_backend("torch").load_base(model)
    assert not (tmp_path / "pwned").exists()
