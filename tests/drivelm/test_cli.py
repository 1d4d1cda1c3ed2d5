"""`prt data drivelm` and `prt eval --task drivelm` from the command line: output, one-line errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


from prtcore.cli.main import main

from .conftest import FRAME, SCENE, read_rows

ID = f"{SCENE}_{FRAME}"


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def fail(capsys, *argv) -> str:
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_convert_then_evaluate(capsys, tagged_file, tmp_path):
    out = tmp_path / "data"
    code, stdout, err = run(capsys, "data", "drivelm", tagged_file, "--out", out, "--split", "1,0,0",
                            "--categories", "perception,prediction,planning,behavior")
    assert code == 0, err
    assert "train 8 QAs / 1 scenes, valid 0 QAs / 0 scenes, test 0 QAs / 0 scenes" in stdout
    rows = read_rows(out / "train.jsonl")
    predictions = tmp_path / "output.json"
    predictions.write_text(json.dumps([{"id": r["id"], "question": r["messages"][0]["content"],
                                        "answer": r["messages"][1]["content"]} for r in rows]))
    code, stdout, err = run(capsys, "eval", "--task", "drivelm", "--predictions", predictions, "--references",
                            out / "train.jsonl", "--output", tmp_path / "report.json")
    assert code == 0, err
    assert "GPT score" in stdout and "absent" in stdout
    assert "accuracy                 1.0000      3" in stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["counts"]["qa"] == 8 and report["chatgpt"] is None and report["final_score"] is None


def test_mosaic_flags(capsys, raw_file, tmp_path):
    code, _, err = run(capsys, "data", "drivelm", raw_file, "--out", tmp_path / "m", "--mode", "mosaic",
                       "--tile-size", "8x6", "--image-format", "png", "--split", "1,0,0")
    assert code == 0, err
    assert read_rows(tmp_path / "m" / "train.jsonl")[0]["images"] == [f"images/{ID}.png"]
    from PIL import Image

    with Image.open(tmp_path / "m" / "images" / f"{ID}.png") as image:
        assert image.size == (24, 12)


def test_one_line_errors(capsys, raw_file, tagged_file, tmp_path):
    missing = tmp_path / "nope.json"
    assert f"prt data: error: {missing}: DriveLM annotation file not found" == fail(capsys, "data", "drivelm", missing,
                                                                                    "--out", tmp_path / "o")
    assert "--split: 'a,b': expected three ratios" in fail(capsys, "data", "drivelm", raw_file, "--out", tmp_path / "o",
                                                           "--split", "a,b")
    assert "--split 0.5,0.5,0.5: expected three ratios" in fail(capsys, "data", "drivelm", raw_file, "--out",
                                                                tmp_path / "o", "--split", "0.5,0.5,0.5")
    assert "--categories: 'percepton': expected" in fail(capsys, "data", "drivelm", raw_file, "--out", tmp_path / "o",
                                                         "--categories", "percepton")
    assert "--tile-size: '8by6': expected WIDTHxHEIGHT" in fail(capsys, "data", "drivelm", raw_file, "--out",
                                                                tmp_path / "o", "--tile-size", "8by6")
    assert "required: DATASET" in fail(capsys, "data")
    (tmp_path / "exists").mkdir()
    assert "already exists (use --overwrite" in fail(capsys, "data", "drivelm", raw_file, "--out", tmp_path / "exists")
    # eval --task drivelm
    predictions = tmp_path / "p.json"
    predictions.write_text(json.dumps([{"id": f"{ID}_0", "answer": "x"}]))
    assert f"no answer for id '{ID}_1' (7 of 8" in fail(capsys, "eval", "--task", "drivelm", "--predictions",
                                                         predictions, "--references", tagged_file)
    assert "needs --predictions FILE and --references FILE" in fail(capsys, "eval", "--task", "drivelm")
    assert "--model, --reward and --data are not used" in fail(capsys, "eval", "--task", "drivelm", "--model", "m",
                                                               "--predictions", predictions, "--references", tagged_file)
    assert f"{tmp_path}: is a directory" in fail(capsys, "eval", "--task", "drivelm", "--predictions", tmp_path,
                                                 "--references", tagged_file)
    # the language-model eval still asks for its own flags
    assert "required: --model/--base, --data" in fail(capsys, "eval")
    assert "read by --task drivelm only" in fail(capsys, "eval", "--predictions", predictions)


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"s": {"key_frames": {"f": {"QA": {}}}}}')
    prt = Path(sys.executable).with_name("prt")
    proc = subprocess.run([str(prt), "data", "drivelm", str(bad), "--out", str(tmp_path / "o")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == f"prt data: error: {bad}: scene 's' frame 'f': field 'image_paths' is missing\n"
    assert not (tmp_path / "o").exists()
