"""`prt serve` with the model and a reward named by Hugging Face Hub id, resolved offline from a local Hub cache
(prtcore.testing.hub): the served names are the repos' names, and the answers those of the same models loaded
from their directories."""

from __future__ import annotations

import pytest

from prtcore.cli.main import build_parser, main
from prtcore.cli.serve import load_served
from serve_testutil import BACKENDS, MODEL, call, start_server

pytest.importorskip("huggingface_hub")
ONE = "torch" if "torch" in BACKENDS else BACKENDS[0]
PROMPT = "The capital of Avalon is"


@pytest.fixture
def hub(tmp_path, monkeypatch, ckpts, rewards):
    """A Hub cache holding org/target and org/<the linear reward's directory name>; offline."""
    import huggingface_hub.constants as constants

    from prtcore.testing.hub import add_to_hub_cache

    cache = tmp_path / "hub_cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    lin = rewards[ONE]["lin"]
    add_to_hub_cache(cache, f"org/{MODEL}", ckpts["target"])
    add_to_hub_cache(cache, f"org/{lin.name}", lin)
    return {"model": f"org/{MODEL}", "reward": f"org/{lin.name}", "name": lin.name}


def test_hub_ids_serve_as_their_directories_do(hub, ckpts, references):
    flags = ["serve", "--backend", ONE, "--model", hub["model"], "--reward", f"{hub['reward']}:0.5",
             "--source", str(ckpts["source"])]
    served = load_served(build_parser().parse_args(flags))
    assert (served.name, served.names, served.prt.lams) == (MODEL, [hub["name"]], [0.5])
    want = references[ONE].answer("completion", PROMPT, rewards=[f"{hub['name']}:0.5"], max_tokens=8)[0]
    with start_server(served) as server:
        status, body = call(server.url, "/v1/completions", {"model": MODEL, "prompt": PROMPT, "max_tokens": 8})
    assert status == 200 and body["choices"][0]["text"] == want


def test_a_hub_id_not_in_the_cache_is_one_line(hub, capsys):
    assert main(["serve", "--backend", ONE, "--model", hub["model"], "--reward", "org/no-reward"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("prt serve: error: ") and "org/no-reward" in err, err
