"""Image-text data: mlx-vlm style ("images" + "messages") and LLaVA style ("image" + "conversations") rows become
token ids with each image's placeholder expanded to its vision tokens, which are never loss targets; bad rows give
one-line errors naming file, line and field."""

import json

import pytest

from prtcore import get_backend
from prtcore.data import check_data_dir, load_split
from prtcore.errors import DataError
from vlm_testutil import IMAGE_SIZES, vision_tokens


@pytest.fixture(scope="module")
def base(vlm_dirs):
    return get_backend("torch").load_base(vlm_dirs["qwen2_vl"])


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_rows_of_both_styles_expand_images_and_mask_them(base, vlm_data):
    token = base.vision.image_token_id
    train = load_split(vlm_data / "train.jsonl", base.tokenizer, vision=base.vision)
    valid = load_split(vlm_data / "valid.jsonl", base.tokenizer, vision=base.vision)
    for i, ex in enumerate(train[:3] + valid):
        n = vision_tokens(*IMAGE_SIZES[i % 3])
        positions = [k for k, t in enumerate(ex.ids) if t == token]
        assert len(positions) == n and positions == list(range(positions[0], positions[0] + n))
        assert all(ex.mask[k] == 0 for k in positions)
        assert sum(ex.mask) == len(ex.ids) - n  # every other token is a target (no --mask-prompt)
        assert ex.images is not None and len(ex.images) == 1
    # the LLaVA row's "<image>" marker is where the placeholder goes: right after the user turn opens
    start = base.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    prefix = base.tokenizer.encode("<|im_start|>user\n")
    assert valid[0].ids[: len(prefix) + 1] == prefix + [start]


def test_mask_prompt_keeps_only_the_answer(base, vlm_data):
    ex = load_split(vlm_data / "train.jsonl", base.tokenizer, vision=base.vision, mask_prompt=True)[0]
    targets = [t for t, m in zip(ex.ids, ex.mask) if m]
    assert base.tokenizer.decode(targets).startswith("Brightwater")


def test_two_images_go_where_their_markers_are(base, vlm_root, images):
    path = write(vlm_root / "data" / "two.jsonl", [{"images": [str(images[0]), str(images[1])], "messages": [
        {"role": "user", "content": "A <image> and B <image>?"}, {"role": "assistant", "content": "B"}]}])
    ex = load_split(path, base.tokenizer, vision=base.vision)[0]
    text = base.tokenizer.decode(ex.ids)
    assert text.count("<|vision_start|>") == 2
    assert ex.ids.count(base.vision.image_token_id) == vision_tokens(*IMAGE_SIZES[0]) + vision_tokens(*IMAGE_SIZES[1])
    assert text.index("A ") < text.index("<|vision_start|>") < text.index(" and B ")


ROW = {"images": ["a.png"], "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
BAD_ROWS = [
    ({**ROW, "images": ["missing.png"]}, "field 'images[0]': image file"),
    ({**ROW, "images": "a.png"}, "field 'images' must be a list of path strings"),
    ({**ROW, "image": "a.png"}, "give either field 'images' or field 'image'"),
    ({"image": "a.png", "conversations": [{"from": "robot", "value": "x"}]}, "conversations[0].from must be one of"),
    ({"text": "hello", "image": "a.png"}, "images need chat rows"),
]


@pytest.mark.parametrize("row,message", BAD_ROWS, ids=[m.split()[0].strip("'") for _, m in BAD_ROWS])
def test_bad_rows_name_file_line_and_field(tmp_path, images, row, message):
    (tmp_path / "a.png").write_bytes(images[0].read_bytes())
    first = ROW if "messages" in row else {"image": "a.png", "conversations": [{"from": "human", "value": "Q"}]}
    if "text" in row:
        first = {"text": "fine"}
    write(tmp_path / "train.jsonl", [first, row])
    write(tmp_path / "valid.jsonl", [first])
    with pytest.raises(DataError) as info:
        check_data_dir(tmp_path)
    text = str(info.value)
    assert text.startswith(f"{tmp_path / 'train.jsonl'}:2: ") and message in text and "\n" not in text


def test_image_rows_need_a_vision_model_and_matching_markers(tmp_path, base, images):
    (tmp_path / "a.png").write_bytes(images[0].read_bytes())
    path = write(tmp_path / "train.jsonl", [ROW])
    with pytest.raises(DataError, match=r"train.jsonl:1: the row has images, but the model has no vision encoder"):
        load_split(path, base.tokenizer)
    twice = {**ROW, "messages": [{"role": "user", "content": "<image> <image>"}, {"role": "assistant", "content": "A"}]}
    with pytest.raises(DataError, match=r"train.jsonl:1: the messages have 2 images marked .* for 1 images"):
        load_split(write(path, [twice]), base.tokenizer, vision=base.vision)
