"""Eagle2's image side: area-aware tiling, thumbnail, bicubic resize, 0.5/0.5 normalisation, prompts, placeholders."""

import numpy as np
import pytest
from PIL import Image
from transformers import AutoTokenizer

from prt_eagle2.config import parse_config
from prt_eagle2.vision import (
    DEFAULT_SYSTEM, IMG_CONTEXT, candidate_grids, chat_prompt, choose_grid, make_encoder, preprocess, tile_image,
    user_content,
)
from prtcore.errors import ConfigError, DataError
from prtcore.testing.eagle2 import EAGLE2_1B_TEXT, EAGLE2_1B_VISION, eagle2_config
from prtcore.vision import Images, expand_image_tokens, with_placeholders


@pytest.fixture(scope="module")
def tok(eagle_tokenizer):
    return AutoTokenizer.from_pretrained(str(eagle_tokenizer))


@pytest.fixture(scope="module")
def real_size(tok):
    """Eagle2-1B's image settings (448 px tiles, 256 tokens each) on the tiny tokenizer."""
    return parse_config(eagle2_config("eagle_chat", tok, vision=EAGLE2_1B_VISION, text=EAGLE2_1B_TEXT))


@pytest.fixture(scope="module")
def tiny(tok):
    return parse_config(eagle2_config("eagle_chat", tok))


def score(cols, rows, width, height, tile=448):
    """The area-aware score written out: min(covered / image area, 0.6) · aspect agreement."""
    r, g = width / height, cols / rows
    return min(cols * rows * tile * tile / (width * height), 0.6) * min(g / r, r / g)


@pytest.mark.parametrize("size, grid", [((448, 448), (1, 1)), ((1000, 500), (2, 1)), ((900, 300), (3, 1)),
                                        ((300, 900), (1, 3)), ((2000, 2000), (3, 3)), ((60, 40), (3, 2))])
def test_choose_grid_examples(size, grid):
    """A small image is upscaled to the grid of its aspect ratio (the area term saturates at 0.6)."""
    assert choose_grid(*size, 448) == grid


def test_choose_grid_is_the_first_maximum_of_the_area_aware_score():
    rng = np.random.default_rng(0)
    for width, height in rng.integers(30, 3000, (40, 2)):
        grids = candidate_grids(1, 12)
        scores = [score(c, r, width, height) for c, r in grids]
        assert choose_grid(width, height, 448) == grids[int(np.argmax(scores))]  # argmax: first maximum
    assert [c * r for c, r in candidate_grids(1, 12)] == sorted(c * r for c, r in candidate_grids(1, 12))
    assert all(2 <= c * r <= 6 for c, r in candidate_grids(2, 6))


def test_tiles_row_major_then_thumbnail_last():
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (500, 1000, 3), dtype=np.uint8))
    tiles = tile_image(image, 448)
    resized = image.resize((896, 448), Image.BICUBIC)
    assert len(tiles) == 3
    assert np.array_equal(np.asarray(tiles[0]), np.asarray(resized.crop((0, 0, 448, 448))))
    assert np.array_equal(np.asarray(tiles[1]), np.asarray(resized.crop((448, 0, 896, 448))))
    assert np.array_equal(np.asarray(tiles[2]), np.asarray(image.resize((448, 448), Image.BICUBIC)))
    assert len(tile_image(image.resize((448, 448)), 448)) == 1  # one tile: no thumbnail
    assert len(tile_image(image, 448, use_thumbnail=False)) == 2


def test_pixel_values_1000x500_at_real_size(real_size):
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (500, 1000, 3), dtype=np.uint8))
    inputs = preprocess([image], real_size)
    assert inputs.pixel_values.shape == (3, 3, 448, 448) and inputs.pixel_values.dtype == np.float32
    assert inputs.tiles_per_image == (3,)
    first = np.asarray(image.resize((896, 448), Image.BICUBIC).crop((0, 0, 448, 448)), dtype=np.float32)
    want = (first / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(inputs.pixel_values[0], want.transpose(2, 0, 1), atol=1e-6)


def test_num_tokens_256_per_tile(real_size, tok):
    encoder = make_encoder(real_size, tok)
    black = Image.new("RGB", (1000, 500))
    inputs = encoder.preprocess([black, Image.new("RGB", (448, 448))])
    assert inputs.tiles_per_image == (3, 1)
    assert encoder.num_tokens(inputs) == [768, 256]


def test_normalisation_is_mean_std_half(tiny):
    inputs = preprocess([Image.new("RGB", (56, 56), (255, 255, 255)), Image.new("RGB", (56, 56), (0, 0, 0))], tiny)
    assert np.all(inputs.pixel_values[0] == 1.0) and np.all(inputs.pixel_values[1] == -1.0)


def test_grey_and_rgba_inputs_become_rgb(tiny):
    grey = np.full((56, 56), 128, dtype=np.uint8)
    rgba = Image.new("RGBA", (56, 56), (255, 0, 0, 10))
    inputs = preprocess([grey, rgba], tiny)
    assert inputs.pixel_values.shape == (2, 3, 56, 56)
    np.testing.assert_allclose(inputs.pixel_values[1, :, 0, 0], [1.0, -1.0, -1.0])


def test_bad_image_inputs(tiny, tmp_path):
    with pytest.raises(DataError, match="image not found"):
        preprocess([tmp_path / "missing.png"], tiny)
    with pytest.raises(DataError, match=r"shape \(2, 2, 2, 2\)"):
        preprocess([np.zeros((2, 2, 2, 2))], tiny)


def test_eagle_chat_prompt():
    block = "<img>" + IMG_CONTEXT * 8 + "</img>"
    assert chat_prompt("What is it?", [2], 4, "eagle_chat") == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\n{block}\nWhat is it?<|im_end|>\n"
        "<|im_start|>assistant\n")
    two = chat_prompt("Q", [2, 1], 4, "eagle_chat", system=None, answer="A")
    assert two == (f"<|im_start|>user\n<image 1>{block}\n<image 2><img>{IMG_CONTEXT * 4}</img>\nQ<|im_end|>\n"
                   "<|im_start|>assistant\nA<|im_end|>")


def test_eagle_2_5_vl_prompt():
    prompt = chat_prompt("Q", [1, 1], 4, "eagle_2_5_vl")
    block = "<img>" + IMG_CONTEXT * 4 + "</img>"
    assert f"<|im_start|>user\n<image 1>{block}<image 2>{block}Q<|im_end|>\n<|im_start|>assistant\n" in prompt


@pytest.mark.parametrize("fmt", ["eagle_chat", "eagle_2_5_vl"])
def test_prompt_tokens_and_placeholders(tok, fmt, wide_image, square_image):
    config = parse_config(eagle2_config(fmt, tok))
    encoder = make_encoder(config, tok)
    assert encoder.image_token_id == tok.convert_tokens_to_ids(IMG_CONTEXT)
    inputs = encoder.preprocess([wide_image, square_image])
    assert inputs.tiles_per_image == (3, 1) and encoder.num_tokens(inputs) == [12, 4]
    ids = tok.encode(encoder.prompt("What?", inputs))
    assert ids.count(encoder.image_token_id) == 16
    expected = encoder.placeholder_tokens(inputs)
    assert len(expected) == 2 + 12 + 2 + 4
    start = ids.index(expected[0])
    assert ids[start:start + 14] == expected[:14]  # <img>, 12 × <IMG_CONTEXT>, </img> of the first image
    # prtcore's VLM path: one placeholder per image, expanded to the encoder's counts
    assert encoder.placeholder == "<img><IMG_CONTEXT></img>"
    placeholder_ids = tok.encode(encoder.placeholder)
    assert placeholder_ids.count(encoder.image_token_id) == 1
    images = Images([wide_image, square_image])
    assert expand_image_tokens(placeholder_ids * 2, encoder.image_token_id, images.num_tokens(encoder)) == expected
    # "<image>\n" + question (LLaVA-style data, the old chat()) gives exactly the eagle_chat prompt's user turn
    marked = tok.encode(with_placeholders("<image>\nWhat?", 1, encoder.placeholder))
    one = encoder.preprocess([wide_image])
    assert expand_image_tokens(marked, encoder.image_token_id, encoder.num_tokens(one)) == \
        tok.encode(user_content("What?", one.tiles_per_image, 4, "eagle_chat"))


def test_eagle_chat_needs_the_image_token_in_the_tokenizer(tmp_path, tiny):
    from prtcore.testing.checkpoints import make_tokenizer

    plain = AutoTokenizer.from_pretrained(str(make_tokenizer(tmp_path / "plain")))
    with pytest.raises(ConfigError, match=r"config.json: no image_token_index and the tokenizer has no <IMG_CONTEXT> token$"):
        make_encoder(tiny, plain)
