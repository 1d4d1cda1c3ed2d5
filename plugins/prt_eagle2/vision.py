"""Eagle2's image side without a framework: area-aware dynamic tiling, pixel values, prompts with image tokens.

Pixel values are NumPy float32 (tiles, 3, S, S) normalised with mean = std = 0.5 (the SigLIP norm); each backend
turns them into its own arrays and features (`Eagle2VisionEncoder.features`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import attrs
import numpy as np

from prtcore.errors import ConfigError
from prtcore.vision import VisionEncoder, load_image

from .config import Eagle2Config

MEAN = STD = (0.5, 0.5, 0.5)
IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
DEFAULT_SYSTEM = "You are a helpful assistant."
AREA_CAP = 0.6  # the area score saturates once the tiles cover 60% of the image's own pixels


# ------------------------------------------------------------------------------------------------ tiling
def candidate_grids(min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
    """(columns, rows) with min ≤ columns·rows ≤ max, fewest tiles first (the upstream set-then-sort order)."""
    grids = {(i, j) for n in range(min_tiles, max_tiles + 1) for i in range(1, n + 1) for j in range(1, n + 1)
             if min_tiles <= i * j <= max_tiles}
    return sorted(grids, key=lambda g: g[0] * g[1])


def choose_grid(width: int, height: int, tile: int, min_tiles: int = 1, max_tiles: int = 12) -> tuple[int, int]:
    """Eagle2's area-aware grid: maximise min(covered area / image area, 0.6) · aspect-ratio agreement.

    The first maximum wins (strict `>`), so ties go to fewer tiles.
    """
    ratio, area = width / height, width * height
    best, best_score = (1, 1), -1.0
    for cols, rows in candidate_grids(min_tiles, max_tiles):
        grid_ratio = cols / rows
        score = min(cols * rows * tile * tile / area, AREA_CAP) * min(grid_ratio / ratio, ratio / grid_ratio)
        if score > best_score:
            best, best_score = (cols, rows), score
    return best


def tile_image(image, tile: int, min_tiles: int = 1, max_tiles: int = 12, use_thumbnail: bool = True) -> list:
    """PIL tiles of `image`: the resized image cut row-major, then (when there are several) a thumbnail last."""
    from PIL import Image

    cols, rows = choose_grid(image.width, image.height, tile, min_tiles, max_tiles)
    resized = image.resize((tile * cols, tile * rows), Image.BICUBIC)
    tiles = [resized.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)) for r in range(rows) for c in range(cols)]
    if use_thumbnail and len(tiles) > 1:
        tiles.append(image.resize((tile, tile), Image.BICUBIC))
    return tiles


def to_pixels(tile_images: Sequence) -> np.ndarray:
    """(tiles, 3, S, S) float32 of S×S tiles: /255, then (x - 0.5) / 0.5."""
    arrays = [np.asarray(t, dtype=np.float32) / 255.0 for t in tile_images]
    pixels = np.stack(arrays).transpose(0, 3, 1, 2)
    mean = np.asarray(MEAN, dtype=np.float32)[None, :, None, None]
    std = np.asarray(STD, dtype=np.float32)[None, :, None, None]
    return (pixels - mean) / std


# ------------------------------------------------------------------------------------------------ inputs
@attrs.frozen(eq=False)
class Eagle2ImageInputs:
    """Pixel values of every tile of every image, in prompt order, and the tile count per image."""

    pixel_values: np.ndarray  # (tiles, 3, S, S) float32
    tiles_per_image: tuple[int, ...]


def preprocess(images: Sequence[Any], config: Eagle2Config) -> Eagle2ImageInputs:
    tiles, counts = [], []
    for image in images:
        parts = tile_image(load_image(image), config.image_size, config.min_tiles, config.max_tiles,
                           config.use_thumbnail)
        tiles += parts
        counts.append(len(parts))
    if not tiles:
        raise ConfigError("preprocess: no images given")
    return Eagle2ImageInputs(to_pixels(tiles), tuple(counts))


# ------------------------------------------------------------------------------------------------ prompts
def image_token_id(config: Eagle2Config, tokenizer) -> int:
    """`image_token_index` of an eagle_2_5_vl config, else the tokenizer's `<IMG_CONTEXT>` (eagle_chat)."""
    if config.image_token_index is not None:
        return config.image_token_index
    token = _known_token_id(tokenizer, IMG_CONTEXT)
    if token is None:
        raise ConfigError(f"{config.source}: no image_token_index and the tokenizer has no {IMG_CONTEXT} token")
    return int(token)


def _known_token_id(tokenizer, token: str) -> int | None:
    """The tokenizer's id of `token`, None where it has none (or maps it to unk)."""
    found = tokenizer.convert_tokens_to_ids(token)
    return None if found is None or found == getattr(tokenizer, "unk_token_id", None) else found


def image_block(tiles: int, tokens_per_tile: int) -> str:
    """`<img>` + `<IMG_CONTEXT>` × (tokens per tile · tiles) + `</img>`."""
    return IMG_START + IMG_CONTEXT * (tokens_per_tile * tiles) + IMG_END


def user_content(question: str, tiles_per_image: Sequence[int], tokens_per_tile: int, model_type: str) -> str:
    """The user turn with images placed as the model's format does.

    eagle_chat (the old `chat()`): `<image>\\n` before the question (`<image k><image>\\n` per image when several);
    eagle_2_5_vl (its processor): `<image k><img>…</img>` per image, text directly after.
    """
    blocks = [image_block(t, tokens_per_tile) for t in tiles_per_image]
    if model_type == "eagle_2_5_vl":
        return "".join(f"<image {k}>{b}" for k, b in enumerate(blocks, 1)) + question
    if len(blocks) == 1:
        return blocks[0] + "\n" + question
    return "".join(f"<image {k}>{b}\n" for k, b in enumerate(blocks, 1)) + question


def chat_prompt(question: str, tiles_per_image: Sequence[int], tokens_per_tile: int, model_type: str,
                system: str | None = DEFAULT_SYSTEM, answer: str | None = None) -> str:
    """The ChatML (`qwen2-chat`) prompt ending with the assistant's turn opened (or closed over `answer`)."""
    text = f"<|im_start|>system\n{system}<|im_end|>\n" if system is not None else ""
    text += f"<|im_start|>user\n{user_content(question, tiles_per_image, tokens_per_tile, model_type)}<|im_end|>\n"
    text += "<|im_start|>assistant\n"
    return text if answer is None else text + answer + "<|im_end|>"


# ------------------------------------------------------------------------------------------------ encoder
class Eagle2VisionEncoder(VisionEncoder):
    """prtcore's VisionEncoder for Eagle2.

    `features_fn` maps (tiles, 3, S, S) pixel values to (tiles, tokens per tile, hidden) features; `key` names
    the tower (equal keys: same features). The placeholder `<img><IMG_CONTEXT></img>` expands to
    256 · tiles `<IMG_CONTEXT>` tokens per image (prtcore.vision.expand_image_tokens).
    """

    def __init__(self, config: Eagle2Config, image_token: int, features_fn: Callable | None = None, key=None,
                 start_token: int | None = None, end_token: int | None = None):
        self.config, self.image_token_id, self.features_fn, self._key = config, image_token, features_fn, key
        self.start_token, self.end_token = start_token, end_token
        self.placeholder = IMG_START + IMG_CONTEXT + IMG_END  # "<image>" in prompts and data becomes this

    @property
    def key(self):
        return self._key if self._key is not None else id(self)

    @property
    def tokens_per_tile(self) -> int:
        return self.config.tokens_per_tile

    def preprocess(self, images: Sequence[Any]) -> Eagle2ImageInputs:
        return preprocess(images, self.config)

    def num_tokens(self, inputs: Eagle2ImageInputs) -> list[int]:
        return [self.tokens_per_tile * tiles for tiles in inputs.tiles_per_image]

    def placeholder_tokens(self, inputs: Eagle2ImageInputs) -> list[int]:
        """The expanded ids per image: `<img>`, `<IMG_CONTEXT>` × 256·tiles, `</img>` (tags the tokenizer has)."""
        out: list[int] = []
        for count in self.num_tokens(inputs):
            out += [self.start_token] if self.start_token is not None else []
            out += [self.image_token_id] * count
            out += [self.end_token] if self.end_token is not None else []
        return out

    def features(self, inputs: Eagle2ImageInputs):
        """(sum of num_tokens, hidden): every image's tiles in order, as the language model consumes them."""
        if self.features_fn is None:
            raise ConfigError("Eagle2VisionEncoder: no model attached (load the model through a backend)")
        out = self.features_fn(inputs.pixel_values)
        return out.reshape(-1, out.shape[-1])

    def prompt(self, question: str, inputs: Eagle2ImageInputs, **kwargs) -> str:
        """The chat prompt (`chat_prompt`) with these images' tokens in place."""
        return chat_prompt(question, inputs.tiles_per_image, self.tokens_per_tile, self.config.model_type, **kwargs)


def make_encoder(config: Eagle2Config, tokenizer, features_fn: Callable | None = None, key=None) -> Eagle2VisionEncoder:
    return Eagle2VisionEncoder(config, image_token_id(config, tokenizer), features_fn, key,
                               _known_token_id(tokenizer, IMG_START), _known_token_id(tokenizer, IMG_END))
