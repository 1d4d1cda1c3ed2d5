"""What the backends' benchmarks build their random models from: a tokenizer, a transformers config of a shape,
random prompts and batches.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on a synthetic corpus to the requested vocabulary
size (cached under the work directory), and each model is a llama-shaped `tiny_config` with the shape's sizes; a
backend initialises it at random in memory (prt_torch.bench: transformers' own init; prt_mlx.bench: N(0, INIT_STD²)
weights, unit norms).
"""

from __future__ import annotations

import random
from pathlib import Path

from .config import ModelShape

INIT_STD = 0.02
MAX_POSITIONS = 4096


def synthetic_corpus(seed: int = 0, words: int = 60000) -> list[str]:
    """Random lower-case 'words' (2-9 letters): enough distinct pairs for a BPE of tens of thousands of merges."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    items = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(words)]
    return [" ".join(items[i:i + 50]) for i in range(0, len(items), 50)]


def bench_tokenizer(workdir, vocab: int) -> Path:
    """A tokenizer directory with `vocab` tokens, made once per size: a BPE trained on the synthetic corpus, its
    vocabulary filled up to `vocab` with tokens no merge produces when the corpus runs out of merges (above about
    100k tokens), as real vocabularies of 128k-256k tokens hold many that a given text never uses."""
    from ..testing.checkpoints import make_tokenizer

    path = Path(workdir) / f"tokenizer-{vocab}"
    if not (path / "tokenizer.json").is_file():
        words = min(60000, max(2000, vocab * 3))
        staging = path.with_name(f".{path.name}.partial")
        make_tokenizer(staging, synthetic_corpus(0, words), vocab_size=vocab, chat_template=None)
        _fill_vocabulary(staging / "tokenizer.json", vocab)
        staging.replace(path)
    return path


def _fill_vocabulary(file: Path, vocab: int) -> None:
    """Add unreachable tokens to a BPE tokenizer.json until its model's vocabulary holds `vocab` ids."""
    import json

    data = json.loads(file.read_text(encoding="utf-8"))
    table = data["model"]["vocab"]
    taken = max(table.values()) + 1 if table else 0
    for index in range(taken, vocab):
        table[f"<|unused_{index}|>"] = index
    file.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def hf_config(shape: ModelShape, tokenizer):
    """A transformers LlamaConfig of `shape` (no EOS: generation runs its full length)."""
    from ..testing.checkpoints import tiny_config

    config = tiny_config("llama", len(tokenizer), initializer_range=INIT_STD, max_position_embeddings=MAX_POSITIONS,
                         tie_word_embeddings=False, **shape.overrides())
    config.eos_token_id = None
    config.bos_token_id = None
    config.pad_token_id = tokenizer.pad_token_id
    return config


def random_prompt(vocab: int, length: int, seed: int) -> list[int]:
    """Token ids drawn uniformly from the ordinary (non-special) part of the vocabulary."""
    rng = random.Random(seed)
    return [rng.randrange(8, vocab) for _ in range(length)]


def random_batches(vocab: int, batch: int, seq: int, count: int, seed: int):
    """`count` (ids, mask) pairs of int32 / float32 numpy arrays, (batch, seq + 1), every token counted."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        ids = rng.integers(8, vocab, size=(batch, seq + 1), dtype=np.int64).astype(np.int32)
        out.append((ids, np.ones(ids.shape, dtype=np.float32)))
    return out
