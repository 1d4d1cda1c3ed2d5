"""An INVENTED DriveLM-nuScenes fixture in the official schema (docs/drivelm.md; no real DriveLM data), with
small generated PNGs standing in for the six camera images."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from prtcore.apps.drivelm.schema import CAMERAS

SCENE, FRAME = "a" * 32, "b" * 32
C1, C2, C3 = "<c1,CAM_FRONT,800.0,450.0>", "<c2,CAM_FRONT_LEFT,300.5,200.0>", "<c3,CAM_BACK,1200.0,520.0>"
# one solid colour per camera, so a mosaic's tiles can be told apart
COLORS = {"CAM_FRONT": (255, 0, 0), "CAM_FRONT_LEFT": (0, 255, 0), "CAM_FRONT_RIGHT": (0, 0, 255),
          "CAM_BACK": (255, 255, 0), "CAM_BACK_LEFT": (0, 255, 255), "CAM_BACK_RIGHT": (255, 0, 255)}

IMPORTANT_Q = ("What are the important objects in the current scene? Those objects will be considered for the future "
               "reasoning and driving decision.")
IMPORTANT_A = (f"There is a red hatchback to the front, a red light to the front left, and a white van to the back of "
               f"the ego vehicle. The IDs of these objects are {C1}, {C2}, and {C3}.")
MOVING_Q = f"What is the moving status of object {C1}?"
SIGN_Q = f"Is {C3} a traffic sign or a road barrier?"
GRAPH_Q = ("What object should the ego vehicle notice first when the ego vehicle is getting to the next possible "
           "location? What is the state of the object that is first noticed by the ego vehicle and what action should "
           "the ego vehicle take? What object should the ego vehicle notice second when the ego vehicle is getting to "
           "the next possible location? What is the state of the object perceived by the ego vehicle as second and "
           "what action should the ego vehicle take? What object should the ego vehicle notice third? What is the "
           "state of the object perceived by the ego vehicle as third and what action should the ego vehicle take?")
GRAPH_A = (f"Firstly notice that {C2}. The object is a traffic sign, so the ego vehicle should stop. Secondly notice "
           f"that {C1}. The object is going ahead, so the ego vehicle should keep a safe distance. Thirdly notice that "
           f"{C3}. The object is stationary, so the ego vehicle should remain stopped.")
PLAN_Q = f"What actions could the ego vehicle take based on {C2}? Why take this action and what's the probability?"
COLLISION_Q = f"What actions taken by the ego vehicle can lead to a collision with {C1}?"
SAFE_Q = "In this scenario, what are safe actions to take for the ego vehicle?"
BEHAVIOR_Q = "Predict the behavior of the ego vehicle."
OPTIONS = " Please select the correct answer from the following options: A. {} B. {} C. {} D. {}"


def qa(q: str, a: str, tag=None) -> dict:
    item = {"Q": q, "A": a, "C": None, "con_up": None, "con_down": None, "cluster": None, "layer": None}
    if tag is not None:
        item["tag"] = tag
    return item


def image_paths(number: int) -> dict:
    return {cam: f"../nuscenes/samples/{cam}/fake-log__{cam}__{1000000000000000 + 10 * number + i}.png"
            for i, cam in enumerate(CAMERAS)}


def frame(qas: dict, number: int = 0) -> dict:
    return {"key_object_infos": {
                C1: {"Category": "Vehicle", "Status": "Moving", "Visual_description": "Red hatchback.",
                     "2d_bbox": [760.0, 410.0, 850.0, 490.0]},
                C2: {"Category": "Traffic element", "Status": None, "Visual_description": "Red light.",
                     "2d_bbox": [290.0, 180.0, 311.0, 220.0]},
                C3: {"Category": "Vehicle", "Status": "Stationary", "Visual_description": "White van.",
                     "2d_bbox": [1150.0, 470.0, 1260.0, 570.0]}},
            "QA": qas, "image_paths": image_paths(number)}


def raw_qas() -> dict:
    """The train-format QA of docs/drivelm.md §7 (no tags)."""
    return {
        "perception": [qa(IMPORTANT_Q, IMPORTANT_A), qa(MOVING_Q, "Going ahead.")],
        "prediction": [qa(SIGN_Q, "No."), qa(GRAPH_Q, GRAPH_A)],
        "planning": [qa(PLAN_Q, "The action is to remain stopped. The reason is to obey the red light, which has a high probability."),
                     qa(COLLISION_Q, "Accelerating forward can lead to a collision."),
                     qa(SAFE_Q, "Remain stopped, brake gently.")],
        "behavior": [qa(BEHAVIOR_Q, "The ego vehicle is going straight. The ego vehicle is not moving.")],
    }


def tagged_qas() -> dict:
    """The same frame as the official extract_data.py + convert_data.py leave it (test_eval.json style): tags, the
    graph QA before the yes/no QA, and the moving-status and behavior questions as 4-option MCQs (answer "C").
    Ids: 0 importance [2], 1 moving status [0], 2 graph [3], 3 yes/no [0], 4-6 planning [1], 7 behavior [0]."""
    raw = raw_qas()
    moving = OPTIONS.format("Turn left.", "Stopped.", "Going ahead.", "Back up.")
    behavior = OPTIONS.format("The ego vehicle is steering to the left. The ego vehicle is driving fast.",
                              "The ego vehicle is going straight. The ego vehicle is driving slowly.",
                              "The ego vehicle is going straight. The ego vehicle is not moving.",
                              "The ego vehicle is steering to the right. The ego vehicle is not moving.")
    return {
        "perception": [qa(IMPORTANT_Q, IMPORTANT_A, [2]), qa(MOVING_Q + moving, "C", [0])],
        "prediction": [qa(GRAPH_Q, GRAPH_A, [3]), qa(SIGN_Q, "No.", [0])],
        "planning": [dict(item, tag=[1]) for item in raw["planning"]],
        "behavior": [qa(BEHAVIOR_Q + behavior, "C", [0])],
    }


def annotation(qas: dict | None = None) -> dict:
    return {SCENE: {"scene_description": "The ego vehicle waits at a red light, then drives straight through the junction.",
                    "key_frames": {FRAME: frame(copy.deepcopy(qas or raw_qas()))}}}


def scenes(count: int, frames_per_scene: int = 1) -> dict:
    """`count` scenes ("s00"...), each frame holding the raw QA list."""
    return {f"s{i:02d}": {"scene_description": "Invented.",
                          "key_frames": {f"f{i:02d}x{j}": frame(raw_qas(), i * 10 + j) for j in range(frames_per_scene)}}
            for i in range(count)}


def write_images(data: dict, root: Path, size=(16, 9)) -> None:
    """A small solid-colour PNG for every image path of `data`, the paths resolved against `root`."""
    from PIL import Image

    for scene in data.values():
        for frame_data in scene["key_frames"].values():
            for cam, rel in frame_data["image_paths"].items():
                path = Path(os.path.normpath(root / rel))
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", size, COLORS[cam]).save(path, "PNG")


def write_dataset(tmp_path: Path, data: dict, images: bool = True) -> Path:
    """tmp/drivelm/annotations.json, its images under tmp/nuscenes/ (the paths start with ../nuscenes)."""
    source = tmp_path / "drivelm" / "annotations.json"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(json.dumps(data, indent=1), encoding="utf-8")
    if images:
        write_images(data, source.parent)
    return source


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def raw_file(tmp_path) -> Path:
    return write_dataset(tmp_path, annotation())


@pytest.fixture
def tagged_file(tmp_path) -> Path:
    return write_dataset(tmp_path, annotation(tagged_qas()))
