"""Shared fixtures of the mlx backend tests: tiny random checkpoints (built locally, nothing downloaded)."""

from __future__ import annotations

import pytest

pytest.importorskip("mlx.core")
pytest.importorskip("mlx_lm")

from mlx_testutil import OTHER_CORPUS, make_dataset  # noqa: E402
from prtcore.testing.checkpoints import make_tiny_checkpoint, make_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def backend():
    import prtcore

    return prtcore.get_backend("mlx")


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory):
    """Paths: tokenizer, source (tiny llama), target (other depth/width, head padded by 64 rows), alien
    (a llama with another tokenizer), data (a small jsonl dataset)."""
    root = tmp_path_factory.mktemp("mlx-ckpts")
    tok = make_tokenizer(root / "tok")
    paths = {
        "tok": tok,
        "source": make_tiny_checkpoint(root / "source", "llama", tokenizer_dir=tok, seed=0),
        "target": make_tiny_checkpoint(root / "target", "llama", tokenizer_dir=tok, seed=1, extra_vocab_rows=64,
                                       hidden_size=96, num_hidden_layers=3, intermediate_size=160),
        "alien": make_tiny_checkpoint(root / "alien", "llama", tokenizer_dir=make_tokenizer(root / "tok2", OTHER_CORPUS),
                                      seed=2),
        "data": make_dataset(root / "data"),
    }
    return paths


@pytest.fixture
def source(backend, ckpts):
    """A fresh source per test (a LoRA twin adapts its weights in place)."""
    return backend.load_base(ckpts["source"])


