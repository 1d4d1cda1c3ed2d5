"""The native mlx Eagle2: load options and one-line errors (numerics against torch: test_eagle2_conformance)."""

import shutil

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from prt_eagle2.mlx_model import pixel_shuffle  # noqa: E402
from prtcore.errors import ConfigError, ModelLoadError  # noqa: E402
from prtcore.plugins import get_backend  # noqa: E402


@pytest.fixture(scope="module")
def backend():
    return get_backend("mlx")


def test_pixel_shuffle_same_order_as_torch():
    import torch

    from prt_eagle2.torch_model import pixel_shuffle as torch_shuffle

    x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    np.testing.assert_array_equal(np.array(pixel_shuffle(mx.array(x), 2)), torch_shuffle(torch.from_numpy(x), 2).numpy())


def test_dtype_option_and_text_only_forward(backend, native_dirs, square_image):
    lm = backend.load_base(native_dirs["eagle_2_5_vl"], dtype="bfloat16")
    features = lm.image_features(lm.vision.preprocess([square_image]).pixel_values)
    assert features.dtype == mx.bfloat16 and features.shape == (1, 4, 64)
    out = lm.forward([[5, 6, 7]], hidden=True)
    assert out.logits.shape == (1, 3, lm.vocab_size) and out.hidden.shape == (1, 3, 64)
    assert np.isfinite(np.array(out.logits)).all()


def test_bad_options_and_weights(backend, native_dirs, tmp_path):
    with pytest.raises(ConfigError, match="quantize=4: not supported for Eagle2 yet"):
        backend.load_base(native_dirs["eagle_chat"], quantize=4)
    with pytest.raises(ConfigError, match="dtype='int8': must be one of"):
        backend.load_base(native_dirs["eagle_chat"], dtype="int8")
    path = shutil.copytree(native_dirs["eagle_chat"], tmp_path / "broken")
    weights = dict(mx.load(str(path / "model.safetensors")))
    del weights["mlp1.1.weight"]
    mx.save_safetensors(str(path / "model.safetensors"), weights)
    with pytest.raises(ModelLoadError, match=r"broken: weights missing for Eagle2 \(1\), e.g. mlp1.1.weight$"):
        backend.load_base(path)
    weights["mlp1.1.weight"] = mx.zeros((64, 3))
    mx.save_safetensors(str(path / "model.safetensors"), weights)
    with pytest.raises(ModelLoadError, match=r"broken: the weights do not fit Eagle2 \(Expected shape"):
        backend.load_base(path)
