"""Every CLI error is one line naming the file and line, the flag or the value, with exit code 2.

Run in-process through `prtcore.cli.main.main` (fast: the data and the flags are checked before a model loads),
plus a few real subprocesses for the exit code, the single stderr line and --debug.
"""

from __future__ import annotations

import json

import pytest
from conftest import BACKENDS, prt, qa_rows, write_jsonl

from prtcore.cli.main import main
from prtcore.errors import DataError

B = BACKENDS[0]


def fail(capsys, *argv) -> str:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors (prtcore's parser makes them one line too)
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def data(tmp_path):
    """A valid data directory to break one file of."""
    d = tmp_path / "data"
    rows = qa_rows(6, seed=1)
    write_jsonl(d / "train.jsonl", rows[:4])
    write_jsonl(d / "valid.jsonl", rows[4:])
    return d


def train(ws, data, tmp_path, *extra):
    return ["train", "--backend", B, "--model", ws["source"], "--data", data, "--output-dir", tmp_path / "out", *extra]


GOOD = json.dumps({"prompt": "a", "completion": "b"})
BAD_DATA = {
    "invalid JSON": (f'{GOOD}\n{GOOD}\n{{"prompt": "a", "completion": \n', "train.jsonl:3: invalid JSON"),
    "missing key": (f'{GOOD}\n{{"prompt": "a"}}\n', "train.jsonl:2: no known format"),
    "mistyped key": (f'{GOOD}\n{{"prompt": 5, "completion": "b"}}\n', "train.jsonl:2: field 'prompt' must be a string, found int"),
    "not an object": (f'{GOOD}\n[1, 2]\n', "train.jsonl:2: expected a JSON object, found list"),
    "empty": ("", "train.jsonl: file is empty"),
    "blank lines only": ("\n  \n\n", "train.jsonl: file is empty"),
    "mixed formats": (f'{GOOD}\n{{"text": "hello"}}\n', "train.jsonl:2: format 'text' differs from the file's format 'completions'"),
    "bad chat role": ('{"messages": [{"role": "robot", "content": "hi"}]}\n', "train.jsonl:1: messages[0].role='robot'"),
    "messages not a list": ('{"messages": "hi"}\n', "train.jsonl:1: field 'messages' must be a non-empty list"),
    "tools not a list": ('{"messages": [{"role": "user", "content": "hi"}], "tools": {}}\n', "train.jsonl:1: field 'tools' must be a list"),
    "invalid UTF-8": (b'{"text": "\xff"}\n', "train.jsonl:1: invalid UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_malformed_training_data(capsys, ws, data, tmp_path, case):
    content, expected = BAD_DATA[case]
    target = data / "train.jsonl"
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    message = fail(capsys, *train(ws, data, tmp_path))
    assert message.startswith("prt train: error: ") and expected in message and str(target) in message
    assert not (tmp_path / "out").exists()  # nothing written, no model loaded


def test_missing_valid_and_data_dir_and_text_with_mask_prompt(capsys, ws, data, tmp_path):
    (data / "valid.jsonl").unlink()
    assert "valid.jsonl: missing" in fail(capsys, *train(ws, data, tmp_path))
    assert "data directory not found" in fail(capsys, *train(ws, tmp_path / "nope", tmp_path))
    write_jsonl(data / "valid.jsonl", [{"text": "x"}])
    write_jsonl(data / "train.jsonl", [{"text": "x"}])
    assert "--mask-prompt needs prompt/completion or chat data" in fail(capsys, *train(ws, data, tmp_path, "--mask-prompt"))


BAD_FLAGS = {
    ("--iters", "0"): "--iters 0: must be an integer > 0",
    ("--iters", "x"): "argument --iters: invalid int value: 'x'",
    ("--iters", "3", "--epochs", "2"): "not allowed with argument",
    ("--lambda", "-1"): "--lambda -1.0: must be a number > 0",
    ("--learning-rate", "0"): "--learning-rate 0.0: must be a number > 0",
    ("--lora-dropout", "1.5"): "--lora-dropout 1.5: must be a number in [0, 1)",
    ("--reward", "transformer", "--reward-d-model", "30", "--reward-heads", "4"): "--reward-d-model 30: must be divisible by num_heads=4",
    ("--reward", "mlp"): "argument --reward: invalid choice: 'mlp'",
    ("--backend", "nope"): "nope",
    ("--method", "sft", "--reward", "linear"): "--reward: a reward setting; --method sft",
    ("--resume", "--overwrite"): "--resume and --overwrite: choose one",
    ("--val-batches", "0"): "--val-batches 0: must be an integer > 0, or -1",
}


@pytest.mark.parametrize("flags", sorted(BAD_FLAGS), ids=" ".join)
def test_bad_train_flags(capsys, ws, data, tmp_path, flags):
    message = fail(capsys, *train(ws, data, tmp_path, *flags))
    assert BAD_FLAGS[flags] in message


def test_missing_required_flag(capsys, ws, data):
    assert "--output-dir is required" in fail(capsys, "train", "--backend", B, "--model", ws["source"], "--data", data)


@pytest.mark.skipif("torch" not in BACKENDS, reason="torch not installed")
def test_quantize_base_needs_a_backend_that_quantises(capsys, ws, data, tmp_path):
    message = fail(capsys, "train", "--backend", "torch", "--model", ws["source"], "--data", data, "--output-dir",
                   tmp_path / "o", "--quantize-base", "4")
    assert "--quantize-base 4" in message and "torch" in message


YAML_CASES = {
    "unknown": ("iters: 5\nbogus: 1\n", ":2: unknown setting 'bogus'"),
    "bad value": ("model: m\n\niters: -3\n", ":3: iters -3: must be an integer > 0"),
    "bad nested": ("lora_parameters:\n  rank: 4\n  scale: -1\n", ":3: scale -1: must be a number > 0"),
    "alpha": ("lora_parameters:\n  rank: 4\n  alpha: 16\n", ":1: lora_parameters has 'alpha' but no 'scale'"),
    "syntax": ("iters: 5\nmodel: [unclosed\n", ":3: invalid YAML"),
    "not a mapping": ("- 1\n- 2\n", ": expected a mapping of settings, found list"),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_bad_yaml_config_names_file_and_line(capsys, ws, data, tmp_path, case):
    content, expected = YAML_CASES[case]
    config = tmp_path / "run.yaml"
    config.write_text(content)
    message = fail(capsys, *train(ws, data, tmp_path, "--config", config))
    assert f"{config}{expected}" in message


def test_missing_config_file(capsys, ws, data, tmp_path):
    assert "config file not found" in fail(capsys, *train(ws, data, tmp_path, "--config", tmp_path / "none.yaml"))


GENERATE_CASES = {
    ("--temp", "-1"): "--temp -1.0: must be in [0.0, 100.0]",
    ("--top-p", "0"): "--top-p 0.0: must be in (0.0, 1.0]",
    ("--top-k", "-2"): "--top-k -2: must be in",
    ("--max-tokens", "-1"): "--max-tokens -1: must be >= 0",
    ("--max-kv-size", "0"): "--max-kv-size 0: must be >= 1",
    ("--compose", "eft"): "need --ft FINETUNED",
    ("--compose", "base", "--reward", "r"): "--reward is only used with --compose prt",
    ("--reward", "missing_reward_dir"): "missing_reward_dir: reward artifact directory not found",
    ("--reward", "r:-1"): "--reward r:-1: λ=-1 must be > 0",
}


@pytest.mark.parametrize("flags", sorted(GENERATE_CASES), ids=" ".join)
def test_bad_generate_flags(capsys, ws, tmp_path, monkeypatch, flags):
    monkeypatch.chdir(tmp_path)
    message = fail(capsys, "generate", "--backend", B, "--model", ws["source"], "--prompt", "hi", *flags)
    assert GENERATE_CASES[flags] in message


def test_bad_model_and_eval_and_explain_inputs(capsys, ws, trained, tmp_path):
    assert "no config.json" in fail(capsys, "generate", "--backend", B, "--model", tmp_path, "--compose", "base",
                                    "--prompt", "x")
    assert "test.jsonl: missing (--split test" in fail(capsys, "eval", "--backend", B, "--model", ws["source"],
                                                       "--data", tmp_path)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "completion": "b"}, {"text": "c"}])
    assert f"{bad}:2: format 'text' differs" in fail(capsys, "eval", "--backend", B, "--model", ws["source"],
                                                     "--data", bad)
    assert "--top 0: must be >= 1" in fail(capsys, "explain", "--backend", B, "--model", ws["source"], "--reward",
                                           trained[B]["reward"], "--prompt", "x", "--top", "0")
    assert "needs at least one --reward" in fail(capsys, "explain", "--backend", B, "--model", ws["source"],
                                                 "--prompt", "x")


def test_debug_shows_the_traceback(ws, tmp_path, capsys):
    with pytest.raises(DataError):
        main(["--debug", "train", "--backend", B, "--model", str(ws["source"]), "--data", str(tmp_path / "none"),
              "--output-dir", str(tmp_path / "o")])


def test_subprocess_error_is_one_line_with_exit_code_2(ws, tmp_path):
    d = tmp_path / "data"
    write_jsonl(d / "train.jsonl", qa_rows(3, 0))
    (d / "train.jsonl").write_text((d / "train.jsonl").read_text() + "{oops\n")
    write_jsonl(d / "valid.jsonl", qa_rows(2, 1))
    args = ["train", "--backend", B, "--model", ws["source"], "--data", d, "--output-dir", tmp_path / "o"]
    run = prt(*args, check=False)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip() == run.stderr.strip().splitlines()[0]
    assert f"{d / 'train.jsonl'}:4: invalid JSON" in run.stderr
    debug = prt("--debug", *args, check=False)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "DataError" in debug.stderr
