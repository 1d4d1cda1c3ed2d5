"""`prt data drivelm` conversion on the invented fixture: rows, images, categories, splits, atomic writes, errors."""

from __future__ import annotations

import os
import re
import stat

import pytest

from prtcore.data import parse_split
from prtcore.apps.drivelm import convert as convert_module
from prtcore.apps.drivelm.convert import convert, split_scenes
from prtcore.apps.drivelm.schema import CAMERAS
from prtcore.errors import ConfigError, DataError

from .conftest import (C1, C2, C3, COLORS, FRAME, GRAPH_A, IMPORTANT_A, IMPORTANT_Q, SCENE, annotation, image_paths,
                       read_rows, scenes, write_dataset)

ID = f"{SCENE}_{FRAME}"


def test_multi_image_rows(raw_file, tmp_path):
    out = tmp_path / "out"
    summary = convert(raw_file, out, ratios=(1, 0, 0))
    assert sorted(p.name for p in out.iterdir()) == ["drivelm.json", "train.jsonl"]  # empty splits get no file
    rows = read_rows(out / "train.jsonl")
    # ids count over perception (2) + prediction (2) + planning (3) + behavior (1), in that order
    assert [r["id"] for r in rows] == [f"{ID}_{i}" for i in range(8)]
    assert [r["category"] for r in rows] == ["perception"] * 2 + ["prediction"] * 2 + ["planning"] * 3 + ["behavior"]
    first = rows[0]
    # the images in the official camera order, relative to out/ (the fixture's "../nuscenes/..." is relative to
    # the annotation's directory tmp/drivelm, so the files lie in tmp/nuscenes)
    assert first["images"] == ["../nuscenes/" + p.split("../nuscenes/")[1] for p in image_paths(0).values()]
    assert [p.split("/")[3] for p in first["images"]] == list(CAMERAS)
    assert all((out / p).is_file() for p in first["images"])
    assert first["messages"] == [{"role": "user", "content": IMPORTANT_Q}, {"role": "assistant", "content": IMPORTANT_A}]
    assert (first["scene"], first["frame"], first["index"], first["eval_tag"]) == (SCENE, FRAME, 0, None)
    # object tags verbatim, in order of first appearance (question, then answer)
    assert first["tags"] == [C1, C2, C3]
    assert rows[1]["tags"] == [C1]
    assert rows[3]["messages"][1]["content"] == GRAPH_A and rows[3]["tags"] == [C2, C1, C3]
    assert rows[6]["tags"] == []
    assert summary["rows"] == {"train": 8, "valid": 0, "test": 0}
    # prtcore's own jsonl loader reads the rows as chat data
    assert parse_split(out / "train.jsonl")[0] == "chat"


def test_categories_keep_the_official_ids(raw_file, tmp_path):
    convert(raw_file, tmp_path / "out", ratios=(1, 0, 0), categories=("planning", "behavior"))
    rows = read_rows(tmp_path / "out" / "train.jsonl")
    assert [r["id"] for r in rows] == [f"{ID}_{i}" for i in (4, 5, 6, 7)]


def test_mosaic_one_image_per_frame(tmp_path, monkeypatch):
    source = write_dataset(tmp_path, scenes(1, frames_per_scene=2))
    calls = []
    original = convert_module.write_mosaic
    monkeypatch.setattr(convert_module, "write_mosaic", lambda *a, **k: calls.append(a[1]) or original(*a, **k))
    out = tmp_path / "out"
    convert(source, out, mode="mosaic", ratios=(1, 0, 0), tile=(4, 3), image_format="png")
    rows = read_rows(out / "train.jsonl")
    assert len(rows) == 16 and len(calls) == 2  # 8 QAs per frame, one mosaic per frame
    assert {r["images"][0] for r in rows[:8]} == {"images/s00_f00x0.png"}
    assert {r["images"][0] for r in rows[8:]} == {"images/s00_f00x1.png"}
    from PIL import Image

    with Image.open(out / "images" / "s00_f00x0.png") as image:
        assert image.size == (12, 6)  # 3 tiles of 4 × 2 tiles of 3
        layout = [["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"], ["CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"]]
        for row, cameras in enumerate(layout):
            for col, cam in enumerate(cameras):
                assert image.getpixel((col * 4 + 2, row * 3 + 1)) == COLORS[cam], cam


def test_scene_split(tmp_path):
    # 10 scenes at 0.6/0.2/0.2: cuts at round(6.0) = 6 and round(8.0) = 8 → 6, 2 and 2 scenes
    source = write_dataset(tmp_path, scenes(10))
    summary = convert(source, tmp_path / "a", ratios=(0.6, 0.2, 0.2), seed=3)
    assert [len(summary["scenes"][s]) for s in ("train", "valid", "test")] == [6, 2, 2]
    assert summary["rows"] == {"train": 48, "valid": 16, "test": 16}  # 8 QAs per scene
    for split in ("train", "valid", "test"):
        assert {r["scene"] for r in read_rows(tmp_path / "a" / f"{split}.jsonl")} == set(summary["scenes"][split])
    # same seed, same files; another seed, another assignment (for at least one of seeds 4..8)
    convert(source, tmp_path / "b", ratios=(0.6, 0.2, 0.2), seed=3)
    for split in ("train", "valid", "test"):
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (tmp_path / "b" / f"{split}.jsonl").read_bytes()
    names = [f"s{i:02d}" for i in range(10)]
    assert any(split_scenes(names, (0.6, 0.2, 0.2), s) != split_scenes(names, (0.6, 0.2, 0.2), 3) for s in range(4, 9))


def test_split_rounding():
    # 5 scenes at 0.5/0.5/0: cuts at floor(2.5 + 0.5) = 3 and round(5.0) = 5 → 3, 2, 0
    counts = list(split_scenes(["a", "b", "c", "d", "e"], (0.5, 0.5, 0.0), 0).values())
    assert [counts.count(s) for s in ("train", "valid", "test")] == [3, 2, 0]


# ------------------------------------------------------------------------------------------------ atomic writes
def test_existing_output_is_kept_without_overwrite(raw_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"out: already exists \(use --overwrite to replace it\)"):
        convert(raw_file, out)
    assert (out / "keep.txt").read_text() == "mine"
    convert(raw_file, out, ratios=(1, 0, 0), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["drivelm.json", "train.jsonl"]


def test_a_failure_leaves_nothing_behind(tmp_path):
    data = scenes(2)
    source = write_dataset(tmp_path, data)
    # the second scene's CAM_BACK image is not an image: the mosaic of frame 2 fails after frame 1 was written
    bad = source.parent / data["s01"]["key_frames"]["f01x0"]["image_paths"]["CAM_BACK"]
    bad.write_bytes(b"not a png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    # (frame number 10 in the fixture: CAM_BACK is 1000000000000000 + 10·10 + 3)
    image = re.escape(f"{tmp_path}/nuscenes/samples/CAM_BACK/fake-log__CAM_BACK__1000000000000103.png")
    with pytest.raises(DataError, match=rf"^{re.escape(str(source))}: QA s01_f01x0_0: image CAM_BACK '{image}' "
                                        r"cannot be read \(not an image PIL knows\)"):
        convert(source, out, mode="mosaic", overwrite=True, image_format="png")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drivelm", "nuscenes", "out"]  # no .partial left


def test_overwrite_never_deletes_the_input(raw_file, tmp_path, monkeypatch):
    # raw_file is tmp/drivelm/annotations.json, its images in tmp/nuscenes
    with pytest.raises(ConfigError, match=r"holds the input file"):
        convert(raw_file, raw_file.parent, overwrite=True)
    with pytest.raises(ConfigError, match=r"holds the input file"):
        convert(raw_file, tmp_path, overwrite=True)
    with pytest.raises(ConfigError, match=r"holds the image root"):
        convert(raw_file, tmp_path / "nuscenes", overwrite=True, image_root=tmp_path / "nuscenes" / "x")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(ConfigError, match=r"holds the working directory"):
        convert(raw_file, ".", overwrite=True)
    assert raw_file.is_file() and (tmp_path / "nuscenes").is_dir() and (tmp_path / "work").is_dir()


def test_output_directory_permissions_follow_the_umask(raw_file, tmp_path):
    convert(raw_file, tmp_path / "out", ratios=(1, 0, 0))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777 & ~umask


# ------------------------------------------------------------------------------------------------ images
def test_missing_image_names_the_qa_and_path(raw_file, tmp_path):
    cam_back = raw_file.parent / image_paths(0)["CAM_BACK"]
    cam_back.unlink()
    with pytest.raises(DataError, match=rf"QA {ID}_0: image CAM_BACK '../nuscenes/samples/CAM_BACK/"
                                        rf"fake-log__CAM_BACK__1000000000000003.png' not found"):
        convert(raw_file, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_skip_missing_images_counts_frames(tmp_path):
    data = scenes(3)
    source = write_dataset(tmp_path, data)
    (source.parent / data["s01"]["key_frames"]["f01x0"]["image_paths"]["CAM_FRONT"]).unlink()
    summary = convert(source, tmp_path / "out", ratios=(1, 0, 0), skip_missing=True)
    assert summary["skipped_frames"] == 1
    assert {r["scene"] for r in read_rows(tmp_path / "out" / "train.jsonl")} == {"s00", "s02"}


def test_image_root(tmp_path):
    source = write_dataset(tmp_path, annotation(), images=False)
    from .conftest import write_images

    write_images(annotation(), tmp_path / "elsewhere" / "x")  # "../nuscenes/..." from elsewhere/x
    assert not (tmp_path / "elsewhere" / "x").exists()  # the root itself need not exist
    convert(source, tmp_path / "out", ratios=(1, 0, 0), image_root=tmp_path / "elsewhere" / "x")
    row = read_rows(tmp_path / "out" / "train.jsonl")[0]
    assert row["images"][0] == "../elsewhere/nuscenes/samples/CAM_FRONT/fake-log__CAM_FRONT__1000000000000000.png"


# ------------------------------------------------------------------------------------------------ malformed files
def mutate(path: str, value):
    """A change to the fixture: set the value at a '/'-separated path (None deletes the key)."""
    def apply(data):
        *parents, last = path.split("/")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is None:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return data
    return apply


F = f"{SCENE}/key_frames/{FRAME}"
WHERE = f"scene '{SCENE}' frame '{FRAME}'"
MALFORMED = {
    "top level list": (lambda d: [d], r"expected a non-empty JSON object of scenes, found list"),
    "no key_frames": (mutate(f"{SCENE}/key_frames", None), rf"scene '{SCENE}': field 'key_frames' is missing"),
    "key_frames a list": (mutate(f"{SCENE}/key_frames", []), rf"scene '{SCENE}': field 'key_frames' must be an object"),
    "no behavior": (mutate(f"{F}/QA/behavior", None), rf"{WHERE}: field 'QA.behavior' is missing"),
    "unknown category": (mutate(f"{F}/QA/planing", []), rf"{WHERE}: field 'QA' has unknown category 'planing'"),
    "Q not a string": (mutate(f"{F}/QA/planning/1/Q", 7), rf"{WHERE}: field 'QA.planning\[1\].Q' must be a string, found 7"),
    "A missing": (mutate(f"{F}/QA/perception/0/A", None), rf"{WHERE}: field 'QA.perception\[0\].A' must be a string, found None"),
    "QA not an object": (mutate(f"{F}/QA/behavior/0", "hi"), rf"{WHERE}: field 'QA.behavior\[0\]' must be an object, found string"),
    "bad tag": (mutate(f"{F}/QA/behavior/0/tag", [5]), rf"{WHERE}: field 'QA.behavior\[0\].tag' must be a list of integers 0-3, found \[5\]"),
    "camera missing": (mutate(f"{F}/image_paths/CAM_BACK", None), rf"{WHERE}: field 'image_paths.CAM_BACK' must be a non-empty string, found None"),
    "camera null": (mutate(f"{F}/image_paths/CAM_BACK_LEFT", 0), r"field 'image_paths.CAM_BACK_LEFT' must be a non-empty string, found 0"),
    "unsafe token": (lambda d: {"../x": d[SCENE]}, r"scene '../x' frame '.*': scene token '../x' must be letters, digits"),
    "empty": (lambda d: {}, r"expected a non-empty JSON object of scenes, found object"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_annotation(tmp_path, case):
    change, message = MALFORMED[case]
    source = write_dataset(tmp_path, change(annotation()), images=False)
    with pytest.raises(DataError, match=rf"^{re.escape(str(source))}: .*{message}"):
        convert(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_invalid_json_names_line_and_column(tmp_path):
    source = tmp_path / "bad.json"
    source.write_text('{"a": {\n  "key_frames": ,\n}}')
    with pytest.raises(DataError, match=rf"^{re.escape(str(source))}:2:17: invalid JSON"):
        convert(source, tmp_path / "out")


@pytest.mark.parametrize("kwargs,message", [
    ({"ratios": (0.5, 0.5, 0.5)}, r"--split 0.5,0.5,0.5: expected three ratios"),
    ({"ratios": (1.2, -0.2, 0.0)}, r"--split 1.2,-0.2,0.0: expected three ratios"),
    ({"categories": ("planing",)}, r"--categories planing: expected some of"),
    ({"mode": "grid"}, r"--mode 'grid': expected multi or mosaic"),
])
def test_bad_options(raw_file, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        convert(raw_file, tmp_path / "out", **kwargs)
