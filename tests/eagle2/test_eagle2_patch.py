"""The remote-code patch: without it the fixture fails with transformers' flash_attn errors; with it (applied by
the eagle2 plugin's pre-load hook) it loads and runs; afterwards nothing of it remains."""

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, Qwen2Config, SiglipVisionConfig, dynamic_module_utils

from prt_eagle2 import plugin
from prt_eagle2.patch import PatchReport, mps_safe_dtype, no_flash_attn, patch_active
from prtcore.testing.eagle2 import make_eagle2_checkpoint

FORMATS = ("eagle_chat", "eagle_2_5_vl")
REMOTE_FIXTURE = Path(__file__).parent / "remote_fixture"

USUAL_ERRORS = {
    "eagle_chat": "This modeling file requires the following packages that were not found in your environment: "
                  "flash_attn. Run `pip install flash_attn`",
    "eagle_2_5_vl": "FlashAttention2 has been toggled on, but it cannot be used",
}
MODELING = {"eagle_chat": "modeling_eagle_chat.py", "eagle_2_5_vl": "modeling_eagle2_5_vl.py"}
# transformers >= 5.25 ignores the private `_attn_implementation` key of config.json (Eagle2's vision config sets
# it to flash_attention_2), so only older releases ask for flash attention there and need it replaced.
PRIVATE_KEY_HONOURED = SiglipVisionConfig(_attn_implementation="flash_attention_2")._attn_implementation is not None


def fresh_remote_dir(root, fmt, tokenizer, tag="fresh"):
    """A new directory with its own name: transformers keeps remote classes it imported once (by directory name
    and code hash) and skips the import check for them, so each load that must run the check gets its own."""
    return make_eagle2_checkpoint(root / f"{fmt}-{tag}", fmt, tokenizer_dir=tokenizer,
                                  remote_code=REMOTE_FIXTURE / fmt)


def assert_no_patch_left():
    assert not patch_active()
    assert not any(name == "flash_attn" or name.startswith("flash_attn.") for name in sys.modules)
    assert importlib.util.find_spec("flash_attn") is None
    assert dynamic_module_utils.get_imports.__module__ == "transformers.dynamic_module_utils"
    assert Qwen2Config(attn_implementation="flash_attention_2")._attn_implementation == "flash_attention_2"


@pytest.mark.parametrize("fmt", FORMATS)
def test_without_the_patch_the_fixture_fails_as_upstream_does(tmp_path, eagle_tokenizer, fmt):
    path = fresh_remote_dir(tmp_path, fmt, eagle_tokenizer, "unpatched")
    with pytest.raises(ImportError) as info:
        AutoModel.from_pretrained(str(path), trust_remote_code=True, attn_implementation="sdpa")
    assert USUAL_ERRORS[fmt] in str(info.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_backend_load_patches_runs_and_restores(torch_backend, tmp_path, eagle_tokenizer, wide_image, capfd, fmt):
    lm = torch_backend.load_base(fresh_remote_dir(tmp_path, fmt, eagle_tokenizer, "patched"), trust_remote_code=True)
    err = capfd.readouterr().err
    assert type(lm.vlm).__module__.startswith("transformers_modules.")  # the checkpoint's own code ran
    assert lm.vlm.language_model.config._attn_implementation == "sdpa"
    assert lm.vlm.vision_model.config._attn_implementation == "sdpa"
    assert "prt_eagle2: patched the load of" in err and "patch removed" in err
    asked_for_flash = PRIVATE_KEY_HONOURED or fmt == "eagle_2_5_vl"  # whose remote __init__ sets it in code
    assert ("attention: SiglipVisionConfig: flash_attention_2 -> sdpa" in err) == asked_for_flash
    if fmt == "eagle_chat":
        assert "import check: ignored flash_attn (in modeling_eagle_chat.py)" in err
        assert "stubbed modules: flash_attn" in err and "flash_attn.bert_padding" in err
        assert "attention: Qwen2Config: flash_attention_2 -> sdpa" in err
    inputs = lm.vision.preprocess([wide_image])
    ids = lm.tokenizer.encode(lm.vision.prompt("What is shown?", inputs))
    logits = lm.forward([ids], pixel_values=inputs.pixel_values).logits
    assert logits.shape == (1, len(ids), lm.vocab_size) and torch.isfinite(logits).all()
    assert_no_patch_left()
    with pytest.raises(ImportError) as info:  # a new load without the patch fails again, as before
        AutoModel.from_pretrained(str(fresh_remote_dir(tmp_path, fmt, eagle_tokenizer, "after")), trust_remote_code=True)
    assert USUAL_ERRORS[fmt] in str(info.value)


def test_eager_is_forced_where_asked(torch_backend, remote_dirs):
    lm = torch_backend.load_base(remote_dirs["eagle_2_5_vl"], trust_remote_code=True, attn_implementation="eager")
    assert lm.vlm.vision_model.config._attn_implementation == "eager"
    assert lm.vlm.language_model.config._attn_implementation == "eager"
    assert_no_patch_left()


def test_import_check_filter_covers_vendored_files(tmp_path):
    vendored = REMOTE_FIXTURE / "eagle_chat" / "flash_attention.py"  # checked recursively for hub downloads
    assert "flash_attn" in dynamic_module_utils.get_imports(vendored)
    processor = tmp_path / "processing_eagle.py"
    processor.write_text("import numpy\n\ndef load_video(path):\n    import decord\n    return decord\n")
    assert set(dynamic_module_utils.get_imports(processor)) == {"numpy", "decord"}
    with no_flash_attn(echo=False) as report:
        assert "flash_attn" not in dynamic_module_utils.get_imports(vendored)
        assert dynamic_module_utils.get_imports(processor) == ["numpy"]
        assert dynamic_module_utils.check_imports(vendored) == []
    assert report.filtered == {"flash_attn": {"flash_attention.py"}, "decord": {"processing_eagle.py"}}
    with pytest.raises(ImportError, match="flash_attn"):
        dynamic_module_utils.check_imports(vendored)
    assert_no_patch_left()


def test_stubs_import_but_refuse_to_run():
    with no_flash_attn(echo=False):
        from flash_attn.bert_padding import pad_input
        from flash_attn.flash_attn_interface import flash_attn_varlen_qkvpacked_func  # noqa: F401

        assert importlib.util.find_spec("flash_attn").name == "flash_attn"  # a real __spec__
        with pytest.raises(ImportError, match="flash_attn is not installed"):
            pad_input(None, None, 1, 1)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("flash_attn.bert_padding")
    assert_no_patch_left()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_attention_is_forced_in_every_config(attn):
    report = PatchReport()
    with no_flash_attn(attn, report=report, echo=False):
        from_file = SiglipVisionConfig(_attn_implementation="flash_attention_2")._attn_implementation
        assert from_file == (attn if PRIVATE_KEY_HONOURED else None)
        vision = SiglipVisionConfig()
        vision._attn_implementation = "flash_attention_2"  # as the remote __init__ of eagle_2_5_vl does
        assert vision._attn_implementation == attn
        assert Qwen2Config(attn_implementation="flash_attention_2")._attn_implementation == attn
        config = Qwen2Config()
        config._attn_implementation_internal = "flash_attention_2"  # written past the setter
        assert config._attn_implementation == attn
        assert Qwen2Config(attn_implementation="eager")._attn_implementation == "eager"  # others untouched
    assert set(report.attention) == {"SiglipVisionConfig", "Qwen2Config"}
    assert_no_patch_left()


def test_patch_is_removed_when_the_load_fails():
    with pytest.raises(RuntimeError, match="boom"):
        with no_flash_attn(echo=False):
            assert patch_active()
            raise RuntimeError("boom")
    assert_no_patch_left()
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2'"):
        with no_flash_attn("flash_attention_2"):
            pass


def test_hook_applies_only_to_remote_eagle2_on_torch(native_dirs, tmp_path):
    path = native_dirs["eagle_chat"]
    assert plugin.before_model_load(path=str(path), backend="torch", options={}) is None
    assert plugin.before_model_load(path=str(path), backend="mlx", options={"trust_remote_code": True}) is None
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    assert plugin.before_model_load(path=str(tmp_path), backend="torch", options={"trust_remote_code": True}) is None
    options = {"trust_remote_code": True, "device": "cpu"}
    manager = plugin.before_model_load(path=str(path), backend="torch", options=options)
    assert manager is not None and options["attn_implementation"] == "sdpa" and "dtype" not in options
    assert_no_patch_left()  # nothing applies until the manager is entered


@pytest.mark.parametrize("dtype, device, bf16, want", [
    (None, "mps", False, "float16"), ("auto", "mps", False, "float16"), ("bfloat16", "mps", False, "float16"),
    (torch.bfloat16, "mps", False, "float16"), ("float32", "mps", False, "float32"),
    ("bfloat16", "mps", True, "bfloat16"), (None, "cpu", False, None), ("bfloat16", "cuda", False, "bfloat16"),
])
def test_mps_safe_dtypes(dtype, device, bf16, want):
    assert mps_safe_dtype(dtype, device, bf16) == want


def test_native_load_of_a_remote_checkpoint_runs_no_remote_code(torch_backend, remote_dirs):
    from prt_eagle2.torch_model import Eagle2Model

    lm = torch_backend.load_base(remote_dirs["eagle_chat"])
    assert type(lm.vlm) is Eagle2Model and np.isfinite(lm.forward([[1, 2, 3]]).logits.numpy()).all()
