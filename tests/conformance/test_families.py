"""The conformance checks (prtcore.testing.checks) for every family × check × backend subject.

One test per result that `prt conformance` reports: `--family NAME` / `--model PATH` choose the checkpoints
(default: the CI families), every installed backend and the example plugin take part. Checkpoints, loaded models
and artifacts are shared per family (module-scoped workspaces).
"""

from __future__ import annotations

import pytest

from conformance_options import backend_names, families, models
from prtcore.testing.checks import CHECKS, run_check, subject_label, subjects
from prtcore.testing.expected import builtin
from prtcore.testing.suite import assert_result


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    names = backend_names()
    targets = [("family", f) for f in families(metafunc.config)] + [("model", m) for m in models(metafunc.config)]
    cases, ids = [], []
    for target in targets:
        for check in CHECKS:
            for mode, subject in subjects(check, names):
                cases.append((target, check, mode, subject))
                ids.append(f"{target[1]}-{check}-{subject_label(mode, subject)}")
    metafunc.parametrize("case", cases, ids=ids)


@pytest.fixture(scope="module")
def workspaces(example_plugin, tmp_path_factory):
    """target → Workspace, made on first use and kept for the module."""
    from prtcore.plugins import get_backend
    from prtcore.testing.checkpoints import make_tokenizer
    from prtcore.testing.workspace import Workspace

    root = tmp_path_factory.mktemp("conformance")
    backends = {name: get_backend(name) for name in backend_names()}
    made: dict = {}

    def get(target):
        if target not in made:
            kind, value = target
            if kind == "family":
                if "tokenizer" not in made:
                    made["tokenizer"] = make_tokenizer(root / "tokenizer")
                made[target] = Workspace.for_family(value, backends, root / "families", tokenizer_dir=made["tokenizer"])
            else:
                made[target] = Workspace(value, backends, root / f"model-{len(made)}", load_options={"dtype": "float32"})
        return made[target]

    return get


def test_check(case, workspaces):
    target, check, mode, subject = case
    assert_result(run_check(workspaces(target), check, mode, subject, builtin()))
