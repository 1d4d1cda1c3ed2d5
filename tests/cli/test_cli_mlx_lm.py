"""mlx-lm's habits as real `prt` subprocesses: train's flags and YAML keys mean what they mean in mlx-lm (LoRA
twin), settings no part of the run uses are refused, validation before training, --train/--test, --report-to,
help with defaults, the closing "wrote" line; generate's closing statistics; chat's commands."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
from pathlib import Path

import pytest
from conftest import BACKENDS, PRT, PROMPT, TIMEOUT, env, prt, run_all, train_command

LORA = ["--fine-tune-type", "lora", "--lora-r", "4", "--num-layers", "2"]  # mlx-lm's flags, no --reward
SHORT = ["--iters", "4", "--batch-size", "4", "--learning-rate", "1e-2", "--steps-per-report", "2",
         "--steps-per-eval", "2", "--val-batches", "2", "--seed", "1"]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def help_entries(text: str) -> dict[str, str]:
    """Option -> its help text, from argparse's --help output."""
    entries: dict[str, str] = {}
    current = None
    for line in text.split("options:", 1)[1].splitlines():
        match = re.match(r"^  (-[^ ].*?)(?:  +(.*))?$", line)
        if match:
            current = match.group(1).split(",")[0].split()[0]
            entries[current] = match.group(2) or ""
        elif current and line.startswith("      "):
            entries[current] += " " + line.strip()
    return entries


def test_every_train_flag_has_help_and_shows_its_default():
    entries = help_entries(prt("train", "--help").stdout)
    assert {"--train", "--test", "--test-batches", "--resume-adapter-file", "--report-to", "--fine-tune-type",
            "--num-layers", "--lora-r", "--output-dir"} <= set(entries)
    for flag, text in entries.items():
        if flag == "-h":
            continue
        assert text.strip() and "(default:" in text, f"{flag}: {text!r}"
    assert "(default: 8)" in entries["--lora-r"] and "(default: 500)" in entries["--test-batches"]


@pytest.fixture(scope="module")
def lora_runs(ws, tmp_path_factory):
    """Per backend: `prt train` with mlx-lm's LoRA flags, --train --test; then --test alone on its output."""
    root = tmp_path_factory.mktemp("mlx-lm")
    outs = {b: root / b for b in BACKENDS}
    trained = run_all([train_command(ws, b, outs[b], [*LORA, *SHORT, "--train", "--test", "--test-batches", "1"])
                       for b in BACKENDS])
    tested = run_all([["train", "--backend", b, "--model", ws["source"], "--data", ws["data"], "--adapter-path",
                       outs[b], "--test", "--test-batches", "1", "--batch-size", "4"] for b in BACKENDS])
    return {b: {"out": outs[b], "train": t, "test": s} for b, t, s in zip(BACKENDS, trained, tested)}


def test_mlx_lm_lora_flags_train_a_lora_twin(lora_runs, backend):
    config = json.loads((lora_runs[backend]["out"] / "prt_config.json").read_text())["reward"]
    assert config["kind"] == "twin" and config["fine_tune_type"] == "lora"
    assert (config["lora"]["rank"], config["lora"]["num_layers"]) == (4, 2)


def test_validation_before_training(lora_runs, backend):
    run, out = lora_runs[backend]["train"], lora_runs[backend]["out"]
    records = metrics(out)
    assert "val_loss" in records[0] and records[0]["iteration"] == 0  # before the first training report
    assert [r["iteration"] for r in records if "val_loss" in r] == [0, 2, 4]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["initial_val_loss"] == records[0]["val_loss"] and summary["best_val_step"] in (2, 4)
    assert summary["best_val_loss"] < summary["initial_val_loss"]
    assert re.search(r"^step 0  val loss \d+\.\d{4}  \(before training\)$", run.stderr, re.M)


def test_validation_before_training_agrees_across_backends(lora_runs):
    if len(BACKENDS) < 2:
        pytest.skip("one backend installed")
    first = [metrics(lora_runs[b]["out"])[0]["val_loss"] for b in BACKENDS]
    assert first[0] == pytest.approx(first[1], rel=1e-4)  # a new LoRA twin is the source: the same model


def test_train_and_test_report_the_test_loss_and_what_was_written(lora_runs, backend):
    run, out = lora_runs[backend]["train"], lora_runs[backend]["out"]
    loss, ppl = map(float, re.search(r"^Test loss (\d+\.\d{3}), Test ppl (\d+\.\d{3})\.$", run.stderr, re.M).groups())
    result = json.loads(run.stdout)["test"]
    assert round(result["test_loss"], 3) == loss and ppl == pytest.approx(math.exp(result["test_loss"]), abs=2e-3)
    assert result["examples"] == 4  # --test-batches 1 of --batch-size 4 rows
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"prt train: wrote reward artifact {out};")
    for path in (out / "best", out / "metrics.jsonl", out / "summary.json", out / "loss_curve.png"):
        assert str(path) in last and path.exists()
    # --test without --train evaluates what the directory holds: the same loss, nothing trained
    alone = lora_runs[backend]["test"]
    assert json.loads(alone.stdout)["test"] == pytest.approx(result)
    assert "step " not in alone.stderr and "Test loss" in alone.stderr


def test_mlx_lm_yaml_keys_make_a_lora_twin(ws, backend, tmp_path):
    config = tmp_path / "lora.yaml"
    config.write_text(f"model: {ws['source']}\ntrain: true\nfine_tune_type: lora\nnum_layers: 1\n"
                      "lora_parameters:\n  rank: 4\n  scale: 10.0\n  dropout: 0.0\n")
    out = json.loads(prt("train", "--backend", backend, "--config", config, "--dry-run").stdout)
    assert out["reward"]["kind"] == "twin" and out["reward"]["lora"]["rank"] == 4 and out["trainable"] > 0


def fails(*args) -> str:
    run = prt(*args, check=False)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prt train: error: "), run.stderr
    return lines[0]


REFUSED = {
    "lora on linear": (["--reward", "linear", "--lora-r", "4"], ["--lora-r", "'linear'", "--reward twin"]),
    "fine-tune type on transformer": (["--reward", "transformer", "--fine-tune-type", "lora"],
                                      ["--fine-tune-type", "'transformer'", "--reward twin"]),
    "transformer setting on linear": (["--reward-d-model", "64"], ["--reward-d-model", "--reward transformer"]),
    "lora on full": (["--fine-tune-type", "full", "--lora-r", "4"], ["--lora-r", "--fine-tune-type lora"]),
    "layers on full": (["--fine-tune-type", "full", "--num-layers", "2"], ["--num-layers", "every layer"]),
    "dora": (["--fine-tune-type", "dora"], ["--fine-tune-type dora", "not implemented", "--fine-tune-type lora"]),
    "unknown report target": (["--report-to", "nowhere"], ["--report-to", "wandb", "tensorboard"]),
    "sft with a reward setting": (["--method", "sft", "--lambda", "2"], ["--lambda", "--method sft"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_setting_the_run_would_not_use_is_refused_in_one_line(ws, tmp_path, case):
    args, expected = REFUSED[case]
    message = fails(*train_command(ws, BACKENDS[0], tmp_path / "out", args))
    for text in expected:
        assert text in message, message
    assert not (tmp_path / "out").exists()


def test_a_yaml_lora_setting_on_a_linear_reward_names_its_line(ws, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("reward: linear\nlora_parameters:\n  rank: 4\n")
    message = fails(*train_command(ws, BACKENDS[0], tmp_path / "out", ["--config", config]))
    assert f"{config}:3: rank" in message and "--reward twin" in message


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_report_to_wandb_without_wandb_names_the_package(ws, tmp_path):
    message = fails(*train_command(ws, BACKENDS[0], tmp_path / "out", ["--report-to", "wandb"]))
    assert "wandb package is not installed" in message and "pip install wandb" in message


def test_report_to_tensorboard_logs_every_record(ws, backend, tmp_path):
    pytest.importorskip("tensorboard.summary.writer.event_file_writer")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "out"
    run = prt(*train_command(ws, backend, out, [*SHORT, "--report-to", "tensorboard"]))
    assert f"tensorboard logs {out / 'tensorboard'}" in run.stderr
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    logged = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in ("train_loss", "val_loss")}
    recorded = metrics(out)
    for tag in logged:
        want = [(r["iteration"], r[tag]) for r in recorded if tag in r]
        assert [s for s, _ in logged[tag]] == [s for s, _ in want]
        assert [v for _, v in logged[tag]] == pytest.approx([v for _, v in want], rel=1e-6)


def test_without_matplotlib_train_says_the_curve_was_not_written(ws, tmp_path):
    hidden = tmp_path / "hide"
    (hidden / "matplotlib").mkdir(parents=True)
    (hidden / "matplotlib" / "__init__.py").write_text("raise ImportError('matplotlib hidden by the test')\n")
    out = tmp_path / "out"
    run = subprocess.run([PRT, *map(str, train_command(ws, BACKENDS[0], out, SHORT))], capture_output=True,
                         text=True, timeout=TIMEOUT, env={**env(), "PYTHONPATH": str(hidden)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "no loss curve (matplotlib is not installed: pip install matplotlib)" in run.stderr.splitlines()[-1]
    assert not (out / "loss_curve.png").exists()
    assert "matplotlib" in json.loads((out / "summary.json").read_text())["loss_curve_missing"]


def test_generate_ends_with_mlx_lm_statistics(ws, trained, backend):
    run = prt("generate", "--backend", backend, "--model", ws["target"], "--reward", trained[backend]["reward"],
              "--prompt", PROMPT, "--max-tokens", "6", "--ignore-chat-template")
    assert run.stdout.strip()
    tail = run.stderr.strip().splitlines()[-4:]
    assert tail[0] == "=========="
    prompt = re.fullmatch(r"Prompt: (\d+) tokens, (\d+\.\d{3}) tokens-per-sec", tail[1])
    generation = re.fullmatch(r"Generation: (\d+) tokens, (\d+\.\d{3}) tokens-per-sec", tail[2])
    peak = re.fullmatch(r"Peak memory: (\d+\.\d{3}) GB", tail[3])
    assert prompt and generation and peak, tail
    from transformers import AutoTokenizer

    assert int(prompt.group(1)) == len(AutoTokenizer.from_pretrained(str(ws["target"]))(PROMPT)["input_ids"])
    assert float(prompt.group(2)) > 0 and 1 <= int(generation.group(1)) <= 6
    assert float(peak.group(1)) > 0


def test_chat_handles_its_commands_itself(ws, trained, backend):
    run = prt("chat", "--backend", backend, "--model", ws["target"], "--reward", trained[backend]["reward"],
              "--max-tokens", "3", input="hello\n/help\n/reset\n/bogus\nwhat is the capital?\n/quit\nnot read\n")
    for command in ("/help", "/reset", "/quit"):
        assert re.search(rf"^{command} +\S", run.stderr, re.M), run.stderr
    assert "history cleared" in run.stderr and "unknown command /bogus" in run.stderr
    assert run.stdout.count("\n\n") == 2  # two replies: the commands never reached the model
