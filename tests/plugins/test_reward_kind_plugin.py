"""A reward kind added by a plugin from outside prtcore (tests/plugins/prt_kind_example, kind "mlp"): the registry,
settings, artifact and model card take it like a built-in kind; on mlx and torch it trains (prtcore.training), saves,
loads, and passes the conformance checks the built-in kinds pass (forward against its NumPy reference, artifacts read
across backends, composed log-probs, greedy and cached decoding, a trained reward read by the other backend), run by
the same check functions (prtcore.testing) on a Workspace whose `reward_configs` hold the kind."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

import prtcore
from prtcore import ConfigError, RewardArtifact, RewardConfig
from prtcore.testing.checks import (batched_self, cached_self, composed_pair, composed_reference, greedy_pair,
                                    sampling_pair)
from prtcore.testing.checks_forward import _head_reward_reference, _reward_ordered
from prtcore.testing.checks_generation import _round_trip
from prtcore.testing.workspace import Skip, Workspace

PLUGIN_NAME = "prt-kind-example"
BACKENDS = ("mlx", "torch")
MLP = dict(kind="mlp", lam=0.8, entropy_coeff=0.05, d_model=24)


@pytest.fixture
def plugins(register_example):
    return register_example("prt_kind_example", PLUGIN_NAME)


# ---------------------------------------------------------------------------------------------- the registry
def test_without_the_plugin_the_kind_is_unknown():
    import prtcore.plugins as plugins

    plugins.reset()
    assert "mlp" not in plugins.reward_kinds()
    with pytest.raises(ConfigError, match=r"RewardConfig\.kind='mlp': must be one of 'linear', 'transformer', 'twin'"):
        RewardConfig(kind="mlp")


def test_the_kind_is_registered_like_the_built_in_ones(plugins):
    kinds = plugins.reward_kinds()
    assert list(kinds)[:3] == ["linear", "transformer", "twin"] and "mlp" in kinds
    assert {k: kinds[k].plugin for k in ("linear", "twin", "mlp")} == {
        "linear": "prtcore.kinds.builtin", "twin": "prtcore.kinds.builtin", "mlp": PLUGIN_NAME}
    assert kinds["mlp"].stored_as == "tensors" and kinds["mlp"].reads_source_hidden
    assert "mlp" in prtcore.config.REWARD_KINDS
    described = {e["name"]: e for e in plugins.describe_plugins()}
    assert described[PLUGIN_NAME]["hooks"] == ["register_reward_kinds"]
    assert described[PLUGIN_NAME]["reward_kinds"] == ["mlp"]
    assert "prtcore.kinds.builtin" not in described  # prtcore's own plugin is not an installed plugin
    # `prt train --reward` offers it
    from prtcore.cli.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--reward", "mlp"]).reward == "mlp"
    # the implementations the backends use: the kind's own, and the built-in kinds' as the backends declare them
    assert plugins.backends()["torch"].reward_kinds["linear"] == "prt_torch.rewards:LINEAR"
    assert type(plugins.reward_implementation("mlp", "torch")).__name__ == "HeadImplementation"
    with pytest.raises(prtcore.BackendError, match=r"backend 'nope' does not implement reward kind 'mlp' "
                                                   r"\(implemented by: mlx, torch\)"):
        plugins.reward_implementation("mlp", "nope")


def test_a_name_registered_twice_is_refused(plugins):
    from prtcore.kinds.linear import LINEAR

    class Clash:
        @prtcore.hookimpl
        def register_reward_kinds(self, register):
            register(LINEAR)

    plugins.plugin_manager().register(Clash(), name="clash")
    plugins.reward_kinds.cache_clear()
    with pytest.raises(ConfigError, match=r"reward kind 'linear' is registered twice: by plugin "
                                          r"'prtcore.kinds.builtin' and by plugin 'clash'"):
        plugins.reward_kinds()


def test_settings_validation_artifact_files_and_card(plugins, tmp_path):
    config = RewardConfig(**MLP)
    data = config.to_dict()
    assert data == {"kind": "mlp", "lam": 0.8, "entropy_coeff": 0.05, "d_model": 24}
    assert RewardConfig.from_dict(json.loads(json.dumps(data))) == config
    with pytest.raises(ConfigError, match=r"RewardConfig\.d_model=70000: an mlp reward is at most 65536 wide"):
        RewardConfig(kind="mlp", d_model=70000)
    from prtcore.rewards import count_reward_parameters, reward_tensor_shapes

    assert reward_tensor_shapes(config, 16, 100) == {"fc.weight": (24, 16), "fc.bias": (24,), "head.weight": (100, 24)}
    assert count_reward_parameters(config, 16, 100) == 24 * 16 + 24 + 100 * 24
    # an artifact without its tensors is refused like a linear one; the card describes the kind
    from prtcore.artifacts import CONFIG_NAME, FORMAT, FORMAT_VERSION
    from prtcore.modelcard import render_model_card

    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "reward": data, "vocab_size": 100, "weights": [],
            "source": {"path": None, "hidden_size": 16}}
    (tmp_path / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(prtcore.ArtifactError, match=r"reward\.safetensors: missing; a mlp reward \(weights\) needs it"):
        RewardArtifact.open(tmp_path)
    card = render_model_card(meta, name="mlp-reward")
    assert "The reward is a two-layer MLP (SiLU) over the frozen source model's last hidden states." in card
    assert "| d_model | 24 |" in card and "needs its source model at inference" in card
    assert "- mlp" in card  # the kind's tag


# ---------------------------------------------------------------------------------------------- both backends
@pytest.fixture
def workspace(plugins, tmp_path):
    backends = {}
    for name in BACKENDS:
        try:
            backends[name] = plugins.get_backend(name)
        except prtcore.BackendError as e:
            pytest.skip(str(e))
    ws = Workspace.for_family("llama", backends, tmp_path)
    ws.reward_configs["mlp"] = RewardConfig(**MLP)
    ws.prt_reward = "mlp"
    return ws


def _ok(measures):
    bad = [m for m in measures if not m.ok]
    assert not bad, "; ".join(f"{m.where}: {m.figure:.3g} > {m.limit:.3g}" for m in bad)


def test_trains_saves_loads_and_passes_conformance_on_both_backends(workspace):
    ws = workspace
    reference = _head_reward_reference("mlp")
    for name in BACKENDS:
        # trains (prtcore.training.train_reward, 3 steps): the zero-initialised head moves, and the loss is finite
        out = ws.trained(name, "mlp")
        artifact = RewardArtifact.open(out)
        assert artifact.kind == "mlp" and artifact.config == RewardConfig(**MLP)
        assert np.any(artifact.tensors()["head.weight"])
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        losses = [m["train_loss"] for m in metrics if "train_loss" in m]
        assert losses and all(np.isfinite(losses))
        # the dry-run count is the kind's tensors (plus the frozen source)
        counted = ws.backend(name).count_parameters(ws.checkpoint, artifact.config)
        assert counted["trainable"] == sum(v.size for v in artifact.tensors().values())
        # forward against the kind's NumPy reference on the backend's own hidden states (a random neutral artifact)
        _ok(reference(ws, name))
    for a, b in (("mlx", "torch"), ("torch", "mlx")):
        _ok(_reward_ordered("mlp")(ws, a, b))  # an artifact saved by one backend, read by the other
        _ok(_round_trip("mlp")(ws, a, b))  # a reward trained by one backend gives the same logits in the other
    # composition and decoding with the mlp reward (and, both having LoRA, the neutral LoRA twin)
    for name in BACKENDS:
        _ok(composed_reference(ws, name))
        _ok(cached_self(ws, name))
        try:
            _ok(batched_self(ws, name))
        except Skip:
            assert name == "mlx"  # no capability "batched"
    _ok(composed_pair(ws, "mlx", "torch"))  # cross-backend log-prob equality
    _ok(sampling_pair(ws, "mlx", "torch"))
    _ok(greedy_pair(ws, "mlx", "torch"))


def test_prt_model_from_pretrained_loads_the_kind(workspace):
    """The user's route: PRTForCausalLM.from_pretrained with an mlp artifact, on each backend."""
    from prtcore import PRTForCausalLM
    from prtcore.testing import reference

    ws = workspace
    path = ws.neutral_artifact("mlp")
    artifact = RewardArtifact.open(path)
    ids = [ws.trace_ids()]
    for name in BACKENDS:
        model = PRTForCausalLM.from_pretrained(ws.checkpoint, path, backend=name, **ws.load_options)
        assert model.sources[0] is model.target  # target == source: one forward serves both
        b = ws.backend(name)
        out = model.target.forward(b.asarray(ids), hidden=True)
        want = reference.reward_logits(artifact.tensors(), b.to_numpy(out.hidden), artifact.config)
        got = np.asarray(b.to_numpy(model.rewards[0].forward(b.asarray(ids), source_hidden=out.hidden)), np.float64)
        np.testing.assert_allclose(got, want, atol=1e-4)
        text = model.generate("Hello", max_tokens=4)
        assert isinstance(text, str)


def test_static_decoding_runs_a_position_wise_kind(workspace):
    """prt_torch's static decoding (CPU: the same step, eagerly, over static buffers) runs a plugin's position-wise
    module as it runs the linear head, token for token as prtcore's loop."""
    from prt_torch.graphs import StaticDecoding
    from prtcore.sampling import Sampler, decode

    ws = workspace
    model = ws.prt_model("torch", False)
    fast = StaticDecoding(model, graphs=False)
    assert not fast.reasons()
    prompt = ws.prompt_ids()
    eager = decode(model.scorers(), model.active_composer(), Sampler(), prompt, xp=model.backend.xp, max_tokens=8,
                   to_backend=model.backend.asarray, eos_ids=())
    assert fast.generate_ids(prompt, max_tokens=8, eos_ids=()) == [s.token for s in eager]
