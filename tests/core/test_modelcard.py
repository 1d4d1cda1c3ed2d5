"""The model card (README.md) of every reward artifact: Hub front matter, the reward's settings, its training,
and the lines that use it; rendered from prt_config.json and written by every save."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import yaml

from prtcore import RewardArtifact, RewardConfig
from prtcore.artifacts import CONFIG_NAME, REWARD_WEIGHTS, ArtifactWriter, save_numpy_tensors, write_into
from prtcore.modelcard import render_model_card

TENSORS = {"head.weight": np.zeros((3, 4), np.float32)}


def lora_meta(**source_extra) -> dict:
    """What a LoRA twin trained with `prt train` records (plugins/prt_*/training.py: the final artifact)."""
    config = RewardConfig(kind="twin", lam=0.5, entropy_coeff=0.05, lora={"rank": 4, "num_layers": 2})
    return {
        "format": "prtcore.reward", "format_version": 1, "reward": config.to_dict(), "vocab_size": 300,
        "output_size": 316, "tokenizer": {"fingerprint": "ab" * 32, "length": 300},
        "source": {"path": "/models/tiny-llama", "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                   "vocab_size": 316, **source_extra},
        "weights": ["adapter_config.json", "adapter_model.safetensors"],
        "created_by": {"prtcore": "0.1.0", "backend": "torch"},
        "training": {"iterations": 16, "trained_tokens": 4096, "best_val_loss": 2.3456789, "best_iteration": 8},
    }


def split(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    head, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def hub_card(card: str):
    from huggingface_hub import ModelCard

    return ModelCard(card, ignore_metadata_errors=False)


def test_card_from_a_trained_lora_twin():
    card = render_model_card(lora_meta(), name="capitals-reward")
    front, body = split(card)
    assert front["base_model"] == "tiny-llama"  # no Hub id recorded: the source directory's name
    assert front["library_name"] == "prtcore" and "license" not in front
    assert front["tags"][:4] == ["prtcore", "portable-reward-tuning", "reward-model", "twin"]
    assert {"lora", "peft", "llama"} <= set(front["tags"])
    assert body.lstrip().startswith("# capitals-reward")
    assert "| λ (lam) | 0.5 |" in body and "| entropy coefficient | 0.05 |" in body
    assert "| lora.rank | 4 |" in body and "| lora.keys | every linear of the block |" in body
    assert "| steps | 16 |" in body and "| best validation loss | 2.34568 |" in body
    assert "| best validation step | 8 |" in body and "| trained tokens | 4096 |" in body
    assert "Data: not recorded." in body
    assert 'PRTForCausalLM.from_pretrained("BASE", "capitals-reward")' in body
    assert 'prt generate --model BASE --reward capitals-reward --prompt "Hello"' in body
    assert "/models/" not in card  # only the source's name, not where it lay on the training machine
    data = hub_card(card).data
    assert data.base_model == "tiny-llama" and data.library_name == "prtcore" and "reward-model" in data.tags


def test_hub_id_revision_license_and_data_when_recorded():
    meta = lora_meta(hub_id="org/Tiny-Llama-1B", revision="c" * 40)
    meta.update(license="apache-2.0", data={"path": "/data/capitals", "train": 40, "valid": 8})
    card = render_model_card(meta, name="r")
    front, body = split(card)
    assert front["base_model"] == "org/Tiny-Llama-1B" and front["license"] == "apache-2.0"
    assert f"| revision | `{'c' * 40}` |" in body
    assert "Data: `capitals`; examples: 40 train, 8 valid." in body
    assert 'PRTForCausalLM.from_pretrained("org/Tiny-Llama-1B", "r")' in body
    assert "prt generate --model org/Tiny-Llama-1B --reward r" in body
    data = hub_card(card).data
    assert data.base_model == "org/Tiny-Llama-1B" and data.license == "apache-2.0"


@pytest.mark.parametrize("meta", [{}, {"reward": "junk", "source": None, "training": [1], "weights": "x"},
                                  {"reward": {"kind": "linear", "lam": float("nan")}, "source": {"path": None}}])
def test_odd_meta_still_renders_a_valid_card(meta):
    card = render_model_card(meta, name="odd | name\n")
    front, body = split(card)
    assert front["library_name"] == "prtcore" and "base_model" not in front
    assert "odd \\| name" in body
    hub_card(card)


def test_every_artifact_writer_commit_writes_the_card(tmp_path):
    config = RewardConfig(kind="linear", lam=2.0, entropy_coeff=0.0)
    meta = {"reward": config.to_dict(), "vocab_size": 3, "weights": [REWARD_WEIGHTS],
            "source": {"path": str(tmp_path / "src-model"), "model_type": "toy", "hidden_size": 4, "vocab_size": 3},
            "training": {"iteration": 4, "val_loss": 1.5}}

    def save(path):
        with ArtifactWriter(path) as w:
            save_numpy_tensors(w.dir / REWARD_WEIGHTS, TENSORS)
            return w.commit(meta)

    path = save(tmp_path / "best")
    front, body = split((path / "README.md").read_text(encoding="utf-8"))
    assert front["base_model"] == "src-model" and "linear" in front["tags"]
    assert "# best" in body and "| λ (lam) | 2.0 |" in body and "| saved at step | 4 |" in body
    assert "| validation loss | 1.5 |" in body
    RewardArtifact.open(path)  # the card is no weights file: the artifact still opens
    # write_into (a training run's final save): the card names the output directory, not the staging one
    out = tmp_path / "run-out"
    out.mkdir()
    (out / "README.md").write_text("an old card")
    write_into(out, save)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "# run-out" in card and ".partial" not in card and "an old card" not in card


def test_a_card_that_cannot_render_warns_and_the_save_goes_on(tmp_path, monkeypatch):
    import prtcore.modelcard

    def broken(meta, *, name):
        raise RuntimeError("boom")

    monkeypatch.setattr(prtcore.modelcard, "render_model_card", broken)
    meta = {"reward": RewardConfig().to_dict(), "vocab_size": 3, "weights": [REWARD_WEIGHTS], "source": {}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ArtifactWriter(tmp_path / "r") as w:
            save_numpy_tensors(w.dir / REWARD_WEIGHTS, TENSORS)
            w.commit(meta)
    assert any("no model card written" in str(c.message) for c in caught)
    assert (tmp_path / "r" / CONFIG_NAME).exists() and not (tmp_path / "r" / "README.md").exists()


def test_a_torch_training_run_writes_the_card(tmp_path, monkeypatch):
    """Through a real backend: `train_reward` on a tiny torch model (write_into for the result, a direct save for
    best/)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from prtcore import TrainingConfig
    from prtcore.testing.checkpoints import make_tiny_checkpoint, make_tokenizer
    from prtcore.training import train_reward

    monkeypatch.setenv("PRT_QUIET", "1")
    tok = make_tokenizer(tmp_path / "tok")
    base = make_tiny_checkpoint(tmp_path / "tiny-base", "llama", tokenizer_dir=tok, seed=0)
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"prompt": f"What is {i} plus one?", "completion": f"It is {i + 1}."} for i in range(8)]
    for split_name, part in (("train", rows[:6]), ("valid", rows[6:])):
        (data / f"{split_name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    out = tmp_path / "my-reward"
    reward = RewardConfig(kind="linear", lam=0.75, entropy_coeff=0.0)
    training = TrainingConfig(iters=2, batch_size=2, steps_per_eval=2, val_batches=1, steps_per_report=1,
                              save_every=2, learning_rate=1e-3)
    train_reward(base, data, out, reward, training, backend="torch")

    for path, name in ((out, "my-reward"), (out / "best", "best")):
        card = (path / "README.md").read_text(encoding="utf-8")
        front, body = split(card)
        assert front["base_model"] == "tiny-base" and front["library_name"] == "prtcore"
        assert {"prtcore", "reward-model", "linear"} <= set(front["tags"])
        assert "| λ (lam) | 0.75 |" in body and "| entropy coefficient | 0.0 |" in body
        assert f'PRTForCausalLM.from_pretrained("BASE", "{name}")' in body
        assert f'prt generate --model BASE --reward {name} --prompt "Hello"' in body
        assert "backend torch" in body
        hub_card(card)
    body = (out / "README.md").read_text(encoding="utf-8")
    assert "| steps | 2 |" in body and "| best validation loss |" in body and "| trained tokens |" in body
    assert RewardArtifact.open(out).meta["reward"]["lam"] == 0.75
