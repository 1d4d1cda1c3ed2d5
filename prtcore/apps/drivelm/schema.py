"""The DriveLM-nuScenes annotation file, read and validated; every error names the file, the field and the value.

    {scene_token: {"scene_description": str,
                   "key_frames": {frame_token: {"key_object_infos": {...},
                                                "QA": {"perception": [QA], "prediction": [QA],
                                                       "planning": [QA], "behavior": [QA]},
                                                "image_paths": {CAM_FRONT: path, ... six cameras}}}}}
    QA = {"Q": str, "A": str, ...; "tag": [int] after the official extract_data.py}

A QA's id is "<scene>_<frame>_<i>", i counting over perception + prediction + planning + behavior of its frame,
as convert2llama.py and evaluation.py number them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ...artifacts import read_json_value
from ...errors import DataError

# the official camera order (the order of image_paths in the annotation files and of convert2llama's "image")
CAMERAS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
CATEGORIES = ("perception", "prediction", "planning", "behavior")
# an object reference "<c1,CAM_BACK,1088.3,497.5>" (CARLA also writes "<c1,CAM_FRONT>")
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")
CTAG = re.compile(r"<c\d+,CAM_[A-Z_]+(?:,[-+]?\d+(?:\.\d+)?,[-+]?\d+(?:\.\d+)?)?>")


@dataclass(frozen=True)
class QA:
    scene: str
    frame: str
    index: int
    category: str
    question: str
    answer: str
    tag: tuple[int, ...] | None  # the official evaluation tag, None where the file has none

    @property
    def id(self) -> str:
        return f"{self.scene}_{self.frame}_{self.index}"


@dataclass(frozen=True)
class Frame:
    scene: str
    frame: str
    image_paths: tuple[str, ...]  # in CAMERAS order, as written in the file
    qas: tuple[QA, ...]           # all categories, in the official concatenation order


def object_tags(*texts: str) -> list[str]:
    """The c-tags in `texts`, verbatim, in order of first appearance."""
    seen: dict[str, None] = {}
    for text in texts:
        for tag in CTAG.findall(text):
            seen.setdefault(tag, None)
    return list(seen)


def read_json(path, what: str = "DriveLM file"):
    """The parsed JSON value of `path`; errors (DataError) name the file (and line and column for invalid JSON)."""
    return read_json_value(path, what, DataError)


def load_annotations(path, *, images: bool = True) -> list[Frame]:
    """Every key frame of a DriveLM-nuScenes annotation file (train, or test_eval.json-style with tags);
    `images=False` does not read image_paths (the evaluation needs only the QA)."""
    path = Path(path)
    data = read_json(path, "DriveLM annotation file")
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a non-empty JSON object of scenes, found {_kind(data)}")
    frames = []
    for scene, scene_data in data.items():
        where = f"{path}: scene {scene!r}"
        key_frames = _field(scene_data, "key_frames", dict, where)
        for frame, frame_data in key_frames.items():
            frames.append(_frame(scene, frame, frame_data, f"{where} frame {frame!r}", images))
    if not frames:
        raise DataError(f"{path}: no key frames in any scene")
    return frames


def _frame(scene: str, frame: str, data, where: str, read_images: bool) -> Frame:
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected an object, found {_kind(data)}")
    for token, name in ((scene, "scene"), (frame, "frame")):
        if not TOKEN.fullmatch(token):  # tokens name files (the mosaic images): no '/', '..' or spaces
            raise DataError(f"{where}: {name} token {token[:80]!r} must be letters, digits, '-' or '_'")
    paths = _image_paths(data, where) if read_images else ()
    qa_lists = _field(data, "QA", dict, where)
    unknown = sorted(set(qa_lists) - set(CATEGORIES))
    if unknown:
        raise DataError(f"{where}: field 'QA' has unknown category {unknown[0]!r} (expected {', '.join(CATEGORIES)})")
    qas = []
    for category in CATEGORIES:
        items = _field(qa_lists, category, list, where, prefix="QA.")
        for position, item in enumerate(items):
            qas.append(_qa(scene, frame, len(qas), category, item, where, f"QA.{category}[{position}]"))
    return Frame(scene, frame, paths, tuple(qas))


def _image_paths(data: dict, where: str) -> tuple[str, ...]:
    images = _field(data, "image_paths", dict, where)
    extra = sorted(set(images) - set(CAMERAS))
    if extra:
        raise DataError(f"{where}: field 'image_paths' has unknown camera {extra[0]!r} (expected {', '.join(CAMERAS)})")
    for camera in CAMERAS:
        value = images.get(camera)
        if not isinstance(value, str) or not value:
            raise DataError(f"{where}: field 'image_paths.{camera}' must be a non-empty string, found {value!r}")
    return tuple(images[camera] for camera in CAMERAS)


def _qa(scene, frame, index, category, item, where: str, field: str) -> QA:
    if not isinstance(item, dict):
        raise DataError(f"{where}: field '{field}' must be an object, found {_kind(item)}")
    for key in ("Q", "A"):
        if not isinstance(item.get(key), str):
            raise DataError(f"{where}: field '{field}.{key}' must be a string, found {item.get(key)!r}"[:300])
    tag = item.get("tag")
    if tag is not None:
        if not isinstance(tag, list) or not all(type(t) is int and 0 <= t <= 3 for t in tag):
            raise DataError(f"{where}: field '{field}.tag' must be a list of integers 0-3, found {tag!r}"[:300])
        tag = tuple(tag)
    return QA(scene, frame, index, category, item["Q"], item["A"], tag)


def _field(obj, key: str, kind: type, where: str, prefix: str = ""):
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected an object, found {_kind(obj)}")
    if key not in obj:
        raise DataError(f"{where}: field '{prefix}{key}' is missing")
    value = obj[key]
    if not isinstance(value, kind):
        expected = "a list" if kind is list else "an object"
        raise DataError(f"{where}: field '{prefix}{key}' must be {expected}, found {_kind(value)}")
    return value


def _kind(value) -> str:
    return "null" if value is None else {dict: "object", list: "list", str: "string"}.get(type(value), type(value).__name__)
