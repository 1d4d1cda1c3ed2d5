"""Why prt_mlx gives StarCoder2 its configured activation (prt_mlx.base.use_configured_activation).

mlx-lm's starcoder2 MLP applies exact gelu (`nn.gelu`) whatever `hidden_act` says; transformers applies the config's
`gelu_pytorch_tanh`. The first test shows the difference with the two libraries alone (no prtcore): when it fails,
mlx-lm reads `hidden_act` and the patch can go. The second checks that prt_mlx computes what transformers computes
(the conformance suite's starcoder2 family runs every cross-backend check with no declared failure).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("mlx.core")
pytest.importorskip("mlx_lm")

TOL = 1e-4  # prtcore.testing.checks.TOL_LOGITS: x max(1, max |logit|)


def _libraries_logits(tmp_path, hidden_act: str):
    """(transformers logits, mlx-lm logits) of one random tiny StarCoder2 checkpoint, its MLP using `hidden_act`
    in transformers (mlx-lm reads the same files)."""
    import mlx.core as mx
    import torch
    from mlx_lm.utils import load_model
    from transformers import Starcoder2Config, Starcoder2ForCausalLM

    torch.manual_seed(0)
    config = Starcoder2Config(vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                              initializer_range=0.1, hidden_act=hidden_act, bos_token_id=None, eos_token_id=None,
                              rope_parameters={"rope_type": "default", "rope_theta": 1234.0})
    model = Starcoder2ForCausalLM(config).eval()
    path = tmp_path / hidden_act
    model.save_pretrained(str(path))
    saved = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**saved, "rope_theta": 1234.0}))  # the field mlx-lm reads
    ids = np.random.default_rng(0).integers(0, 384, size=(1, 24))
    with torch.no_grad():
        want = model(torch.tensor(ids)).logits.numpy()
    mlx_model, _ = load_model(path)
    return want, np.asarray(mlx_model(mx.array(ids)).astype(mx.float32))


def test_upstream_mlx_lm_starcoder2_ignores_hidden_act(tmp_path):
    """transformers and mlx-lm alone: they differ with StarCoder2's gelu_pytorch_tanh, and agree with exact gelu."""
    want, got = _libraries_logits(tmp_path, "gelu_pytorch_tanh")
    limit = TOL * max(1.0, float(np.abs(want).max()))
    assert np.abs(got - want).max() > limit, (
        "mlx-lm's starcoder2 now matches transformers' gelu_pytorch_tanh: remove "
        "prt_mlx.base.use_configured_activation")
    want, got = _libraries_logits(tmp_path, "gelu")
    assert np.abs(got - want).max() < 2e-5


def test_prt_mlx_uses_the_configured_activation(tmp_path):
    from prtcore import PRTForCausalLM, to_numpy
    from prtcore.testing.checkpoints import make_tiny_checkpoint, make_tokenizer

    path = make_tiny_checkpoint(tmp_path / "starcoder2", "starcoder2", tokenizer_dir=make_tokenizer(tmp_path / "tok"))
    ids = [[5, 17, 42, 99, 3, 250, 7]]
    torch_out = to_numpy(PRTForCausalLM.from_pretrained(path, backend="torch")(ids).logprobs)
    mlx_out = to_numpy(PRTForCausalLM.from_pretrained(path, backend="mlx")(ids).logprobs)
    assert np.abs(torch_out - mlx_out).max() < 2e-5
