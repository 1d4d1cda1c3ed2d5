"""Models and rewards named by Hugging Face Hub id (prtcore.hub), resolved from a local Hub cache laid out as
huggingface_hub writes it (prtcore.testing.hub), with HF_HUB_OFFLINE=1 and every socket connection refused:
nothing here reaches the network. Also the source provenance a reward records (Hub id + commit, or path +
fingerprint) and the refusal of a source whose weights changed."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import time

import numpy as np
import pytest

from prtcore.errors import ArtifactError, ConfigError, ModelLoadError
from prtcore.hub import (
    ALLOW_PATTERNS, CODE_PATTERNS, hub_origin, parse_hub_id, resolve_model, resolved_commit, weights_fingerprint,
)
from prtcore.plugins import installed_backend_names
from prtcore.testing.hub import add_to_hub_cache, repo_folder

from .conftest import run_python

pytest.importorskip("huggingface_hub")
BACKENDS = [b for b in ("torch", "mlx") if b in installed_backend_names()]
IDS = [[5, 17, 42, 8, 99, 3]]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny llama checkpoints of one shape and tokenizer ("a": seed 0, "b": seed 1)."""
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    from prtcore.testing.checkpoints import make_tiny_checkpoint, make_tokenizer

    root = tmp_path_factory.mktemp("hub_models")
    tok = make_tokenizer(root / "tok")
    return {"tok": tok,
            "a": make_tiny_checkpoint(root / "a", "llama", tokenizer_dir=tok, seed=0),
            "b": make_tiny_checkpoint(root / "b", "llama", tokenizer_dir=tok, seed=1)}


def _no_network(*args, **kwargs):
    raise AssertionError(f"a test tried to reach the network: {args[1:] if len(args) > 1 else args}")


def point_hub_at(monkeypatch, cache):
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))


@pytest.fixture
def hub(tmp_path, monkeypatch, models):
    """A Hub cache with repo org/tiny: main -> checkpoint a, tag v1 -> checkpoint b; offline, sockets refused."""
    import huggingface_hub.constants as constants

    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY", "TOKENIZERS_PARALLELISM"):
        monkeypatch.setenv(name, "1" if name.startswith("HF") else "error" if "VERB" in name else "false")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("PRT_SKIP_SOURCE_CHECK", raising=False)
    for target, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "create_connection"),
                         (socket, "getaddrinfo")):
        monkeypatch.setattr(target, name, _no_network)
    cache = tmp_path / "hub_cache"
    point_hub_at(monkeypatch, cache)
    old = add_to_hub_cache(cache, "org/tiny", models["b"], ref="v1")
    main = add_to_hub_cache(cache, "org/tiny", models["a"])
    return {"cache": cache, "main": main.name, "v1": old.name, "main_dir": main, "v1_dir": old}


def logits(lm):
    return np.asarray(lm.backend.to_numpy(lm.forward(lm.backend.asarray(IDS)).logits), dtype=np.float32)


# ------------------------------------------------------------------------------------------------ names
@pytest.mark.parametrize("name, expected", [
    ("org/name", ("org/name", None)),
    ("Org-1/na.me_2@main", ("Org-1/na.me_2", "main")),
    ("org/name@refs/pr/3", ("org/name", "refs/pr/3")),
    ("org/name@" + "a" * 40, ("org/name", "a" * 40)),
    ("name", None), ("a/b/c", None), ("/abs/path", None), ("./rel/path", None), ("org/na--me", None),
    ("org/na..me", None), ("org/name.git", None), ("org/-name", None), ("org/name@", None), ("org/name@a@b", None),
    ("org/name@../x", None), ("org /name", None), ("org/" + "n" * 97, None),
])
def test_parse_hub_id(name, expected):
    assert parse_hub_id(name) == expected


def test_a_path_object_is_never_a_hub_id(tmp_path):
    from pathlib import Path

    assert parse_hub_id(Path("org/name")) is None
    with pytest.raises(ModelLoadError, match="model directory not found"):
        resolve_model(Path("org/name-that-is-not-here"))


def test_import_prtcore_imports_no_huggingface_hub():
    out = run_python("import prtcore, prtcore.hub, sys\nprint('huggingface_hub' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


# ------------------------------------------------------------------------------------------------ resolving
def test_the_cache_is_what_huggingface_hub_reads(hub):
    from huggingface_hub import snapshot_download

    storage = repo_folder(hub["cache"], "org/tiny")
    assert (storage / "refs" / "main").read_text() == hub["main"]
    link = hub["main_dir"] / "model.safetensors"
    assert link.is_symlink() and not link.readlink().is_absolute() and link.resolve().parent == storage / "blobs"
    assert snapshot_download("org/tiny", allow_patterns=list(ALLOW_PATTERNS)) == str(hub["main_dir"])
    assert resolve_model("org/tiny") == hub["main_dir"]
    assert resolve_model("org/tiny@main") == resolve_model("org/tiny", revision="main") == hub["main_dir"]
    assert resolve_model("org/tiny@v1") == resolve_model(f"org/tiny@{hub['v1']}") == hub["v1_dir"]
    assert hub_origin(hub["main_dir"]) == ("org/tiny", hub["main"])
    assert resolved_commit("org/tiny") == hub["main"] and resolved_commit("org/tiny@v1") == hub["v1"]
    assert hub_origin(storage) is None and hub_origin(None) is None


def test_a_local_directory_wins(hub, models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(models["b"], tmp_path / "org" / "tiny")
    assert resolve_model("org/tiny").resolve() == (tmp_path / "org" / "tiny").resolve()
    assert resolved_commit("org/tiny") is None


def test_two_revisions_at_once_are_refused(hub):
    with pytest.raises(ConfigError, match="names revision 'v1', but revision='main'"):
        resolve_model("org/tiny@v1", revision="main")


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_from_pretrained_by_hub_id(hub, models, backend_name):
    from prtcore import PRTForCausalLM, get_backend

    backend = get_backend(backend_name)
    expected = {"a": logits(backend.load_base(models["a"])), "b": logits(backend.load_base(models["b"]))}
    for name, commit, weights in (("org/tiny", hub["main"], "a"), ("org/tiny@main", hub["main"], "a"),
                                  (f"org/tiny@{hub['v1']}", hub["v1"], "b"), ("org/tiny@v1", hub["v1"], "b")):
        model = PRTForCausalLM.from_pretrained(name, backend=backend)
        assert (model.target.hub_id, model.target.revision) == ("org/tiny", commit), name
        assert model.target.path == hub["main_dir" if weights == "a" else "v1_dir"]
        np.testing.assert_allclose(logits(model.target), expected[weights], atol=1e-5, err_msg=name)
    local = backend.load_base(models["a"])
    assert (local.hub_id, local.revision) == (None, None)


def test_a_hub_model_with_remote_code_is_refused_without_trust_remote_code(hub, models, tmp_path):
    pytest.importorskip("torch")
    from prtcore import get_backend

    if "torch" not in BACKENDS:
        pytest.skip("torch backend not installed")
    from prtcore.testing.checkpoints import copy_with_remote_code

    remote = copy_with_remote_code(models["a"], tmp_path / "remote", tmp_path / "pwned")
    add_to_hub_cache(hub["cache"], "org/remote", remote)
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        get_backend("torch").load_base("org/remote")
    assert not (tmp_path / "pwned").exists()


def test_only_safe_files_are_fetched(hub, monkeypatch):
    import huggingface_hub

    seen = []

    def fake(repo_id, **kwargs):
        seen.append(kwargs["allow_patterns"])
        return str(hub["main_dir"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    resolve_model("org/other")
    resolve_model("org/other", remote_code=True)
    plain, code = seen
    for pattern in ("*.bin", "*.pt", "*.pth", "*.pkl", "*.py", "*.ckpt", "*.h5", "*.msgpack"):
        assert pattern not in plain
    assert {"*.json", "*.safetensors", "*.jinja", "tokenizer.model", "README.md"} <= set(plain)
    assert set(code) - set(plain) == set(CODE_PATTERNS) == {"*.py"}


def test_a_repo_without_safetensors_is_refused(hub, models, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(models["a"] / "config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    add_to_hub_cache(hub["cache"], "org/pickled", pickled)
    with pytest.raises(ModelLoadError, match=r"org/pickled: .* has no \*\.safetensors weights"):
        resolve_model("org/pickled")


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


def test_offline_misses_are_one_line(hub):
    with pytest.raises(ModelLoadError) as e:
        resolve_model("org/missing")
    assert one_line(e).startswith("org/missing: no such local directory") and "HF_HUB_OFFLINE=0" in one_line(e)
    with pytest.raises(ModelLoadError) as e:
        resolve_model("org/tiny@v9")
    assert "revision 'v9' of org/tiny is not in the Hugging Face cache" in one_line(e)
    with pytest.raises(ArtifactError) as e:
        resolve_model("org/reward", what="reward artifact", error=ArtifactError)
    assert "the reward artifact is not in the Hugging Face cache" in one_line(e)
    with pytest.raises(ModelLoadError, match=r"^models/x\.y!: model directory not found \(and not a Hugging Face Hub id"):
        resolve_model("models/x.y!")


def test_an_incomplete_snapshot_is_one_line(hub):
    (hub["main_dir"] / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError) as e:
        resolve_model("org/tiny")
    assert "is incomplete" in one_line(e) and "tokenizer.json" in one_line(e) and "run once online" in one_line(e)


def _http_error(cls, status, message="boom\nsecond line"):
    import httpx2

    response = httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/org/x"))
    return cls(message, response=response)


def _hub_errors():
    from huggingface_hub import errors as hf

    connect = hf.LocalEntryNotFoundError("cannot find\nmore")
    connect.__cause__ = ConnectionError("connection refused")
    return {
        "not found": (_http_error(hf.RepositoryNotFoundError, 401), "no Hugging Face Hub repo org/x (if it is private, log in"),
        "gated": (_http_error(hf.GatedRepoError, 403), "is gated: accept its conditions on https://huggingface.co/org/x"),
        "revision": (_http_error(hf.RevisionNotFoundError, 404), "has no revision 'dev'"),
        "unauthorized": (_http_error(hf.HfHubHTTPError, 401), "refused access (HTTP 401): log in with `hf auth login` or set HF_TOKEN"),
        "server": (_http_error(hf.HfHubHTTPError, 503), "request failed (HTTP 503: boom)"),
        "no network": (connect, "the Hub cannot be reached (ConnectionError: connection refused): check the network"),
        "timeout": (TimeoutError("timed out"), "cannot reach the Hugging Face Hub (TimeoutError: timed out)"),
        "disk": (OSError(28, "No space left on device"), "cannot download from the Hugging Face Hub into"),
        "invalid": (hf.HFValidationError("bad id\nx"), "not a valid Hugging Face Hub id (bad id)"),
    }


@pytest.mark.parametrize("case", ["not found", "gated", "revision", "unauthorized", "server", "no network", "timeout",
                                  "disk", "invalid"])
def test_hub_errors_become_one_line(hub, monkeypatch, case):
    import huggingface_hub

    error, expected = _hub_errors()[case]

    def fail(repo_id, **kwargs):
        raise error

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    with pytest.raises(ModelLoadError) as e:
        resolve_model("org/x@dev" if case == "revision" else "org/x")
    assert expected in one_line(e) and one_line(e).startswith("org/x")


# ------------------------------------------------------------------------------------------------ rewards
def _linear_reward(backend, source, path):
    from prtcore.config import RewardConfig

    reward = backend.create_reward(RewardConfig(kind="linear"), source, seed=0)
    return reward.save(path, source=source, vocab_size=len(source.tokenizer))


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_reward_by_hub_id_records_and_finds_its_source_by_id(hub, models, tmp_path, monkeypatch, backend_name):
    from prtcore import PRTForCausalLM, RewardArtifact, get_backend, to_numpy

    backend = get_backend(backend_name)
    source = backend.load_base("org/tiny")
    reward_dir = _linear_reward(backend, source, tmp_path / "reward")
    recorded = RewardArtifact.open(reward_dir).source
    assert (recorded["hub_id"], recorded["revision"]) == ("org/tiny", hub["main"])
    assert recorded["path"] == str(hub["main_dir"]) and recorded["fingerprint"] == weights_fingerprint(models["a"])
    reward_commit = add_to_hub_cache(hub["cache"], "org/reward", reward_dir).name

    model = PRTForCausalLM.from_pretrained("org/tiny", "org/reward", backend=backend)
    assert model.sources[0] is model.target  # the source resolves to the target's snapshot: loaded once
    before = to_numpy(model(IDS).logprobs)
    assert RewardArtifact.open(f"org/reward@{reward_commit}").path == repo_folder(hub["cache"], "org/reward") / "snapshots" / reward_commit

    # another machine: another cache, where main has moved on; the recorded path is gone, the id@commit resolves
    moved = tmp_path / "moved_cache"
    shutil.move(hub["cache"], moved)
    point_hub_at(monkeypatch, moved)
    add_to_hub_cache(moved, "org/tiny", models["b"])  # main -> b
    model = PRTForCausalLM.from_pretrained("org/tiny", "org/reward", backend=backend)
    assert model.target.revision == hub["v1"] and model.sources[0].revision == hub["main"]
    assert model.sources[0].path == moved / "models--org--tiny" / "snapshots" / hub["main"]
    same_target = PRTForCausalLM.from_pretrained(f"org/tiny@{hub['main']}", "org/reward", backend=backend)
    np.testing.assert_allclose(to_numpy(same_target(IDS).logprobs), before, atol=1e-5)

    # the recorded commit is not in this cache: one line naming the reward, the id and what to do
    shutil.rmtree(moved / "models--org--tiny" / "snapshots" / hub["main"])
    with pytest.raises(ConfigError) as e:
        PRTForCausalLM.from_pretrained("org/tiny", "org/reward", backend=backend)
    assert f"org/tiny@{hub['main']}: no such local directory" in one_line(e) and "pass source=PATH" in one_line(e)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_a_lora_twin_by_hub_id(hub, tmp_path, backend_name):
    from prtcore import PRTForCausalLM, get_backend
    from prtcore.config import RewardConfig

    backend = get_backend(backend_name)
    source = backend.load_base("org/tiny")
    twin = backend.create_reward(RewardConfig(kind="twin", lora={"rank": 4, "num_layers": 1}), source, seed=0)
    add_to_hub_cache(hub["cache"], "org/twin", twin.save(tmp_path / "twin", source=source,
                                                          vocab_size=len(source.tokenizer)))
    model = PRTForCausalLM.from_pretrained("org/tiny@main", "org/twin", backend=backend)
    assert model.rewards and model.target.revision == hub["main"]
    assert np.isfinite(model(IDS).logprobs.tolist()).all()


def _local_reward(models, tmp_path, backend_name="torch"):
    from prtcore import get_backend

    backend = get_backend(backend_name)
    source_dir = tmp_path / "source"
    shutil.copytree(models["a"], source_dir)
    reward_dir = _linear_reward(backend, backend.load_base(source_dir), tmp_path / "reward")
    return backend, source_dir, reward_dir


def test_a_local_source_records_its_path_and_fingerprint(hub, models, tmp_path, monkeypatch):
    from prtcore import RewardArtifact

    if "torch" not in BACKENDS:
        pytest.skip("torch backend not installed")
    monkeypatch.chdir(tmp_path)
    backend, source_dir, reward_dir = _local_reward(models, tmp_path)
    recorded = RewardArtifact.open(reward_dir).source
    assert recorded["path"] == str(source_dir) and "hub_id" not in recorded and "revision" not in recorded
    assert recorded["fingerprint"] == weights_fingerprint(source_dir) == weights_fingerprint(models["a"])
    assert recorded["fingerprint"].startswith("st1:") and weights_fingerprint(models["b"]) != recorded["fingerprint"]


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_a_source_whose_weights_were_replaced_is_refused(hub, models, tmp_path, monkeypatch, backend_name):
    from prtcore import PRTForCausalLM

    backend, source_dir, reward_dir = _local_reward(models, tmp_path, backend_name)
    PRTForCausalLM.from_pretrained(models["a"], reward_dir, backend=backend)  # same weights: fine
    shutil.copy(models["b"] / "model.safetensors", source_dir / "model.safetensors")
    for kwargs in ({}, {"source": str(source_dir)}):  # recorded, or named explicitly: both checked
        with pytest.raises(ConfigError) as e:
            PRTForCausalLM.from_pretrained(models["a"], reward_dir, backend=backend, **kwargs)
        assert one_line(e).startswith(f"{source_dir}: the weights differ from those the reward {reward_dir} was "
                                      "trained on"), one_line(e)
    with pytest.raises(ConfigError, match="the weights differ"):  # another source by hub id: refused as well
        PRTForCausalLM.from_pretrained(models["a"], reward_dir, backend=backend, source="org/tiny@v1")
    PRTForCausalLM.from_pretrained(models["a"], reward_dir, backend=backend, source="org/tiny")  # a's weights
    monkeypatch.setenv("PRT_SKIP_SOURCE_CHECK", "1")
    PRTForCausalLM.from_pretrained(models["a"], reward_dir, backend=backend)


def test_an_old_artifact_without_fingerprint_keeps_loading(hub, models, tmp_path):
    from prtcore import PRTForCausalLM

    if "torch" not in BACKENDS:
        pytest.skip("torch backend not installed")
    backend, source_dir, reward_dir = _local_reward(models, tmp_path)
    config = json.loads((reward_dir / "prt_config.json").read_text())
    del config["source"]["fingerprint"]
    (reward_dir / "prt_config.json").write_text(json.dumps(config))
    shutil.copy(models["b"] / "model.safetensors", source_dir / "model.safetensors")
    model = PRTForCausalLM.from_pretrained(models["a"], reward_dir, backend=backend)
    assert str(model.sources[0].path) == str(source_dir)


# ------------------------------------------------------------------------------------------------ fingerprint
def test_the_fingerprint_reads_little_of_a_large_checkpoint(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [2 ** 29], "data_offsets": [0, 2 ** 31]}}).encode()
    big = tmp_path / "model.safetensors"
    with open(big, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + 2 ** 31)  # 2 GiB, sparse
    start = time.perf_counter()
    first = weights_fingerprint(tmp_path)
    assert time.perf_counter() - start < 1.0
    assert first == weights_fingerprint(tmp_path) and first.startswith("st1:")
    with open(big, "r+b") as f:  # the last sample ends at the file's end
        f.seek(-1, 2)
        f.write(b"\x01")
    assert weights_fingerprint(tmp_path) != first
    assert weights_fingerprint(tmp_path / "nothing") is None


# ------------------------------------------------------------------------------------------------ command line
def _cli(capsys, *argv):
    from prtcore.cli.main import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("backend_name", BACKENDS[:1])
def test_cli_names_models_and_rewards_by_hub_id(hub, models, tmp_path, capsys, backend_name):
    from prtcore import get_backend

    code, out, err = _cli(capsys, "generate", "--backend", backend_name, "--model", "org/tiny@v1", "--compose", "base",
                          "--prompt", "Hello", "--max-tokens", "3", "--ignore-chat-template")
    assert code == 0, err
    backend = get_backend(backend_name)
    reward_dir = _linear_reward(backend, backend.load_base("org/tiny"), tmp_path / "reward")
    add_to_hub_cache(hub["cache"], "org/reward", reward_dir)
    code, out, err = _cli(capsys, "generate", "--backend", backend_name, "--model", "org/tiny", "--reward",
                          "org/reward:0.5", "--prompt", "Hello", "--max-tokens", "3", "--ignore-chat-template")
    assert code == 0, err
    code, out, err = _cli(capsys, "train", "--backend", backend_name, "--model", "org/tiny", "--reward", "linear",
                          "--dry-run")
    assert code == 0 and json.loads(out)["trainable"] > 0, err

    for flags, expected in (
        (("--model", "org/unknown", "--compose", "base"), "prt generate: error: org/unknown: no such local directory"),
        (("--model", "org/tiny", "--reward", "org/no-reward"), "prt generate: error: org/no-reward: no such local"),
        (("--model", "org/tiny@nope", "--compose", "base"), "revision 'nope' of org/tiny is not in the Hugging Face"),
    ):
        code, out, err = _cli(capsys, "generate", "--backend", backend_name, *flags, "--prompt", "x")
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith("prt generate: error:") and expected in lines[0], lines[0]
