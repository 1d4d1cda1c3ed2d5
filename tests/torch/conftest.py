"""Shared fixtures of the torch backend's tests: tiny random checkpoints sharing one tokenizer (nothing downloaded)."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import prtcore  # noqa: E402
import prt_torch.base  # noqa: E402
from prtcore.testing.checkpoints import make_tiny_checkpoint, make_tokenizer  # noqa: E402

# The equivalence tests compare float32 CPU results with NumPy: the automatic device is CPU here, also on a
# machine with a GPU (test_cuda.py asks for device="cuda" explicitly).
prt_torch.base.default_device = lambda: torch.device("cpu")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("torch_models")


@pytest.fixture(scope="session")
def tokenizer_dir(tiny_root):
    return make_tokenizer(tiny_root / "tok")


@pytest.fixture(scope="session")
def source_dir(tiny_root, tokenizer_dir):
    """The source: llama, hidden 64, 2 layers."""
    return make_tiny_checkpoint(tiny_root / "source", "llama", tokenizer_dir=tokenizer_dir, seed=0)


@pytest.fixture(scope="session")
def target_dir(tiny_root, tokenizer_dir):
    """A different base with the same tokenizer: qwen2, 3 layers, a padded output layer."""
    return make_tiny_checkpoint(tiny_root / "target", "qwen2", tokenizer_dir=tokenizer_dir, seed=1,
                                extra_vocab_rows=6, num_hidden_layers=3)


@pytest.fixture(scope="session")
def backend():
    return prtcore.get_backend("torch")


@pytest.fixture(scope="session")
def source(backend, source_dir):
    return backend.load_base(source_dir)


@pytest.fixture(scope="session")
def target(backend, target_dir):
    return backend.load_base(target_dir)


@pytest.fixture
def fresh_source(backend, source_dir):
    """A source of its own, for tests that inject LoRA adapters into it."""
    return backend.load_base(source_dir)
