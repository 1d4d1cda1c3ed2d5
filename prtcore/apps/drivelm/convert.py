"""`prt data drivelm`: the official annotation JSON → DIR/{train,valid,test}.jsonl, split by scene.

One QA per line:

    {"id": "<scene>_<frame>_<i>", "scene": ..., "frame": ..., "index": i, "category": "perception|...",
     "images": [six paths in CAMERAS order, or one mosaic], "messages": [{"role": "user", "content": Q},
     {"role": "assistant", "content": A}], "tags": [c-tags of Q and A, verbatim], "eval_tag": [int] | null}

Image paths are relative to DIR. `eval_tag` is the official evaluation tag when the input has one (test_eval.json
and the v1.1 val file do; the raw train file does not). The whole DIR is written in a temporary sibling and moved
into place at the end: a failure leaves nothing behind and an existing DIR untouched.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
from pathlib import Path

from ...artifacts import replace_dir
from ...errors import ConfigError, DataError
from .mosaic import FORMATS, LAYOUT, write_mosaic
from .schema import CAMERAS, CATEGORIES, Frame, load_annotations, object_tags

SPLITS = ("train", "valid", "test")


def split_scenes(scenes, ratios, seed: int) -> dict[str, str]:
    """scene → split: the sorted scenes shuffled with `seed`, then cut at round(n·r_train) and round(n·(r_train +
    r_valid)) (halves round up)."""
    order = sorted(scenes)
    random.Random(seed).shuffle(order)
    n = len(order)
    cut1 = math.floor(n * ratios[0] + 0.5)
    cut2 = math.floor(n * (ratios[0] + ratios[1]) + 0.5)
    return {scene: SPLITS[0 if i < cut1 else 1 if i < cut2 else 2] for i, scene in enumerate(order)}


def check_ratios(ratios) -> tuple[float, float, float]:
    if len(ratios) != 3 or any(not (r >= 0) or math.isinf(r) for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise ConfigError(f"--split {','.join(map(str, ratios))}: expected three ratios train,valid,test >= 0 that sum to 1")
    return tuple(float(r) for r in ratios)


def convert(source, out, *, mode: str = "multi", categories=CATEGORIES, ratios=(0.8, 0.1, 0.1), seed: int = 0,
            image_root=None, skip_missing: bool = False, tile: tuple[int, int] = (800, 450), image_format: str = "jpg",
            overwrite: bool = False) -> dict:
    """Write the jsonl splits (and mosaics) of `source` into `out`; returns the summary also saved as
    out/drivelm.json."""
    if not str(out) or "\x00" in str(out):
        raise ConfigError(f"--out {str(out)!r}: expected a directory path")
    source, out = Path(source), Path(os.path.abspath(out))
    ratios = check_ratios(ratios)
    if mode not in ("multi", "mosaic"):
        raise ConfigError(f"--mode {mode!r}: expected multi or mosaic")
    bad = [c for c in categories if c not in CATEGORIES]
    if bad or not categories:
        raise ConfigError(f"--categories {','.join(categories)}: expected some of {', '.join(CATEGORIES)}")
    if image_format not in FORMATS:
        raise ConfigError(f"--image-format {image_format!r}: expected {' or '.join(FORMATS)}")
    if min(tile) < 1:
        raise ConfigError(f"--tile-size {tile[0]}x{tile[1]}: both sides must be >= 1")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: already exists (use --overwrite to replace it)")
    root = Path(image_root) if image_root is not None else source.parent
    for path, what in ((source, "the input file"), (root, "the image root"), (Path.cwd(), "the working directory")):
        inside = Path(os.path.normpath(os.path.abspath(path)))
        if inside == out or out in inside.parents:
            raise ConfigError(f"--out {out}: holds {what} ({inside}), which replacing it would delete")
    frames = [f for f in load_annotations(source) if any(q.category in categories for q in f.qas)]
    frames, skipped = _frames_with_images(frames, root, categories, skip_missing, source)
    split_of = split_scenes({f.scene for f in frames}, ratios, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would stay on DIR
    try:
        rows = {s: [] for s in SPLITS}
        for frame in frames:
            images = _frame_images(frame, source, root, out, staging, mode, tile, image_format, categories)
            for qa in frame.qas:
                if qa.category in categories:
                    rows[split_of[frame.scene]].append(_row(qa, images))
        for split, lines in rows.items():
            if lines:  # an empty split gets no file (prtcore's data loader refuses empty files)
                (staging / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
        summary = {"source": str(source), "mode": mode, "categories": list(categories), "ratios": list(ratios),
                   "seed": seed, "cameras": list(CAMERAS), "skipped_frames": skipped,
                   "rows": {s: len(r) for s, r in rows.items()},
                   "scenes": {s: sorted({r["scene"] for r in rows[s]}) for s in SPLITS}}
        if mode == "mosaic":
            summary.update(tile_size=list(tile), image_format=image_format, mosaic_layout=[list(r) for r in LAYOUT])
        (staging / "drivelm.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def resolve(root: Path, path: str) -> Path:
    """An annotation image path as an absolute path, '..' resolved lexically (the root need not exist)."""
    return Path(os.path.normpath(os.path.abspath(root / path)))


def _row(qa, images: list[str]) -> dict:
    return {"id": qa.id, "scene": qa.scene, "frame": qa.frame, "index": qa.index, "category": qa.category,
            "images": images,
            "messages": [{"role": "user", "content": qa.question}, {"role": "assistant", "content": qa.answer}],
            "tags": object_tags(qa.question, qa.answer), "eval_tag": list(qa.tag) if qa.tag is not None else None}


def _frames_with_images(frames: list[Frame], root: Path, categories, skip_missing: bool, source: Path):
    """The frames whose six images exist, and how many were skipped; a missing image is an error naming the
    first QA of the frame that uses it unless `skip_missing`."""
    kept, skipped = [], 0
    for frame in frames:
        missing = next(((c, p) for c, p in zip(CAMERAS, frame.image_paths) if not resolve(root, p).is_file()), None)
        if missing is None:
            kept.append(frame)
        elif skip_missing:
            skipped += 1
        else:
            qa = next(q for q in frame.qas if q.category in categories)
            raise DataError(f"{source}: QA {qa.id}: image {missing[0]} {missing[1]!r} not found (looked for "
                            f"{resolve(root, missing[1])}; --image-root sets the base, "
                            "--skip-missing-images skips the frame)")
    return kept, skipped


def _frame_images(frame: Frame, source: Path, root: Path, out: Path, staging: Path, mode: str, tile, image_format,
                  categories) -> list[str]:
    """The frame's image paths relative to `out`; in mosaic mode the stitched image is written once per frame."""
    if mode == "multi":
        return [os.path.relpath(resolve(root, p), out) for p in frame.image_paths]
    name = f"images/{frame.scene}_{frame.frame}.{image_format}"
    (staging / "images").mkdir(exist_ok=True)
    qa = next(q for q in frame.qas if q.category in categories)
    write_mosaic({c: resolve(root, p) for c, p in zip(CAMERAS, frame.image_paths)}, staging / name,
                 tile, image_format, f"{source}: QA {qa.id}")
    return [name]
