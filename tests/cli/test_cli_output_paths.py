"""Output files are checked before the work and written atomically; a reader that leaves early is no error.

- `prt eval --output` and `prt explain --html/--json`: a directory, or a place no file can be written, is one
  line before any model loads; missing parent directories are made; the file appears whole, with no temporary
  file left beside it.
- `prt CMD | head`: the command stops quietly (exit 141, nothing on stderr) when its stdout pipe closes.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import BACKENDS, PRT, env

from prtcore.cli.main import main

B = BACKENDS[0]


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_line_error(capsys, *argv) -> str:
    code, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def reward(ws, tmp_path_factory):
    """A linear reward on the tiny source, saved without training (explain needs one, not a good one)."""
    from prtcore.config import RewardConfig
    from prtcore.plugins import get_backend

    backend = get_backend(B)
    source = backend.load_base(ws["source"])
    path = tmp_path_factory.mktemp("reward") / "linear"
    backend.create_reward(RewardConfig(kind="linear"), source).save(path, source=source, vocab_size=source.vocab_size)
    return path


def leftovers(directory) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def bad_outputs(tmp_path) -> dict:
    """flag value -> what the one-line error says."""
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return {tmp_path: f"{tmp_path}: is a directory; give a file name",
            a_file / "out.json": f"{a_file / 'out.json'}: {a_file} is not a directory",
            a_file / "sub" / "out.json": f"{a_file / 'sub' / 'out.json'}: {a_file} is not a directory"}


def test_eval_output_is_checked_before_anything_loads(capsys, ws, tmp_path):
    # the model does not exist: an error about --output proves the check comes first
    for output, expected in bad_outputs(tmp_path).items():
        message = one_line_error(capsys, "eval", "--backend", B, "--model", tmp_path / "no-model", "--data", ws["data"],
                                 "--output", output)
        assert f"--output {expected}" in message, message


def test_explain_outputs_are_checked_before_anything_loads(capsys, ws, tmp_path):
    for flag in ("--html", "--json"):
        for output, expected in bad_outputs(tmp_path).items():
            message = one_line_error(capsys, "explain", "--backend", B, "--model", tmp_path / "no-model", "--reward",
                                     tmp_path / "no-reward", "--prompt", "x", "--continuation", " y", flag, output)
            assert f"{flag} {expected}" in message, message


def test_eval_writes_into_new_directories_and_replaces_a_file_whole(capsys, ws, tmp_path):
    output = tmp_path / "new" / "dirs" / "eval.json"
    args = ["eval", "--backend", B, "--model", ws["source"], "--data", ws["data"], "--split", "valid",
            "--max-examples", "2", "--no-generate", "--output", output]
    assert run(capsys, *args)[0] == 0
    assert json.loads(output.read_text())["model"] == str(ws["source"])
    output.write_text("old")
    assert run(capsys, *args)[0] == 0
    assert "base" in json.loads(output.read_text())["results"]
    assert leftovers(output.parent) == []


def test_explain_writes_html_and_json_into_new_directories(capsys, ws, reward, tmp_path):
    html, data = tmp_path / "pages" / "x.html", tmp_path / "more" / "x.json"
    code, err = run(capsys, "explain", "--backend", B, "--model", ws["source"], "--reward", reward, "--prompt",
                    "What is the capital of Mira?", "--continuation", " The capital", "--html", html, "--json", data)
    assert code == 0, err
    assert html.read_text().lstrip().lower().startswith("<!doctype html")
    assert json.loads(data.read_text())["tokens"]
    assert leftovers(html.parent) == leftovers(data.parent) == []


@pytest.mark.parametrize("argv", [["plugins"], ["env"], ["--help"]], ids=" ".join)
def test_a_closed_stdout_pipe_ends_the_command_quietly(argv):
    # the reader is gone before the command writes a byte: every write meets a broken pipe
    proc = subprocess.Popen([PRT, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141)
    assert err == ""


def test_generate_into_head_stops_quietly(ws):
    """`prt generate ... | head -c 10` through a real shell pipe: head leaves after 10 bytes."""
    command = (f"'{PRT}' generate --backend {B} --model '{ws['source']}' --compose base --prompt hi --max-tokens 200 "
               f"--temp 1 --seed 1 --ignore-chat-template | head -c 10; echo \" ${{PIPESTATUS[0]}}\" >&2")
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env(), timeout=120)
    status = proc.stderr.rsplit(" ", 1)[-1].strip()
    assert status in ("0", "141"), proc.stderr
    assert proc.stderr.strip() == status, proc.stderr  # nothing else: no traceback, no "Exception ignored"
