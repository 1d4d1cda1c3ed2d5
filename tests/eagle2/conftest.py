"""Tiny random Eagle2 checkpoints in both config formats, with and without the remote-code fixture."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from prtcore.testing.eagle2 import make_eagle2_checkpoint, make_eagle2_tokenizer  # noqa: E402

FORMATS = ("eagle_chat", "eagle_2_5_vl")
REMOTE_FIXTURE = Path(__file__).parent / "remote_fixture"


@pytest.fixture(scope="session", autouse=True)
def modules_cache(tmp_path_factory):
    """transformers copies remote code into a modules cache: a temporary one, not ~/.cache."""
    from transformers import dynamic_module_utils

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path_factory.mktemp("hf_modules")))
        yield


@pytest.fixture(scope="session")
def eagle_tokenizer(tmp_path_factory):
    return make_eagle2_tokenizer(tmp_path_factory.mktemp("eagle2") / "tokenizer")


@pytest.fixture(scope="session")
def native_dirs(tmp_path_factory, eagle_tokenizer):
    """{format: checkpoint without remote code}; both formats hold the same weights (same seed and sizes)."""
    root = tmp_path_factory.mktemp("eagle2-native")
    return {fmt: make_eagle2_checkpoint(root / fmt, fmt, tokenizer_dir=eagle_tokenizer) for fmt in FORMATS}


@pytest.fixture(scope="session")
def remote_dirs(tmp_path_factory, eagle_tokenizer):
    """{format: checkpoint with the remote-code fixture and auto_map}; same weights as `native_dirs`."""
    root = tmp_path_factory.mktemp("eagle2-remote")
    return {fmt: make_eagle2_checkpoint(root / fmt, fmt, tokenizer_dir=eagle_tokenizer, remote_code=REMOTE_FIXTURE / fmt)
            for fmt in FORMATS}


@pytest.fixture(scope="session")
def torch_backend():
    from prtcore.plugins import get_backend

    return get_backend("torch")


@pytest.fixture(scope="session")
def wide_image():
    """112 × 56 random RGB: 2 tiles of 56 px plus the thumbnail."""
    from PIL import Image

    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (56, 112, 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def square_image():
    from PIL import Image

    return Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8))
