"""A local Hugging Face Hub cache for tests, laid out exactly as huggingface_hub's `snapshot_download` writes it:

    <cache>/models--org--name/
        blobs/<blob id>                      file contents: git's blob sha1, or the sha256 of LFS files (weights)
        snapshots/<commit>/<file>            relative symlinks to ../../blobs/<blob id>
        refs/main                            the commit a branch or tag points to (no trailing newline)
        trees/<commit>.json                  the tree listing snapshot_download caches (format_version 1)

    snapshot = add_to_hub_cache(cache, "org/tiny", checkpoint_dir)           # refs/main -> a new commit
    old = add_to_hub_cache(cache, "org/tiny", other_dir, ref="v1")            # a second commit, tag v1

Nothing is downloaded: point huggingface_hub at `cache` (HF_HUB_CACHE, huggingface_hub.constants.HF_HUB_CACHE)
and set HF_HUB_OFFLINE=1, and it resolves ids from here alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".model", ".gguf")


def repo_folder(cache, repo_id: str) -> Path:
    """`models--org--name` under `cache`."""
    return Path(cache) / ("models--" + repo_id.replace("/", "--"))


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_to_hub_cache(cache, repo_id: str, source_dir, *, ref: str | None = "main", commit: str | None = None,
                     files: list[str] | None = None, tree: bool = True) -> Path:
    """Put the files of `source_dir` (top level; `files` limits them) into `cache` as commit `commit` of model repo
    `repo_id` (default: a hash of the contents) and point `ref` (a branch or tag; None for none) at it. `tree`
    also writes the tree listing, with which huggingface_hub checks that a cached snapshot is complete.
    Returns the snapshot directory."""
    source_dir = Path(source_dir)
    names = sorted(files if files is not None else [p.name for p in source_dir.iterdir() if p.is_file()])
    contents = {name: (source_dir / name).read_bytes() for name in names}
    if commit is None:
        listing = hashlib.sha1()
        for name in names:
            listing.update(name.encode() + b"\0" + git_blob_id(contents[name]).encode())
        commit = listing.hexdigest()
    storage = repo_folder(cache, repo_id)
    snapshot = storage / "snapshots" / commit
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, data in contents.items():
        git_id = git_blob_id(data)
        lfs = name.endswith(LFS_SUFFIXES)
        blob_id = hashlib.sha256(data).hexdigest() if lfs else git_id  # the etag snapshot_download names blobs by
        blob = storage / "blobs" / blob_id
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(os.path.relpath(blob, snapshot), link)
        entry = {"size": len(data), "blob_id": git_id}
        if lfs:  # the Hub's git holds an LFS pointer, and the tree lists the pointer's blob id
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{blob_id}\nsize {len(data)}\n"
            entry["blob_id"] = git_blob_id(pointer.encode())
            entry.update(lfs_sha256=blob_id, lfs_size=len(data))
        entries[name] = entry
    if tree:
        (storage / "trees").mkdir(exist_ok=True)
        (storage / "trees" / f"{commit}.json").write_text(
            json.dumps({"format_version": 1, "files": entries}, indent=1), encoding="utf-8")
    if ref is not None:
        (storage / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(commit)
    return snapshot
