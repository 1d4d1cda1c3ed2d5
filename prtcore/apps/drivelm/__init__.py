"""DriveLM-nuScenes: convert the official annotation JSON to jsonl, and score predictions as the challenge does.

    schema     reading and validating the annotation file (scenes → key frames → QA, six camera images)
    convert    `prt data drivelm`: train/valid/test jsonl, multi-image or a 3×2 mosaic per frame
    mosaic     the stitched 3×2 camera image
    tokenize   a pure-Python stand-in for the PTB tokenizer the COCO caption tools run in Java
    metrics    BLEU-1..4, ROUGE-L, CIDEr-D (pycocoevalcap), accuracy and the c-tag match F1 (evaluation.py)
    evaluate   `prt eval --task drivelm`: graph gating, tag buckets, the final score without the GPT judge

See docs/drivelm.md.
"""
