"""The GPU checks' entry point (`python3 -m prtcore.apps.bench.gpu`, run by hpc/gpu-check.sh), rehearsed on the CPU
at tiny sizes: the gpu-1b preset trains the LoRA twin and the transformer reward against peft LoRA, without
generation, and prints its summary."""

from __future__ import annotations

import json

import pytest

from prtcore.apps.bench import preset
from prtcore.apps.bench.gpu import main
from prtcore.plugins import installed_backend_names

pytestmark = pytest.mark.skipif("torch" not in installed_backend_names(), reason="needs the torch backend")


def test_gpu_1b_preset_is_a_1b_training_check():
    config = preset("gpu-1b")
    assert config.vocab == 152000 and config.dtype == "bfloat16" and not config.generation
    assert config.train_rewards == ("twin", "transformer")
    assert 0.9e9 < config.source.parameters(0) < 1.1e9  # its blocks: Llama-3.2-1B's (the embeddings come on top)


def test_gpu_1b_rehearsal_on_cpu(tmp_path, capsys):
    out = tmp_path / "gpu-1b.json"
    code = main(["--preset", "gpu-1b", "--device", "cpu", "--dtype", "float32", "--source-hidden", "64",
                 "--source-layers", "2", "--source-heads", "4", "--source-kv-heads", "2", "--vocab", "512",
                 "--train-seq", "16", "--train-batch", "2", "--train-steps", "1", "--train-repeats", "1",
                 "--lora-layers", "2", "--reward-d-model", "32", "--quiet", "--workdir", str(tmp_path / "work"),
                 "--output", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    torch_result = result["backends"]["torch"]
    assert "generation" not in torch_result
    assert set(torch_result["training"]["steps"]) == {"lora", "prt.twin", "prt.transformer", "forward"}
    printed = capsys.readouterr().out
    assert "train prt.twin: step/LoRA" in printed and "train prt.transformer: step/LoRA" in printed
