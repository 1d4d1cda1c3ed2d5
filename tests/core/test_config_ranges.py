"""Values the frameworks cannot take are ConfigErrors naming the field (or the flag) and the value.

Seeds: numpy takes 0 <= seed < 2**32 (torch and mlx take more). λ, the entropy coefficient, learning rate and
weight decay reach the frameworks as float32: 1/λ or the product overflowing it (or λ so large that the reward
vanishes) is refused; every value users actually use is accepted.
"""

from __future__ import annotations

import pytest

from prtcore import ConfigError, RewardConfig, TrainingConfig
from prtcore.cli.main import main

ACCEPTED = {
    RewardConfig: {"lam": [1e-3, 0.5, 1, 1e3], "entropy_coeff": [0, 0.05, 10]},
    TrainingConfig: {"seed": [0, 3, 2**32 - 1], "learning_rate": [1e-7, 1e-4, 1], "weight_decay": [0, 0.1, 1]},
}
REFUSED = {
    RewardConfig: {"lam": [1e-39, 1e-7, 1e7, 1e39, 10**400], "entropy_coeff": [1e7, 1e39, 10**400]},
    TrainingConfig: {"seed": [-1, 2**32, 2**64, 99999999999999999999],
                     "learning_rate": [1e39, 10**400, float("inf"), float("nan")],
                     "weight_decay": [1e39, 10**400, float("inf")]},
}
RULES = {"lam": "from 1e-06 to 1e+06", "entropy_coeff": "from 0 to 1e+06", "seed": "from 0 to 2**32 - 1",
         "learning_rate": "at most 3.4e+38 (float32)", "weight_decay": "at most 3.4e+38 (float32)"}


def cases(table):
    return [(cls, field, value) for cls, fields in table.items() for field, values in fields.items()
            for value in values]


@pytest.mark.parametrize("cls, field, value", cases(ACCEPTED), ids=lambda v: getattr(v, "__name__", repr(v)))
def test_values_in_use_are_accepted(cls, field, value):
    assert getattr(cls(**{field: value}), field) == value


@pytest.mark.parametrize("cls, field, value", cases(REFUSED), ids=lambda v: getattr(v, "__name__", repr(v)[:12]))
def test_values_outside_the_frameworks_ranges_are_refused_with_the_rule(cls, field, value):
    with pytest.raises(ConfigError) as e:
        cls(**{field: value})
    assert str(e.value).startswith(f"{cls.__name__}.{field}={value!r}: must be "), e.value
    assert RULES[field] in str(e.value)


def fail(capsys, *argv) -> str:
    """The one stderr line of a `prt` command that must fail with exit code 2, before any model loads."""
    assert main([str(a) for a in argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


SEED_COMMANDS = {
    "generate": ["generate", "--model", "m", "--compose", "base", "--prompt", "hi"],
    "chat": ["chat", "--model", "m", "--compose", "base"],
    "explain": ["explain", "--model", "m", "--reward", "r", "--prompt", "hi"],
    "train": ["train", "--model", "m", "--data", "d", "--output-dir", "o"],
    "demo": ["demo", "--quick"],
}


@pytest.mark.parametrize("seed", ["-1", str(2**32), str(2**64), "99999999999999999999"])
@pytest.mark.parametrize("command", sorted(SEED_COMMANDS))
def test_seed_flags_out_of_range_are_one_line(capsys, tmp_path, monkeypatch, command, seed):
    monkeypatch.chdir(tmp_path)  # nothing named m, r, d or o exists: the seed is refused first
    message = fail(capsys, *SEED_COMMANDS[command], "--seed", seed)
    assert message == f"prt {command}: error: --seed {seed}: must be an integer from 0 to 2**32 - 1 (4294967295)"
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("flag, value, expected", [
    ("--lambda", "1e-40", "--lambda 1e-40: must be a number > 0, from 1e-06 to 1e+06"),
    ("--lambda", "1e9", "--lambda 1000000000.0: must be a number > 0, from 1e-06 to 1e+06"),
    ("--entropy-coeff", "1e39", "--entropy-coeff 1e+39: must be a number from 0 to 1e+06"),
    ("--learning-rate", "1e39", "--learning-rate 1e+39: must be a number > 0 and at most 3.4e+38 (float32)"),
    ("--weight-decay", "inf", "--weight-decay inf: must be a number >= 0 and at most 3.4e+38 (float32)"),
])
def test_train_float_flags_out_of_float32_are_one_line(capsys, tmp_path, monkeypatch, flag, value, expected):
    monkeypatch.chdir(tmp_path)
    assert expected in fail(capsys, *SEED_COMMANDS["train"], flag, value)


def test_reward_lambda_suffix_follows_the_same_rule(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = fail(capsys, "generate", "--model", "m", "--prompt", "hi", "--reward", "r:1e-40")
    assert "--reward r:1e-40: λ=1e-40 must be > 0, from 1e-06 to 1e+06" in message
