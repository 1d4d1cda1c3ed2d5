"""mlx-lm's --resume-adapter-file: a new run starts from the weights of a reward a run wrote (its directory or a
weights file in it) and keeps that reward's settings. Its validation before the first step is the saved reward's
last one; across backends too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import BACKENDS, REWARD_ARGS, prt, run_all, train_command

VALIDATION = ["--batch-size", "4", "--mask-prompt", "--val-batches", "2"]  # what the saved run validated with
CONTINUE = [*VALIDATION, "--iters", "2", "--learning-rate", "1e-2", "--steps-per-report", "1", "--steps-per-eval", "2"]
FIRST = [*VALIDATION, "--iters", "4", "--learning-rate", "1e-2", "--steps-per-report", "2", "--steps-per-eval", "4",
         "--seed", "1"]
KINDS = {"linear": (["--reward", "linear"], "reward.safetensors"),
         "full twin": (["--fine-tune-type", "full"], "model.safetensors")}


def val_losses(out: Path) -> list[tuple[int, float]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [(r["iteration"], r["val_loss"]) for r in map(json.loads, lines) if "val_loss" in r]


def reward_config(out: Path) -> dict:
    return json.loads((out / "prt_config.json").read_text())["reward"]


@pytest.fixture(scope="module")
def started(ws, trained):
    """Per (backend, kind): the saved run and the run that started from it. The LoRA twin starts from the
    session's reward run (REWARD_ARGS) of each backend, on the same backend and on the other one."""
    root = ws["root"] / "start-from"
    saved = {(b, kind): root / f"{b}-{kind}" for b in BACKENDS for kind in KINDS}
    run_all([train_command(ws, b, saved[b, kind], [*KINDS[kind][0], *FIRST]) for b, kind in saved])
    for b in BACKENDS:
        saved[b, "lora twin"] = trained[b]["reward"]
    jobs, pairs = [], {}
    for (b, kind), first in saved.items():
        weights = KINDS[kind][1] if kind in KINDS else "adapter_model.safetensors"
        for backend in (BACKENDS if kind == "lora twin" else [b]):  # a LoRA twin crosses backends
            out = root / f"{backend}-from-{b}-{kind}"
            jobs.append(train_command(ws, backend, out, ["--resume-adapter-file", first / weights, *CONTINUE]))
            pairs[backend, b, kind] = (first, out)
    runs = run_all(jobs)
    return {key: (first, out, run) for (key, (first, out)), run in zip(pairs.items(), runs)}


def test_a_run_starts_where_the_saved_reward_ended(started):
    assert len(started) == len(BACKENDS) * (len(KINDS) + len(BACKENDS))
    for (backend, saved_by, kind), (first, out, run) in started.items():
        ended = val_losses(first)[-1][1]  # the saved reward is the last step's weights
        losses = val_losses(out)
        assert losses[0][0] == 0 and losses[0][1] == pytest.approx(ended, rel=1e-4, abs=1e-5), (backend, saved_by, kind)
        assert losses[-1][0] == 2 and losses[-1][1] != losses[0][1]  # and trains on from there
        assert reward_config(out) == reward_config(first)
        record = json.loads((out / "prt_run.json").read_text())
        assert record["init_from"] == str(first)


def test_the_saved_reward_keeps_its_settings(ws, trained, tmp_path):
    saved = trained[BACKENDS[0]]["reward"]
    out = tmp_path / "out"
    run = prt(*train_command(ws, BACKENDS[0], out, ["--resume-adapter-file", saved, "--lora-r", "2"]), check=False)
    assert run.returncode == 2
    assert run.stderr.strip() == (f"prt train: error: --lora-r 2: the reward in {saved} has rank 4, and a run that "
                                  "starts from it keeps its settings; drop the setting")
    assert not out.exists()


@pytest.mark.parametrize("case", ["not an artifact", "sft"])
def test_what_cannot_be_started_from_is_refused_in_one_line(ws, trained, tmp_path, case):
    saved = trained[BACKENDS[0]]["reward"]
    args, expected = {
        "not an artifact": (["--resume-adapter-file", ws["data"] / "train.jsonl"], f"{ws['data'] / 'train.jsonl'}: "
                            f"not a reward artifact (no prt_config.json in {ws['data']})"),
        "sft": (["--method", "sft", "--resume-adapter-file", saved], "--method sft cannot start a fine-tune"),
    }[case]
    run = prt(*train_command(ws, BACKENDS[0], tmp_path / "out", args), check=False)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("prt train: error: "), run.stderr
    assert expected in lines[0]
    assert not (tmp_path / "out").exists()


def test_an_output_directory_inside_the_saved_reward_is_refused(ws, trained):
    saved = trained[BACKENDS[0]]["reward"]
    run = prt(*train_command(ws, BACKENDS[0], saved / "next", ["--resume-adapter-file", saved]), check=False)
    assert run.returncode == 2 and "lies inside the input --resume-adapter-file" in run.stderr
    assert not (saved / "next").exists()
