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


# ---------------------------------------------------------------------------------------------- --to mlx-lm refusals
# A PEFT adapter for the tiny llama of `ws` (hidden 64, 2 layers, 2 key-value heads of 16): q_proj and v_proj of both
# layers, rank 4. Each refusal changes one thing; what mlx-lm's load_adapters (mlx_lm/tuner/utils.py) accepts is one
# rank and scale on the last N blocks' linears, and only their lora_a / lora_b tensors.
SHAPES = {"self_attn.q_proj": (64, 64), "self_attn.v_proj": (64, 32)}


def block_modules(layers=(0, 1)) -> dict:
    return {f"model.layers.{i}.{m}": shape for i in layers for m, shape in SHAPES.items()}


def peft_adapter(path, *, config=None, extra=None, modules=None, rank=4):
    """A PEFT adapter directory: LoRA matrices of `modules` (path under base_model.model → (fan_in, fan_out);
    default: q_proj and v_proj of both blocks), `extra` tensors (name → shape), `config` over the defaults."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    modules = block_modules() if modules is None else modules
    tensors = {}
    for module, (fan_in, fan_out) in modules.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = rng.normal(size=(rank, fan_in)).astype(np.float32)
        tensors[f"base_model.model.{module}.lora_B.weight"] = rng.normal(size=(fan_out, rank)).astype(np.float32)
    for name, shape in (extra or {}).items():
        tensors[name] = rng.normal(size=shape).astype(np.float32)
    path.mkdir(parents=True)
    save_file(tensors, str(path / adapters.PEFT_WEIGHTS), metadata={"format": "pt"})
    settings = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank,
                "target_modules": sorted({m.rsplit(".", 1)[-1] for m in modules}), "bias": "none",
                "modules_to_save": None, "use_dora": False, "rank_pattern": {}, "alpha_pattern": {},
                "layers_to_transform": None, "base_model_name_or_path": None, **(config or {})}
    (path / adapters.PEFT_CONFIG).write_text(json.dumps(settings))
    return path


def convert_error(capsys, src, dst, *extra) -> str:
    from prtcore.cli.main import main

    code = main(["convert", str(src), str(dst), "--to", "mlx-lm", *map(str, extra)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_a_plain_peft_adapter_converts_and_loads_in_plain_mlx_lm(ws, tmp_path, capsys):
    from prtcore.cli.main import main

    src = peft_adapter(tmp_path / "peft")
    assert main(["convert", str(src), str(tmp_path / "mlx"), "--to", "mlx-lm", "--source", str(ws["source"])]) == 0
    pytest.importorskip("mlx_lm")
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import load_model

    model, _ = load_model(ws["source"])
    load_adapters(model, str(tmp_path / "mlx"))  # raises on any tensor it does not expect


@pytest.mark.parametrize("config,extra,message", [
    ({"modules_to_save": ["lm_head"]}, {"base_model.model.lm_head.weight": (300, 64)},
     "field 'modules_to_save' = [\"lm_head\"]"),
    ({"bias": "all"}, {"base_model.model.model.layers.0.self_attn.q_proj.bias": (64,)}, "field 'bias' = \"all\""),
    ({"bias": "lora_only"}, {}, "field 'bias' = \"lora_only\""),
    ({"lora_bias": True}, {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias": (64,)},
     "field 'lora_bias' = true"),
    ({}, {"base_model.model.model.layers.1.self_attn.v_proj.lora_B.bias": (32,)},
     "field 'lora_bias' = false, but tensor"),
    ({}, {"base_model.model.model.layers.1.self_attn.q_proj.bias": (64,)}, "field 'bias' = \"none\", but tensor"),
    ({}, {"base_model.model.model.embed_tokens.weight": (300, 64)}, "field 'modules_to_save' = null, but tensor"),
    ({"use_dora": True}, {"base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector": (64,)},
     "field 'use_dora' = true"),
    ({}, {"base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector": (64,)},
     "field 'use_dora' = false, but tensor"),
    ({"rank_pattern": {"q_proj": 8}}, {}, "field 'rank_pattern' = {\"q_proj\": 8}"),
    ({"alpha_pattern": {"v_proj": 32}}, {}, "field 'alpha_pattern' = {\"v_proj\": 32}"),
    ({"target_parameters": ["mlp.experts.gate_up_proj"]}, {},
     "field 'target_parameters' = [\"mlp.experts.gate_up_proj\"]"),
    ({"trainable_token_indices": [5, 6]}, {}, "field 'trainable_token_indices' = [5, 6]"),
    ({"fan_in_fan_out": True}, {}, "field 'fan_in_fan_out' = true"),
    ({"peft_type": "IA3"}, {}, "field 'peft_type' = \"IA3\""),
    ({"target_modules": ["q_proj", "v_proj", "embed_tokens"]},
     {"base_model.model.model.embed_tokens.lora_embedding_A": (4, 300)}, "field 'target_modules' = [\"q_proj\""),
])
def test_to_mlx_lm_refuses_what_mlx_lm_cannot_load(ws, tmp_path, capsys, config, extra, message):
    src = peft_adapter(tmp_path / "peft", config=config, extra=extra)
    line = convert_error(capsys, src, tmp_path / "out", "--source", ws["source"])
    assert message in line and "adapter_config.json" in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("modules,config,message", [
    ({"lm_head": (64, 300)}, {"target_modules": ["lm_head"]},
     "field 'target_modules' = [\"lm_head\"]: module lm_head is not in a numbered block"),
    ({f"model.layers.{i}.mlp.experts.0.up_proj": (64, 128) for i in (0, 1)}, {"target_modules": ["up_proj"]},
     "field 'target_modules' = [\"up_proj\"]: module model.layers.0.mlp.experts.0.up_proj is one expert"),
    (block_modules((0,)), {"layers_to_transform": [0]}, "field 'layers_to_transform' = [0]: adapted layers [0] of 2"),
])
def test_to_mlx_lm_refuses_modules_mlx_lm_does_not_map(ws, tmp_path, capsys, modules, config, message):
    src = peft_adapter(tmp_path / "peft", config=config, modules=modules)
    (tmp_path / "out").mkdir()  # an empty output directory stays empty
    line = convert_error(capsys, src, tmp_path / "out", "--source", ws["source"])
    assert message in line, line
    assert not any((tmp_path / "out").iterdir())


def test_a_zero_head_lora_twin_reward_is_refused_for_mlx_lm(ws, tmp_path, capsys):
    """A reward artifact holds PEFT's layout: a LoRA twin with its own head (modules_to_save) is refused by name."""
    pytest.importorskip("peft")
    import prtcore
    from prtcore import RewardConfig

    backend = prtcore.get_backend("torch")
    source = backend.load_base(ws["source"], device="cpu")
    config = RewardConfig(kind="twin", fine_tune_type="lora", init="zero_head", lora={"rank": 4, "num_layers": 1})
    reward = backend.create_reward(config, source).save(tmp_path / "reward", source=source,
                                                         vocab_size=len(source.tokenizer))
    line = convert_error(capsys, reward, tmp_path / "out")
    assert "field 'modules_to_save' = [\"lm_head\"]" in line, line
    assert not (tmp_path / "out").exists()
