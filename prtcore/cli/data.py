"""`prt data`: convert a public data set into jsonl splits prtcore's trainers read.

    prt data drivelm INPUT.json --out DIR [--mode multi|mosaic] [--categories perception,planning]
                     [--split 0.8,0.1,0.1] [--seed 0] [--image-root DIR] [--skip-missing-images]
                     [--tile-size 800x450] [--image-format jpg|png] [--overwrite]

See docs/drivelm.md for the row format.
"""

from __future__ import annotations

import argparse

from ..apps.drivelm.schema import CATEGORIES


def ratios(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected three ratios train,valid,test such as 0.8,0.1,0.1") from None


def categories(text: str) -> tuple[str, ...]:
    names = tuple(c.strip() for c in text.split(",") if c.strip())
    bad = [c for c in names if c not in CATEGORIES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated subset of {','.join(CATEGORIES)}")
    return names


def tile_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxHEIGHT such as 800x450") from None
    if width < 1 or height < 1 or width * height > 50_000_000:
        raise argparse.ArgumentTypeError(f"{text!r}: each side must be >= 1 and the tile at most 50 megapixels")
    return width, height


def add_arguments(parser) -> None:
    datasets = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    help_text = "DriveLM-nuScenes annotation JSON -> train/valid/test jsonl, one QA per line with the six camera images"
    drivelm = datasets.add_parser("drivelm", help=help_text, description=help_text)
    drivelm.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    drivelm.add_argument("input", metavar="INPUT.json", help="official annotation file (v1_1_train_nus.json, test_eval.json, ...)")
    drivelm.add_argument("--out", required=True, metavar="DIR", help="output directory (written atomically)")
    drivelm.add_argument("--mode", choices=("multi", "mosaic"), default="multi",
                         help="multi: six images per QA (default); mosaic: one stitched 3x2 image per frame in DIR/images")
    drivelm.add_argument("--categories", type=categories, default=CATEGORIES, metavar="LIST",
                         help=f"comma-separated subset of {','.join(CATEGORIES)} (default: all)")
    drivelm.add_argument("--split", type=ratios, default=(0.8, 0.1, 0.1), metavar="T,V,T",
                         help="train,valid,test ratios over scenes (default 0.8,0.1,0.1)")
    drivelm.add_argument("--seed", type=int, default=0, help="seed of the scene shuffle (default 0)")
    drivelm.add_argument("--image-root", metavar="DIR",
                         help="directory the annotation's image paths are relative to (default: INPUT's directory)")
    drivelm.add_argument("--skip-missing-images", action="store_true",
                         help="skip frames with a missing image (counted) instead of failing")
    drivelm.add_argument("--tile-size", type=tile_size, default=(800, 450), metavar="WxH",
                         help="mosaic: size each camera image is resized to (default 800x450)")
    drivelm.add_argument("--image-format", choices=("jpg", "png"), default="jpg", help="mosaic file format (default jpg)")
    drivelm.add_argument("--overwrite", action="store_true", help="replace an existing output directory")


def run(args) -> int:
    from ..apps.drivelm.convert import convert

    summary = convert(args.input, args.out, mode=args.mode, categories=args.categories, ratios=args.split,
                      seed=args.seed, image_root=args.image_root, skip_missing=args.skip_missing_images,
                      tile=args.tile_size, image_format=args.image_format, overwrite=args.overwrite)
    rows = ", ".join(f"{split} {n} QAs / {len(summary['scenes'][split])} scenes" for split, n in summary["rows"].items())
    print(f"{args.out}: {rows}; {summary['skipped_frames']} frames skipped for missing images")
    return 0
