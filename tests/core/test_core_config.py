"""RewardConfig / LoRAConfig / TrainingConfig validation and RewardConfig serialisation."""

from __future__ import annotations

import json
import math

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prtcore import ConfigError, LoRAConfig, RewardConfig, TrainingConfig

NAN = float("nan")
INF = float("inf")

INVALID = {
    LoRAConfig: {
        "rank": [0, -1, 1.5, True, "8", None],
        "scale": [0, -1.0, NAN, INF, True, "20"],
        "dropout": [-0.1, 1.0, 1.5, NAN, True, "0.1"],
        "num_layers": [0, -2, 1.5, True, "8"],
        "keys": ["q_proj", [1, 2], [""], 5],
    },
    RewardConfig: {
        "kind": ["lstm", "", None, 1],
        "lam": [0, -1.0, NAN, INF, True, "1.0", None],
        "entropy_coeff": [-0.01, NAN, INF, True, "0.05"],
        "d_model": [0, -512, 512.0, True],
        "num_layers": [0, -1, 2.5],
        "num_heads": [0, -8, 8.0],
        "ffn_dim": [0, -1, "2048"],
        "norm_eps": [0, -1e-5, NAN, INF],
        "fine_tune_type": ["qlora", "LoRA", None],
        "init": ["random", None],
        "lora": ["lora", 8, [8]],
    },
    TrainingConfig: {
        "learning_rate": [0, -1e-4, NAN, INF, "1e-4", True],
        "iters": [0, -1, 1.5, True],
        "epochs": [0, -3, 2.0],
        "batch_size": [0, -4, 4.0, None],
        "max_seq_length": [0, -1],
        "grad_accumulation_steps": [0, 1.5],
        "grad_checkpoint": ["yes", 1, None],
        "mask_prompt": ["no", 0, None],
        "optimizer": ["sgd", "Adam", None],
        "weight_decay": [-0.1, NAN, INF, "0"],
        "lr_schedule": ["step", None],
        "warmup_steps": [-1, 1.5],
        "steps_per_report": [0, -1],
        "steps_per_eval": [0, -1],
        "val_batches": [0, -2, 1.5],
        "save_every": [0, -100],
        "seed": [-1, 1.5, None],
    },
}

CASES = [(cls, field, value) for cls, fields in INVALID.items() for field, values in fields.items() for value in values]


def test_every_field_has_invalid_cases():
    for cls, fields in INVALID.items():
        assert set(fields) == {f.name for f in attrs.fields(cls)}, cls.__name__


@pytest.mark.parametrize("cls, field, value", CASES, ids=[f"{c.__name__}.{f}={v!r}" for c, f, v in CASES])
def test_invalid_value_names_class_field_and_value(cls, field, value):
    with pytest.raises(ConfigError) as e:
        cls(**{field: value})
    msg = str(e.value)
    assert cls.__name__ in msg, msg
    assert field in msg, msg
    if isinstance(value, list):  # sequences are converted to tuples before validation
        assert repr(value) in msg or repr(tuple(value)) in msg, msg
    elif not (isinstance(value, float) and math.isnan(value)):
        assert repr(value) in msg, msg
    else:
        assert "nan" in msg, msg


def test_defaults_are_valid_and_documented_values():
    r = RewardConfig()
    assert (r.kind, r.lam, r.entropy_coeff, r.d_model, r.num_layers, r.num_heads, r.ffn_dim) == (
        "linear", 1.0, 0.0, 512, 2, 8, 2048)
    lora = LoRAConfig()
    assert (lora.rank, lora.scale, lora.num_layers, lora.keys) == (8, 20.0, 8, None)
    assert TrainingConfig().optimizer == "adam"


def test_lora_keys_are_converted_to_a_tuple():
    assert LoRAConfig(keys=["q_proj", "v_proj"]).keys == ("q_proj", "v_proj")
    assert LoRAConfig(num_layers=-1).num_layers == -1


def test_lora_dict_is_converted_and_validated():
    r = RewardConfig(kind="twin", lora={"rank": 4, "keys": ["q_proj"]})
    assert r.lora == LoRAConfig(rank=4, keys=("q_proj",))
    with pytest.raises(ConfigError, match=r"LoRAConfig\.rank=0"):
        RewardConfig(kind="twin", lora={"rank": 0})
    with pytest.raises(ConfigError, match=r"RewardConfig\.lora.*unknown field 'bogus'"):
        RewardConfig(kind="twin", lora={"rank": 4, "bogus": 1})


def test_transformer_heads_must_divide_d_model():
    with pytest.raises(ConfigError, match=r"RewardConfig\.d_model=100.*num_heads=8"):
        RewardConfig(kind="transformer", d_model=100, num_heads=8)
    assert RewardConfig(kind="transformer", d_model=96, num_heads=8).head_dim == 12
    RewardConfig(kind="linear", d_model=100, num_heads=8)  # irrelevant for other kinds


def test_training_iters_and_epochs_are_exclusive():
    with pytest.raises(ConfigError, match=r"TrainingConfig.*iters=10.*epochs=2"):
        TrainingConfig(iters=10, epochs=2)
    assert TrainingConfig(iters=10).iters == 10 and TrainingConfig(epochs=2).epochs == 2
    assert TrainingConfig(val_batches=-1).val_batches == -1


def test_configs_are_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        RewardConfig("linear")  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        RewardConfig().lam = 2.0  # type: ignore[misc]


@st.composite
def reward_configs(draw):
    kind = draw(st.sampled_from(["linear", "transformer", "twin"]))
    kw = {"kind": kind, "lam": draw(st.floats(1e-3, 1e3)), "entropy_coeff": draw(st.floats(0.0, 1.0))}
    if kind == "transformer":
        heads = draw(st.integers(1, 16))
        kw.update(num_heads=heads, d_model=heads * draw(st.integers(1, 64)), num_layers=draw(st.integers(1, 8)),
                  ffn_dim=draw(st.integers(1, 4096)), norm_eps=draw(st.floats(1e-8, 1e-2)))
    elif kind == "twin":
        kw.update(fine_tune_type=draw(st.sampled_from(["lora", "full"])), init=draw(st.sampled_from(["copy", "zero_head"])))
        if kw["fine_tune_type"] == "lora":
            kw["lora"] = LoRAConfig(
                rank=draw(st.integers(1, 64)), scale=draw(st.floats(0.1, 100.0)), dropout=draw(st.floats(0.0, 0.9)),
                num_layers=draw(st.sampled_from([-1, 1, 8, 32])),
                keys=draw(st.one_of(st.none(), st.lists(st.sampled_from(["q_proj", "k_proj", "v_proj", "o_proj"]),
                                                        min_size=1, max_size=4, unique=True))))
    return RewardConfig(**kw)


@settings(max_examples=80, deadline=None)
@given(reward_configs())
def test_reward_config_round_trip(config):
    data = config.to_dict()
    # Through JSON, as the artifact stores it.
    again = RewardConfig.from_dict(json.loads(json.dumps(data)))
    assert again == config
    assert again.to_dict() == data
    assert data["kind"] == config.kind
    if config.kind == "linear":
        assert set(data) == {"kind", "lam", "entropy_coeff"}
    if config.kind == "transformer":
        assert {"d_model", "num_layers", "num_heads", "ffn_dim", "norm_eps"} <= set(data)
    if config.kind == "twin":
        assert ("lora" in data) == (config.fine_tune_type == "lora")


def test_from_dict_refuses_unknown_field():
    with pytest.raises(ConfigError, match=r"where it is: unknown field 'dmodel'"):
        RewardConfig.from_dict({"kind": "transformer", "dmodel": 4}, where="where it is")
    with pytest.raises(ConfigError, match=r"RewardConfig\.kind='nope'"):
        RewardConfig.from_dict({"kind": "nope"})
