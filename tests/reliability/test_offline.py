"""Nothing reaches the network unless a Hub id asks for it: a reward artifact directory missing the files of its
twin is one line naming the file, at once, with no connection attempted, even online (HF_HUB_OFFLINE unset) and
under a relative path shaped like a Hub id (`rewards/twin`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from .conftest import BACKENDS, env

# `prt ARGS` with every way out to the network refused and counted
GUARDED_PRT = """
import socket, sys
tried = []
def refuse(*args, **kwargs):
    tried.append(args)
    raise OSError("network blocked by the test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
from prtcore.cli.main import main
code = main(sys.argv[1:])
sys.stderr.write(f"connections attempted: {len(tried)}\\n")
sys.exit(code)
"""


@pytest.fixture(scope="module")
def twins(rws, tmp_path_factory):
    """backend -> an untrained LoRA twin reward artifact on the tiny source."""
    from prtcore.config import LoRAConfig, RewardConfig
    from prtcore.plugins import get_backend

    root, out = tmp_path_factory.mktemp("twins"), {}
    for name in BACKENDS:
        backend = get_backend(name)
        source = backend.load_base(rws["source"])
        config = RewardConfig(kind="twin", lora=LoRAConfig(rank=2, num_layers=1))
        out[name] = backend.create_reward(config, source).save(root / name, source=source, vocab_size=source.vocab_size)
    return out


def broken_copy(twin, cwd, *, remove=None, rename=None):
    """A copy of `twin` at cwd/rewards/twin without file `remove`, or with weights file (old, new) `rename`d."""
    path = cwd / "rewards" / "twin"
    shutil.copytree(twin, path)
    if remove:
        (path / remove).unlink()
    if rename:
        (path / rename[0]).rename(path / rename[1])
        meta = json.loads((path / "prt_config.json").read_text())
        meta["weights"] = [rename[1] if w == rename[0] else w for w in meta["weights"]]
        (path / "prt_config.json").write_text(json.dumps(meta))


def guarded_generate(rws, backend, cwd, monkeypatch) -> subprocess.CompletedProcess:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # tests/conftest.py sets the first for the suite
        monkeypatch.delenv(var, raising=False)
    online = {k: v for k, v in env().items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    online["HF_HOME"] = str(cwd / "hf-home")  # an empty Hub cache
    argv = ["generate", "--backend", backend, "--model", rws["source"], "--reward", "rewards/twin", "--prompt", "hi",
            "--max-tokens", "2"]
    return subprocess.run([sys.executable, "-c", GUARDED_PRT, *map(str, argv)], cwd=cwd, env=online,
                          capture_output=True, text=True, timeout=120)


CASES = [(b, {"remove": f}, f) for b in BACKENDS for f in ("adapter_config.json", "adapter_model.safetensors")]
# mlx-lm's name for the weights: mlx reads that layout, PEFT (torch) does not, and asked the Hub for its own
CASES += [("torch", {"rename": ("adapter_model.safetensors", "adapters.safetensors")}, "adapter_model.safetensors")]


@pytest.mark.parametrize("backend, damage, missing", [c for c in CASES if c[0] in BACKENDS],
                         ids=lambda v: v if isinstance(v, str) else next(iter(v)))
def test_a_local_twin_missing_a_file_is_one_line_without_network(rws, twins, tmp_path, monkeypatch, backend, damage,
                                                                  missing):
    broken_copy(twins[backend], tmp_path, **damage)
    proc = guarded_generate(rws, backend, tmp_path, monkeypatch)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert lines[-1] == "connections attempted: 0", proc.stderr
    errors = [line for line in lines if not line.startswith("prt generate: warning:")][:-1]
    assert len(errors) == 1 and errors[0].startswith("prt generate: error: ") and missing in errors[0], proc.stderr
    assert not os.path.exists(tmp_path / "hf-home" / "hub")
