"""`prt convert`: mlx-lm adapter ↔ PEFT adapter ↔ PRT twin reward, exact round trips, and plain peft loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import BACKENDS, prt
from safetensors.numpy import load_file

from prtcore import adapters


@pytest.fixture(scope="module")
def lora_adapter(trained):
    """An SFT LoRA adapter of either layout (mlx-lm's from the mlx backend, else PEFT's from torch)."""
    return trained[BACKENDS[0]]["sft_lora"]


def test_adapter_to_peft_to_adapter_is_exact_and_loads_with_plain_peft(ws, lora_adapter, tmp_path):
    layout = adapters.detect_layout(lora_adapter)
    other = "mlx-lm" if layout == "peft" else "peft"
    there, back = tmp_path / "there", tmp_path / "back"
    prt("convert", lora_adapter, there, "--to", other, "--source", ws["source"])
    prt("convert", there, back, "--to", "peft" if other == "mlx-lm" else "mlx-lm")
    weights = adapters.PEFT_WEIGHTS if layout == "peft" else adapters.MLX_WEIGHTS
    original, round_trip = load_file(str(lora_adapter / weights)), load_file(str(back / weights))
    assert original.keys() == round_trip.keys()
    for name in original:
        np.testing.assert_array_equal(original[name], round_trip[name], err_msg=name)

    peft_dir = there if other == "peft" else lora_adapter
    config = json.loads((peft_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["lora_alpha"] == 20.0 * config["r"]
    pytest.importorskip("peft")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(ws["source"]), dtype=torch.float32),
                                      str(peft_dir))
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    saved = load_file(str(peft_dir / adapters.PEFT_WEIGHTS))
    for name, value in saved.items():
        key = name.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
        np.testing.assert_array_equal(state[key], value, err_msg=name)


def test_adapter_to_reward_and_back(ws, lora_adapter, trained, tmp_path):
    import prtcore

    reward = tmp_path / "reward"
    prt("convert", lora_adapter, reward, "--to", "reward", "--source", ws["source"], "--lambda", "2.0",
        "--backend", BACKENDS[0])
    artifact = prtcore.RewardArtifact.open(reward)
    assert artifact.kind == "twin" and artifact.config.lam == 2.0 and artifact.source["path"] == str(ws["source"].resolve())
    for backend in BACKENDS:  # the artifact loads as a reward on every backend
        model = prtcore.PRTForCausalLM.from_pretrained(ws["target"], reward, backend=backend)
        assert model.rewards[0].config.lora.rank == 4
    back = tmp_path / "back"
    prt("convert", reward, back, "--to", "mlx-lm")
    _, want, _ = adapters.read_adapter(lora_adapter)
    got = load_file(str(back / adapters.MLX_WEIGHTS))
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # a trained LoRA twin reward converts to a plain adapter too
    twin = tmp_path / "twin-peft"
    prt("convert", trained[BACKENDS[0]]["reward"], twin, "--to", "peft")
    assert adapters.detect_layout(twin) == "peft"


def test_convert_refuses_to_overwrite_and_needs_a_source(ws, lora_adapter, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("work")
    run = prt("convert", lora_adapter, tmp_path / "full", "--to", "reward", "--source", ws["source"], check=False)
    assert run.returncode == 2 and "--overwrite" in run.stderr and (tmp_path / "full" / "keep.txt").exists()
    run = prt("convert", tmp_path / "nothing", tmp_path / "x", "--to", "peft", check=False)
    assert run.returncode == 2 and "nothing" in run.stderr and len(run.stderr.strip().splitlines()) == 1
