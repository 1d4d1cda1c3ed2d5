"""Reward artifacts: atomic writing, reading back, and one clear ArtifactError per kind of damage."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from prtcore import ArtifactError, RewardArtifact, RewardConfig
from prtcore.artifacts import (
    CONFIG_NAME, FORMAT, FORMAT_VERSION, REWARD_WEIGHTS, ArtifactWriter, check_safetensors, read_json,
    save_numpy_tensors,
)

TENSORS = {"head.weight": np.arange(12, dtype=np.float32).reshape(3, 4) / 7}


def _meta(config=None, **extra):
    config = config or RewardConfig(kind="linear", lam=1.0, entropy_coeff=0.0)
    meta = {"reward": config.to_dict(), "vocab_size": 3, "weights": [REWARD_WEIGHTS],
            "source": {"path": None, "model_type": "toy", "hidden_size": 4, "vocab_size": 3}}
    meta.update(extra)
    return meta


def _write(path: Path, tensors=TENSORS, **meta_extra) -> Path:
    with ArtifactWriter(path) as w:
        save_numpy_tensors(w.dir / REWARD_WEIGHTS, tensors)
        w.commit(_meta(**meta_extra))
    return path


def _leftovers(parent: Path, name: str):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def _edit_meta(path: Path, **changes):
    meta = json.loads((path / CONFIG_NAME).read_text())
    meta.update(changes)
    (path / CONFIG_NAME).write_text(json.dumps(meta))


def test_write_and_read_back(tmp_path):
    path = _write(tmp_path / "reward")
    art = RewardArtifact.open(path)
    assert art.kind == "linear" and art.vocab_size == 3
    assert art.config == RewardConfig(kind="linear", lam=1.0, entropy_coeff=0.0)
    assert art.meta["format"] == FORMAT and art.meta["format_version"] == FORMAT_VERSION
    assert art.source["model_type"] == "toy"
    assert not art.has_tokenizer
    np.testing.assert_array_equal(art.tensors()["head.weight"], TENSORS["head.weight"])
    assert _leftovers(tmp_path, "reward") == []


def test_transformer_and_twin_configs_survive_the_round_trip(tmp_path):
    for i, config in enumerate([RewardConfig(kind="transformer", d_model=16, num_heads=2, num_layers=1, ffn_dim=8),
                                RewardConfig(kind="twin", lora={"rank": 2, "keys": ["q_proj"]})]):
        path = tmp_path / f"r{i}"
        with ArtifactWriter(path) as w:
            save_numpy_tensors(w.dir / REWARD_WEIGHTS, TENSORS)
            meta = _meta(config)
            if config.kind == "twin":  # a LoRA twin is read from its adapter in PEFT's layout
                (w.dir / "adapter_config.json").write_text(json.dumps({"r": 2, "target_modules": ["q_proj"]}))
                save_numpy_tensors(w.dir / "adapter_model.safetensors", {"lora_A.weight": np.zeros((2, 4), np.float32)})
                meta["weights"] = [REWARD_WEIGHTS, "adapter_config.json", "adapter_model.safetensors"]
            w.commit(meta)
        assert RewardArtifact.open(path).config == config


def test_copy_tokenizer(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "tokenizer.json").write_text("{}")
    (src / "weights.bin").write_text("not copied")
    with ArtifactWriter(tmp_path / "out") as w:
        save_numpy_tensors(w.dir / REWARD_WEIGHTS, TENSORS)
        w.copy_tokenizer(src)
        w.commit(_meta())
    art = RewardArtifact.open(tmp_path / "out")
    assert art.has_tokenizer and not (tmp_path / "out" / "weights.bin").exists()


def test_commit_replaces_an_existing_artifact(tmp_path):
    path = _write(tmp_path / "reward")
    new = {"head.weight": np.ones((3, 4), np.float32)}
    _write(path, tensors=new)
    np.testing.assert_array_equal(RewardArtifact.open(path).tensors()["head.weight"], new["head.weight"])
    assert _leftovers(tmp_path, "reward") == []


def test_exception_inside_writer_leaves_existing_artifact_untouched(tmp_path):
    path = _write(tmp_path / "reward")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(RuntimeError, match="boom"):
        with ArtifactWriter(path) as w:
            save_numpy_tensors(w.dir / REWARD_WEIGHTS, {"head.weight": np.zeros((3, 4), np.float32)})
            (w.dir / "half-written").write_text("x")
            raise RuntimeError("boom")
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert _leftovers(tmp_path, "reward") == []
    RewardArtifact.open(path)


def test_exception_inside_writer_creates_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with ArtifactWriter(tmp_path / "new"):
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ failures
def _error(path) -> str:
    with pytest.raises(ArtifactError) as e:
        RewardArtifact.open(path)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_directory(tmp_path):
    msg = _error(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in msg and "not found" in msg


def test_file_instead_of_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    assert "directory not found" in _error(tmp_path / "f")


def test_missing_config(tmp_path):
    path = _write(tmp_path / "reward")
    (path / CONFIG_NAME).unlink()
    msg = _error(path)
    assert str(path / CONFIG_NAME) in msg and "not found" in msg


def test_invalid_json_shows_line_and_column(tmp_path):
    path = _write(tmp_path / "reward")
    (path / CONFIG_NAME).write_text('{\n  "format": "prtcore.reward",\n  "vocab_size": 3,,\n}\n')
    msg = _error(path)
    assert f"{path / CONFIG_NAME}:3:" in msg and "invalid JSON" in msg


def test_non_utf8_and_non_object_config(tmp_path):
    path = _write(tmp_path / "reward")
    (path / CONFIG_NAME).write_bytes(b'{"format": "\xff"}')
    assert "not UTF-8" in _error(path)
    (path / CONFIG_NAME).write_text("[1, 2]")
    assert "expected a JSON object, found list" in _error(path)


def test_wrong_format(tmp_path):
    path = _write(tmp_path / "reward")
    _edit_meta(path, format="peft.adapter")
    msg = _error(path)
    assert str(path / CONFIG_NAME) in msg and "'format'" in msg and "'peft.adapter'" in msg and FORMAT in msg


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_wrong_format_version(tmp_path, version):
    path = _write(tmp_path / "reward")
    _edit_meta(path, format_version=version)
    msg = _error(path)
    assert str(path / CONFIG_NAME) in msg and "format_version" in msg and repr(version) in msg


@pytest.mark.parametrize("field, value", [("reward", "linear"), ("vocab_size", "3"), ("weights", "reward.safetensors"),
                                          ("source", None)])
def test_wrongly_typed_required_field(tmp_path, field, value):
    path = _write(tmp_path / "reward")
    _edit_meta(path, **{field: value})
    msg = _error(path)
    assert str(path / CONFIG_NAME) in msg and repr(field) in msg


@pytest.mark.parametrize("reward, needle", [({"kind": "lstm"}, "RewardConfig.kind='lstm'"),
                                            ({"kind": "linear", "bogus": 1}, "unknown field 'bogus'"),
                                            ({"kind": "twin", "lora": {"rank": 0}}, "LoRAConfig.rank=0"),
                                            ({"kind": "twin", "lora": {"rnak": 4}}, "unknown field 'rnak'")])
def test_invalid_reward_settings(tmp_path, reward, needle):
    path = _write(tmp_path / "reward")
    _edit_meta(path, reward=reward)
    msg = _error(path)
    assert str(path / CONFIG_NAME) in msg and needle in msg


def test_truncated_safetensors(tmp_path):
    path = _write(tmp_path / "reward")
    weights = path / REWARD_WEIGHTS
    data = weights.read_bytes()
    for cut in (len(data) - 1, len(data) - 20, 20, 4, 0):
        weights.write_bytes(data[:cut])
        msg = _error(path)
        assert str(weights) in msg and ("truncated" in msg or "corrupt" in msg), (cut, msg)
    weights.write_bytes(data[:-1])
    assert "truncated" in _error(path)


def test_trailing_garbage_in_safetensors(tmp_path):
    path = _write(tmp_path / "reward")
    weights = path / REWARD_WEIGHTS
    weights.write_bytes(weights.read_bytes() + b"\0" * 8)
    assert str(weights) in _error(path)


def _safetensors(header: bytes, body: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + body


@pytest.mark.parametrize("blob", [
    _safetensors(b"{not json"),
    _safetensors(b"\xff\xfe\x00junk"),
    _safetensors(b"[1, 2, 3]"),
    _safetensors(b'{"w": {"dtype": "F32", "shape": [1]}}', b"\0" * 4),
    _safetensors(b'{"w": [0, 4]}', b"\0" * 4),
    _safetensors(b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}}', b"\0" * 4),
    _safetensors(b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]}}', b"\0" * 4),
    _safetensors(b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": null}}', b"\0" * 4),
    struct.pack("<Q", 10**12) + b"{}",
], ids=["not-json", "not-utf8", "list", "no-offsets", "entry-not-dict", "three-offsets", "string-offsets",
        "null-offsets", "huge-header-length"])
def test_corrupt_safetensors_header(tmp_path, blob):
    path = _write(tmp_path / "reward")
    weights = path / REWARD_WEIGHTS
    weights.write_bytes(blob)
    msg = _error(path)
    assert str(weights) in msg and "corrupt" in msg, msg
    with pytest.raises(ArtifactError):
        check_safetensors(weights)


def test_missing_weights_file(tmp_path):
    path = _write(tmp_path / "reward")
    (path / REWARD_WEIGHTS).unlink()
    msg = _error(path)
    assert str(path / REWARD_WEIGHTS) in msg and "not found" in msg
    _edit_meta(path, weights=["adapter_config.json"])
    msg = _error(path)
    assert "adapter_config.json" in msg and "missing" in msg


@pytest.mark.parametrize("name", ["../x.safetensors", "../reward/../x.safetensors", "sub/../../x.safetensors",
                                  "/etc/passwd", "ABSOLUTE", ".", "", 7])
def test_weights_entry_escaping_the_directory_is_refused(tmp_path, name):
    path = _write(tmp_path / "reward")
    save_numpy_tensors(tmp_path / "x.safetensors", TENSORS)  # a valid file outside: must still be refused
    if name == "ABSOLUTE":
        name = str((tmp_path / "x.safetensors").resolve())
    _edit_meta(path, weights=[REWARD_WEIGHTS, name])
    msg = _error(path)
    assert str(path / CONFIG_NAME) in msg and repr(name) in msg
    if isinstance(name, str) and name not in ("", "."):
        assert "outside the artifact directory" in msg


def test_symlink_escaping_the_directory_is_refused(tmp_path):
    path = _write(tmp_path / "reward")
    save_numpy_tensors(tmp_path / "x.safetensors", TENSORS)
    try:
        os.symlink(tmp_path / "x.safetensors", path / "link.safetensors")
    except OSError:
        pytest.skip("no symlinks here")
    _edit_meta(path, weights=["link.safetensors"])
    assert "outside the artifact directory" in _error(path)


def test_subdirectory_weights_are_allowed(tmp_path):
    path = _write(tmp_path / "reward")
    (path / "sub").mkdir()
    save_numpy_tensors(path / "sub" / "w.safetensors", TENSORS)
    _edit_meta(path, weights=["sub/w.safetensors", "./reward.safetensors"])
    art = RewardArtifact.open(path)
    assert art.tensors("sub/w.safetensors")["head.weight"].shape == (3, 4)
    with pytest.raises(ArtifactError, match="outside"):
        art.tensors("../x.safetensors")


def test_read_json_names_file(tmp_path):
    with pytest.raises(ArtifactError, match=r"things\.json: my file not found"):
        read_json(tmp_path / "things.json", "my file")
