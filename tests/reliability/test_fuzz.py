"""Bad input, fuzzed (hypothesis, bounded): the data loader, the artifact loader and `prt` argument lists. Every
case ends in a PRTError subclass with a one-line message (or a clean result), never a crash inside a backend."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prtcore import RewardArtifact, RewardConfig
from prtcore.artifacts import CONFIG_NAME, REWARD_WEIGHTS, ArtifactWriter, save_numpy_tensors
from prtcore.data import check_data_dir, load_split
from prtcore.errors import ArtifactError, DataError, PRTError

FUZZ = settings(max_examples=int(os.environ.get("PRT_FUZZ_EXAMPLES", 60)), deadline=None, suppress_health_check=list(HealthCheck),
                derandomize=not os.environ.get("PRT_FUZZ_EXAMPLES"))
COUNTS: dict[str, int] = {}


def counted(name):
    COUNTS[name] = COUNTS.get(name, 0) + 1


# ------------------------------------------------------------------------------------------------ data
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)
good_rows = st.sampled_from([{"text": "hello world"}, {"prompt": "What is x?", "completion": "x."},
                             {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}])
row_like = st.fixed_dictionaries({}, optional={"text": json_values, "prompt": json_values, "completion": json_values,
                                               "messages": json_values | st.lists(st.dictionaries(
                                                   st.sampled_from(["role", "content"]), json_values), max_size=3),
                                               "tools": json_values})


@st.composite
def bad_files(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "truncated", "types", "huge", "utf8", "mixed", "chat"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    lines = [json.dumps(draw(good_rows)).encode() for _ in range(draw(st.integers(1, 4)))]
    if kind == "truncated":
        blob = b"\n".join(lines)
        return blob[: draw(st.integers(0, max(0, len(blob) - 1)))]
    if kind == "chat":  # valid roles, contents of any type
        messages = draw(st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool"])},
                                                       optional={"content": json_values, "tool_calls": json_values}),
                                 min_size=1, max_size=4))
        row = {"messages": messages}
        if draw(st.booleans()):
            row["tools"] = draw(st.lists(json_values, max_size=2))
        return json.dumps(row).encode()
    if kind == "types":
        return b"\n".join(lines + [json.dumps(draw(row_like)).encode()])
    if kind == "huge":
        return b"\n".join(lines + [json.dumps({"text": "word " * draw(st.integers(50_000, 300_000))}).encode()])
    if kind == "utf8":
        i = draw(st.integers(0, len(lines) - 1))
        pos = draw(st.integers(0, len(lines[i])))
        lines[i] = lines[i][:pos] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + lines[i][pos:]
        return b"\n".join(lines)
    return b"\n".join(lines + [json.dumps(draw(json_values)).encode()])


def _tokenizer(rws):
    from prtcore.plugins import get_backend

    from .conftest import BACKENDS

    return get_backend(BACKENDS[0]).load_tokenizer(rws["source"])


@FUZZ
@given(blob=bad_files(), mask_prompt=st.booleans())
def test_data_loader_fuzz(rws, blob, mask_prompt):
    counted("data")
    tokenizer = _tokenizer(rws) if "tok" not in COUNTS else COUNTS["tok"]
    COUNTS["tok"] = tokenizer
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "train.jsonl").write_bytes(blob)
        (d / "valid.jsonl").write_bytes(b'{"prompt": "a", "completion": "b"}\n')
        try:
            check_data_dir(d, mask_prompt=mask_prompt)
        except DataError as e:
            assert "\n" not in str(e) and str(d / "train.jsonl") in str(e), str(e)
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the truncation warning
                examples = load_split(d / "train.jsonl", tokenizer, max_seq_length=64, mask_prompt=mask_prompt)
        except DataError as e:  # a row whose content the template cannot render, etc.
            assert "\n" not in str(e)
            return
        assert examples and all(len(e.ids) <= 64 for e in examples)


# ------------------------------------------------------------------------------------------------ artifacts
def _artifact(path: Path) -> Path:
    config = RewardConfig(kind="linear", lam=1.0, entropy_coeff=0.0)
    with ArtifactWriter(path) as w:
        save_numpy_tensors(w.dir / REWARD_WEIGHTS, {"head.weight": np.ones((3, 4), np.float32)})
        w.commit({"reward": config.to_dict(), "vocab_size": 3, "weights": [REWARD_WEIGHTS],
                  "source": {"path": None, "model_type": "toy", "hidden_size": 4, "vocab_size": 3}})
    return path


@st.composite
def damage(draw):
    kind = draw(st.sampled_from(["truncate", "flip", "header", "version", "format", "field", "escape", "config_bytes"]))
    if kind in ("truncate", "flip", "header"):
        return kind, draw(st.integers(0, 10_000)), draw(st.binary(min_size=1, max_size=16))
    if kind == "version":
        return kind, draw(json_values), None
    if kind == "format":
        return kind, draw(st.text(max_size=20)), None
    if kind == "field":
        return kind, draw(st.sampled_from(["reward", "vocab_size", "weights", "source"])), draw(json_values)
    if kind == "escape":
        name = draw(st.sampled_from(["../x.safetensors", "/etc/passwd", "a/../../b", "..", ".", "", "./../reward",
                                     "sub/../../../etc/hosts", "\x00", "a" * 300]) | st.text(max_size=30))
        return kind, name, None
    return kind, draw(st.binary(max_size=200)), None


@FUZZ
@given(case=damage())
def test_artifact_loader_fuzz(case):
    counted("artifact")
    kind, a, b = case
    with tempfile.TemporaryDirectory() as d:
        path = _artifact(Path(d) / "reward")
        weights, config = path / REWARD_WEIGHTS, path / CONFIG_NAME
        meta = json.loads(config.read_text())
        raw = weights.read_bytes()
        if kind == "truncate":
            weights.write_bytes(raw[: a % len(raw)])
        elif kind == "flip":
            pos = a % len(raw)
            weights.write_bytes(raw[:pos] + b + raw[pos + len(b):])
        elif kind == "header":
            weights.write_bytes(b[:8].ljust(8, b"\x00") + raw[8:])
        elif kind == "version":
            meta["format_version"] = a
        elif kind == "format":
            meta["format"] = a
        elif kind == "field":
            meta[a] = b
        elif kind == "escape":
            meta["weights"] = [a]
        else:
            config.write_bytes(a)
        if kind in ("version", "format", "field", "escape"):
            config.write_text(json.dumps(meta))
        try:
            art = RewardArtifact.open(path)
            for name in art.meta["weights"]:
                target = art.file(name)
                assert Path(d) / "reward" in [target, *target.parents]
                if target.suffix == ".safetensors":
                    art.tensors(name)
        except ArtifactError as e:
            assert "\n" not in str(e), str(e)


@pytest.mark.parametrize("name", ["../outside.safetensors", "/etc/hostname", "sub/../../outside.safetensors"])
def test_artifact_names_cannot_escape_even_when_the_file_exists(tmp_path, name):
    path = _artifact(tmp_path / "reward")
    shutil.copy(path / REWARD_WEIGHTS, tmp_path / "outside.safetensors")
    meta = json.loads((path / CONFIG_NAME).read_text())
    meta["weights"] = [name]
    (path / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="outside the artifact directory"):
        RewardArtifact.open(path)


def test_symlink_out_of_the_artifact_is_refused(tmp_path):
    path = _artifact(tmp_path / "reward")
    shutil.copy(path / REWARD_WEIGHTS, tmp_path / "outside.safetensors")
    os.symlink(tmp_path / "outside.safetensors", path / "link.safetensors")
    meta = json.loads((path / CONFIG_NAME).read_text())
    meta["weights"] = ["link.safetensors"]
    (path / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="outside the artifact directory"):
        RewardArtifact.open(path)


# ------------------------------------------------------------------------------------------------ CLI
def _options(command: str) -> list[str]:
    from prtcore.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[command]
    return sorted(o for a in sub._actions for o in a.option_strings if o not in ("-h", "--help", "--debug"))


OPTIONS = {c: _options(c) for c in ("train", "generate", "eval")}
values = st.sampled_from(["0", "-1", "1e999", "nan", "inf", "abc", "", "-", "mlx", "torch", "numpy", "1.5", "x:y",
                          "r:nan", "99999999999999999999", "--", "lora", "twin", "/nonexistent/dir", ".", "\x00",
                          "é", "4"]) | st.text(max_size=12)


SKELETONS = {  # the required arguments, so that the random ones reach the commands' own checks
    "train": ["--model", "no-model", "--data", "no-data", "--output-dir", "out"],
    "generate": ["--model", "no-model", "--prompt", "hi"],
    "eval": ["--model", "no-model", "--data", "no-data"],
}


@st.composite
def argvs(draw):
    command = draw(st.sampled_from(sorted(OPTIONS)))
    argv = [command] + (SKELETONS[command] if draw(st.booleans()) else [])
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.booleans()):
            argv.append(draw(st.sampled_from(OPTIONS[command])))
        argv.append(draw(values))
    return argv


@FUZZ
@given(argv=argvs())
def test_cli_argument_fuzz(argv, tmp_path_factory, capsys, monkeypatch):
    counted("cli")
    monkeypatch.chdir(tmp_path_factory.mktemp("argv"))
    monkeypatch.setenv("PRT_QUIET", "1")
    from prtcore.cli.main import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert code in (0, 2), f"{argv}: exit {code}: {err}"
    if code == 2:
        assert len(err.strip().splitlines()) == 1, f"{argv}: {err}"
        assert "internal error" not in err, f"{argv}: {err}"


def test_fuzz_case_counts():
    print(f"\nfuzz cases: {({k: v for k, v in COUNTS.items() if k != 'tok'})}")


# ------------------------------------------------------------------------------------------------ regressions
# what the fuzzing found (each crashed with a non-PRTError or a multi-line message before it was fixed)
def test_found_chat_row_the_template_cannot_render(rws, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [{"role": "system"}]}\n')
    with pytest.raises(DataError, match=r"train\.jsonl:2: the tokenizer's chat template cannot render"):
        load_split(path, _tokenizer(rws))


@pytest.mark.parametrize("name", ["\x00", "a" * 300, "a\n.safetensors", "x" * 5000 + ".bin"])
def test_found_artifact_file_names_that_crashed(tmp_path, name):
    path = _artifact(tmp_path / "reward")
    meta = json.loads((path / CONFIG_NAME).read_text())
    meta["weights"] = [name]
    (path / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError) as info:
        RewardArtifact.open(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("argv", [["train", "\x1e0"], ["generate", "--model", "a\nb"], ["eval", "--top-k", "\u2028"]])
def test_found_arguments_with_line_breaks_still_give_one_line(argv, capsys, tmp_path, monkeypatch):
    from prtcore.cli.main import main

    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
