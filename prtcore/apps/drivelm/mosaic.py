"""One stitched image per key frame: the six cameras resized to a common tile size, in a 3×2 grid.

    CAM_FRONT_LEFT | CAM_FRONT | CAM_FRONT_RIGHT
    CAM_BACK_LEFT  | CAM_BACK  | CAM_BACK_RIGHT

c-tag coordinates in the text stay in the original camera's pixels (they are kept verbatim).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import ConfigError, DataError

LAYOUT = (("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"), ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"))
FORMATS = {"jpg": "JPEG", "png": "PNG"}


def write_mosaic(images: dict[str, Path], out: Path, tile: tuple[int, int], fmt: str, where: str) -> None:
    """Stitch `images` (camera → file) into `out`; `where` names the QA in errors."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ConfigError("--mode mosaic needs Pillow (pip install pillow)") from None
    width, height = tile
    canvas = Image.new("RGB", (3 * width, 2 * height))
    for row, cameras in enumerate(LAYOUT):
        for col, camera in enumerate(cameras):
            path = images[camera]
            try:
                with Image.open(path) as image:
                    tile_image = image.convert("RGB").resize((width, height), Image.BILINEAR)
            except (UnidentifiedImageError, OSError, ValueError) as e:
                reason = getattr(e, "strerror", None) or e
                if isinstance(e, UnidentifiedImageError):
                    reason = "not an image PIL knows"
                raise DataError(f"{where}: image {camera} {str(path)!r} cannot be read ({reason})") from None
            canvas.paste(tile_image, (col * width, row * height))
    options = {"quality": 95} if fmt == "jpg" else {}
    canvas.save(out, FORMATS[fmt], **options)
