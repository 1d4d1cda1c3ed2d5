"""Degenerate reward weights are refused at load, naming the file and the tensor: NaN or inf in every reward kind,
a dtype or shape that does not fit prt_config.json, a LoRA twin without its adapter files (both backends)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from prtcore import PRTForCausalLM, RewardArtifact, RewardConfig
from prtcore.errors import ArtifactError

from .conftest import BACKENDS

KINDS = {
    "linear": RewardConfig(kind="linear"),
    "transformer": RewardConfig(kind="transformer", d_model=16, num_heads=2, num_layers=1, ffn_dim=32),
    "lora": RewardConfig(kind="twin", init="zero_head", lora={"rank": 2, "num_layers": 1}),
    "full": RewardConfig(kind="twin", fine_tune_type="full"),
}
FILES = {"linear": "reward.safetensors", "transformer": "reward.safetensors", "lora": "adapter_model.safetensors",
         "full": "model.safetensors"}


@pytest.fixture(scope="module")
def clean(rws, tmp_path_factory):
    """One untrained artifact of each kind (artifacts are backend-neutral: written once, read by each backend)."""
    from prtcore.plugins import get_backend

    backend = get_backend(BACKENDS[0])
    source = backend.load_base(rws["source"])
    root = tmp_path_factory.mktemp("bad-weights")
    vocab = len(source.tokenizer.get_vocab())
    return {kind: backend.create_reward(config, source, seed=0).save(root / kind, source=source, vocab_size=vocab)
            for kind, config in KINDS.items()}


def damaged(clean, kind, tmp_path, edit):
    """A copy of the `kind` artifact whose weights file went through `edit(tensors)`."""
    path = shutil.copytree(clean[kind], tmp_path / kind)
    file = path / FILES[kind]
    tensors = load_file(str(file))
    edit(tensors)
    save_file(tensors, str(file), metadata={"format": "pt"})
    return path


def name_ending(tensors, suffix):
    return next(k for k in sorted(tensors) if k.endswith(suffix))


def poison(suffix, value):
    def edit(tensors):
        key = name_ending(tensors, suffix)
        tensors[key] = tensors[key].copy()
        tensors[key].flat[3] = value

    return edit


def recast(suffix, dtype):
    def edit(tensors):
        key = name_ending(tensors, suffix)
        tensors[key] = tensors[key].astype(dtype)

    return edit


def drop_row(suffix):
    def edit(tensors):
        key = name_ending(tensors, suffix)
        tensors[key] = np.ascontiguousarray(tensors[key][:-1])

    return edit


CASES = [  # kind, edit, tensor named, what the message says
    ("linear", poison("head.weight", np.nan), "head.weight", "NaN or inf"),
    ("linear", poison("head.weight", np.inf), "head.weight", "NaN or inf"),
    ("transformer", poison("blocks.0.mlp.up_proj.weight", -np.inf), "blocks.0.mlp.up_proj.weight", "NaN or inf"),
    ("transformer", poison("head.weight", np.nan), "head.weight", "NaN or inf"),
    ("lora", poison("q_proj.lora_B.weight", np.nan), "q_proj.lora_B.weight", "NaN or inf"),
    ("lora", poison("lm_head.weight", np.inf), "lm_head.weight", "NaN or inf"),
    ("full", poison("layers.0.mlp.down_proj.weight", np.nan), "layers.0.mlp.down_proj.weight", "NaN or inf"),
    ("full", poison("embed_tokens.weight", np.inf), "embed_tokens.weight", "NaN or inf"),
    ("linear", recast("head.weight", np.float64), "head.weight", "dtype F64, expected F32"),
    ("linear", recast("head.weight", np.int32), "head.weight", "dtype I32, expected F32"),
    ("transformer", recast("norm_out.weight", np.float64), "norm_out.weight", "dtype F64"),
    ("lora", recast("v_proj.lora_A.weight", np.float64), "v_proj.lora_A.weight", "dtype F64"),
    ("lora", recast("lm_head.weight", np.int64), "lm_head.weight", "dtype I64"),
    ("full", recast("lm_head.weight", np.float64), "lm_head.weight", "dtype F64"),
    ("full", recast("embed_tokens.weight", np.int32), "embed_tokens.weight", "dtype I32"),
    ("linear", drop_row("head.weight"), "head.weight", "expected (300, 64)"),
    ("transformer", drop_row("proj_in.weight"), "proj_in.weight", "expected (16, 64)"),
    ("lora", drop_row("lm_head.weight"), "lm_head.weight", "expected (300, 64)"),
    ("full", drop_row("lm_head.weight"), "lm_head.weight", "expected (300, 64)"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind, edit, tensor, says", CASES)
def test_bad_reward_weights_are_refused_at_load(rws, clean, tmp_path, backend, kind, edit, tensor, says):
    path = damaged(clean, kind, tmp_path, edit)
    with pytest.raises(ArtifactError) as info:
        PRTForCausalLM.from_pretrained(rws["source"], path, backend=backend, source=rws["source"])
    message = str(info.value)
    assert "\n" not in message and FILES[kind] in message and tensor in message and says in message, message


@pytest.mark.parametrize("missing", ["adapter_config.json", "adapter_model.safetensors"])
def test_lora_twin_without_its_adapter_files_fails_at_open(clean, tmp_path, missing):
    path = shutil.copytree(clean["lora"], tmp_path / "lora")
    (path / missing).unlink()
    with pytest.raises(ArtifactError, match=rf"{missing}\b.*(missing|not found)") as info:
        RewardArtifact.open(path)
    assert "\n" not in str(info.value)


def test_full_twin_without_its_config_fails_at_open(clean, tmp_path):
    path = shutil.copytree(clean["full"], tmp_path / "full")
    (path / "config.json").unlink()
    with pytest.raises(ArtifactError, match=r"config\.json: missing"):
        RewardArtifact.open(path)


def test_clean_artifacts_still_load(rws, clean):
    for kind in KINDS:
        for backend in BACKENDS:
            model = PRTForCausalLM.from_pretrained(rws["source"], clean[kind], backend=backend, source=rws["source"])
            assert np.isfinite(np.asarray(model.backend.to_numpy(model([[1, 2, 3]]).logprobs))).all()
