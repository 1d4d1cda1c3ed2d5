"""Fixtures of the multi-process tests: a tiny checkpoint and a data set (helpers: dist_testutil)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dist_testutil import NAMES


@pytest.fixture(scope="session")
def ws(tmp_path_factory) -> dict:
    from prtcore.testing.checkpoints import make_tiny_checkpoint, make_tokenizer

    root = tmp_path_factory.mktemp("distributed")
    tok = make_tokenizer(root / "tok")
    source = make_tiny_checkpoint(root / "source", "llama", tokenizer_dir=tok, seed=0)
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir()
    for split, n in (("train", 16), ("valid", 6)):
        rows = []
        for _ in range(n):
            a, b = rng.choice(NAMES, 2)
            answer = " The capital is " + " and ".join([str(b)] * int(rng.integers(1, 4))) + "."  # uneven lengths
            rows.append({"prompt": f"Question: What is the capital of {a}? Answer:", "completion": answer})
        (data / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return {"source": source, "data": data, "root": root}
