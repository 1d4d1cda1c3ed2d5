"""transformers habits on the torch backend: tokenizer outputs with return_tensors="pt", quiet loading, and the
README's examples of PRTTrainer (with callbacks), PRTLogitsProcessor and the transformers conventions, run as
written. The backend-neutral habits are tested on every backend in tests/core/test_hf_conventions.py."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from prtcore import PRTForCausalLM
from prtcore.quiet import QUIET_ENVIRONMENT, quiet_loading

README = Path(__file__).resolve().parents[2] / "README.md"
PROMPTS = ["The capital of", "Hello", "Question: What is the capital of Avalon? Answer:"]


@pytest.fixture(scope="module")
def model(target_dir):
    return PRTForCausalLM.from_pretrained(target_dir, backend="torch")


@pytest.mark.parametrize("side", ["left", "right"])
def test_tokenizer_output_gives_a_long_tensor(model, target_dir, side):
    tok = AutoTokenizer.from_pretrained(target_dir, padding_side=side)
    inputs = tok(PROMPTS, return_tensors="pt", padding=True)
    out = model.generate(**inputs, max_new_tokens=5)
    width = inputs["input_ids"].shape[1]
    assert isinstance(out, torch.Tensor) and out.dtype == torch.long and out.shape == (len(PROMPTS), width + 5)
    assert torch.equal(out[:, :width], inputs["input_ids"])
    for row, prompt in zip(out[:, width:].tolist(), PROMPTS):
        assert row == [step.token for step in model.stream_steps(prompt, max_tokens=5)]


def test_loading_is_quiet_unless_asked(target_dir, capfd, monkeypatch):
    for name in QUIET_ENVIRONMENT:  # a `prt` command run in this process (other tests) sets them for good
        monkeypatch.delenv(name, raising=False)
    hf_logging.enable_progress_bar()
    level = hf_logging.get_verbosity()
    PRTForCausalLM.from_pretrained(target_dir, backend="torch")
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled() and hf_logging.get_verbosity() == level  # restored
    PRTForCausalLM.from_pretrained(target_dir, backend="torch", verbose=True)
    assert "Loading weights" in capfd.readouterr().err


def test_quiet_loading_hides_future_warnings_and_log_lines(monkeypatch):
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    level = hf_logging.get_verbosity()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_loading():
            assert hf_logging.get_verbosity() == hf_logging.ERROR
            warnings.warn("hidden", FutureWarning)
        with quiet_loading(verbose=True):
            warnings.warn("shown", FutureWarning)
    assert [str(w.message) for w in seen] == ["shown"]
    assert hf_logging.get_verbosity() == level


def test_the_users_environment_decides(monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    hf_logging.enable_progress_bar()
    level = hf_logging.get_verbosity()
    with quiet_loading():
        assert hf_logging.get_verbosity() == level and hf_logging.is_progress_bar_enabled()


# ---------------------------------------------------------------------------------------------- the README
def readme_blocks(heading: str) -> list[str]:
    """The ```python blocks of the README section `heading` (up to the next heading of its level or above)."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n### {heading}\n")
    end = re.search(r"\n#{2,3} ", text[start + 1:])
    section = text[start: start + 1 + end.start()] if end else text[start:]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture
def workdir(tmp_path, monkeypatch, source_dir, target_dir):
    """The README's layout: models/old-base, models/new-base (same tokenizer), data/my-task."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "old-base").symlink_to(source_dir)
    (tmp_path / "models" / "new-base").symlink_to(target_dir)
    data = tmp_path / "data" / "my-task"
    data.mkdir(parents=True)
    names = ["Avalon", "Corvia", "Mira", "Dunmere", "Brightwater"]
    rows = [{"prompt": f"Question: What is the capital of {a}? Answer:", "completion": f" Answer: {b}."}
            for a in names for b in names]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:20]))
    (data / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[20:]))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_examples_run(workdir, capsys):
    (trainer_code,) = readme_blocks("Training with the transformers Trainer (PRTTrainer)")
    trained = {}
    exec(trainer_code, trained)
    printed = capsys.readouterr().out
    assert re.search(r"^step 10: loss \d+\.\d{3}, accuracy \d\.\d\d$", printed, flags=re.M), printed
    assert trained["trainer"].state.best_model_checkpoint is not None  # the callbacks' evaluation ran
    assert (workdir / "rewards" / "my-task" / "prt_config.json").is_file()

    (processor_code,) = readme_blocks("Using a reward inside transformers' generate (LogitsProcessor)")
    used = {}
    exec(processor_code, used)
    prompts = ["Question: What is the capital of Avalon? Answer:", "Question: Where is Mira?"]
    assert capsys.readouterr().out == f"{used['gen'].generate_batch(prompts, max_tokens=16)}\n"

    (conventions_code,) = readme_blocks("transformers conventions")
    shown = {}
    exec(conventions_code, shown)
    out, inputs, tok, model = shown["out"], shown["inputs"], shown["tok"], shown["model"]
    width = inputs["input_ids"].shape[1]
    assert capsys.readouterr().out.endswith(f"{tok.batch_decode(out[:, width:], skip_special_tokens=True)}\n")
    for row, prompt in zip(out[:, width:].tolist(), ["Question: Where is Mira?", "Hello"]):
        tokens = [step.token for step in model.stream_steps(prompt, max_tokens=32)]
        assert row[:len(tokens)] == tokens
    assert shown["logits"].shape[:2] == (1, len(tok("Hello")["input_ids"]))
