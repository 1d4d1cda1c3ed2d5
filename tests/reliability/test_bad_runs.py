"""Generated bad `prt train` invocations against a tree of files a user cares about (a model, a data set, a finished
run, a model and an artifact prt did not write as runs, notes, a directory another run holds): each ends in the one
line that names its cause, exit 2, and every file of the tree is byte for byte what it was."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prtcore.cli.main import main

from .conftest import BACKENDS
from .test_output_dirs import snapshot

EXAMPLES = int(os.environ.get("PRT_FUZZ_EXAMPLES", 160))
CASES = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                 derandomize=not os.environ.get("PRT_FUZZ_EXAMPLES"))
COUNTS: dict[str, int] = {}

# name -> (output directory, flags, what the error must say); {x}: paths of the tree; later flags win
TARGETS = {
    "model": ("{model}", (), "is or lies inside the input --model"),
    "inside-model": ("{model}/sub", (), "is or lies inside the input --model"),
    "data": ("{data}", (), "is or lies inside the input --data"),
    "inside-data": ("{data}/x/y", (), "is or lies inside the input --data"),
    "holds-inputs": ("{inputs}", (), "holds the input"),
    "foreign-model": ("{foreign_model}", (), "holds files prt did not write as a training run"),
    "foreign-model-overwrite": ("{foreign_model}", ("--overwrite",), "holds files prt did not write"),
    "foreign-artifact": ("{foreign_artifact}", ("--resume",), "holds files prt did not write"),
    "notes": ("{notes}", ("--overwrite",), "holds files prt did not write"),
    "file": ("{notes}/todo.txt", (), "not a directory"),
    "under-file": ("{notes}/todo.txt/out", (), "not writable"),
    "previous": ("{run}", (), "holds the checkpoint of a previous run"),
    "previous-overwrite-no-data": ("{run}", ("--overwrite", "--data", "{root}/no-data"), "no-data"),
    "previous-overwrite-no-model": ("{run}", ("--overwrite", "--model", "{root}/no-model"), "no-model"),
    "previous-resume-other-settings": ("{run}", ("--resume", "--learning-rate", "0.5"), "training.learning_rate"),
    "previous-both": ("{run}", ("--resume", "--overwrite"), "choose one"),
    "locked": ("{locked}", (), "another training run is writing here"),
}
# a bad setting given as well: refused first, naming the flag
BAD_SETTINGS = [("--learning-rate", "nan"), ("--learning-rate", "-1"), ("--iters", "0"), ("--batch-size", "0"),
                ("--lambda", "0"), ("--lambda", "-2"), ("--entropy-coeff", "nan"), ("--max-seq-length", "0"),
                ("--lora-r", "0"), ("--warmup-steps", "-1"), ("--grad-accumulation-steps", "0"),
                ("--save-every", "0"), ("--seed", "99999999999999999999"), ("--seed", "-1")]


@pytest.fixture(scope="module")
def tree(rws, tmp_path_factory):
    """The user's files: paths by name, and a process that holds the lock of `locked`."""
    root = tmp_path_factory.mktemp("precious")
    inputs = root / "inputs"
    shutil.copytree(rws["source"], inputs / "model")
    shutil.copytree(rws["data"], inputs / "data")
    run = root / "run"
    code = subprocess.run([str(Path(sys.executable).with_name("prt")), "train", "--backend", BACKENDS[-1], "--model",
                           str(inputs / "model"), "--data", str(inputs / "data"), "--output-dir", str(run), "--iters",
                           "2", "--batch-size", "4"], env={**os.environ, "PRT_QUIET": "1"}, capture_output=True)
    assert code.returncode == 0, code.stderr
    shutil.copytree(rws["source"], root / "foreign_model")
    shutil.copytree(run / "best", root / "foreign_artifact")
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("precious")
    holder = subprocess.Popen(["sleep", "600"])
    (root / "locked").mkdir()
    (root / ".locked.prt-lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                       "started": time.time()}))
    paths = {"root": root, "inputs": inputs, "model": inputs / "model", "data": inputs / "data", "run": run,
             "foreign_model": root / "foreign_model", "foreign_artifact": root / "foreign_artifact",
             "notes": root / "notes", "locked": root / "locked"}
    yield paths
    holder.kill()
    holder.wait()


@CASES
@given(target=st.sampled_from(sorted(TARGETS)), backend=st.sampled_from(BACKENDS),
       bad=st.none() | st.sampled_from(BAD_SETTINGS))
def test_bad_train_invocations_change_nothing(tree, capsys, monkeypatch, target, backend, bad):
    monkeypatch.setenv("PRT_QUIET", "1")
    COUNTS[target] = COUNTS.get(target, 0) + 1
    out, flags, expected = TARGETS[target]
    fill = {name: str(path) for name, path in tree.items()}
    argv = ["train", "--backend", backend, "--model", fill["model"], "--data", fill["data"], "--iters", "2",
            "--batch-size", "4", "--output-dir", out.format(**fill), *(f.format(**fill) for f in flags)]
    if bad is not None:
        argv += list(bad)
        expected = bad[0]
    before = snapshot(tree["root"])
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "internal error" not in err, f"{argv}: {err}"
    assert expected in err, f"{argv}: {err}"
    assert snapshot(tree["root"]) == before, argv
    assert not (tree["root"] / "inputs" / "model" / "sub").exists() and not (tree["root"] / "inputs" / "data" / "x").exists()


def test_bad_run_counts():
    print(f"\nbad train invocations: {sum(COUNTS.values())} ({COUNTS})")
    assert sum(COUNTS.values()) >= min(EXAMPLES, 150)


@pytest.mark.parametrize("function, arguments, message", [
    ("train_reward", {"model": None}, "model=None: expected a path"),
    ("train_reward", {"data_dir": 3}, "data_dir=3: expected a path"),
    ("train_reward", {"output_dir": None}, "output_dir=None: expected a path"),
    ("train_reward", {"reward": {"kind": "linear"}}, "reward={'kind': 'linear'}: expected a RewardConfig"),
    ("train_reward", {"training": {"iters": 1}}, "training={'iters': 1}: expected a TrainingConfig"),
    ("train_sft", {"lora": {"rank": 2}}, "lora={'rank': 2}: expected a LoRAConfig"),
    ("train_sft", {"training": None}, "training=None: expected a TrainingConfig"),
])
def test_training_functions_check_their_arguments(tree, function, arguments, message):
    from prtcore import RewardConfig, TrainingConfig
    from prtcore import training as api
    from prtcore.errors import ConfigError

    call = {"model": tree["model"], "data_dir": tree["data"], "output_dir": tree["root"] / "new-run",
            "training": TrainingConfig(iters=1), **({"reward": RewardConfig()} if function == "train_reward" else {})}
    before = snapshot(tree["root"])
    with pytest.raises(ConfigError) as info:
        getattr(api, function)(**{**call, **arguments}, backend=BACKENDS[-1])
    assert str(info.value) == message
    assert snapshot(tree["root"]) == before and not (tree["root"] / "new-run").exists()
