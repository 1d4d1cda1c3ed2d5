"""One backend's extra installed alone (`pip install "prtcore[mlx,serve]"` or `"prtcore[torch,serve]"`): the other
framework is absent, and the backend trains, generates, chats, evaluates, explains, serves and passes the
conformance checks on a tiny checkpoint made on the spot.

Runs only where PRT_TEST_EXTRA_ALONE names the extra installed alone (`make test-extras` sets it in each of its
fresh venvs); skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

EXTRA = os.environ.get("PRT_TEST_EXTRA_ALONE", "")
# The distributions each extra brings, which the other extra's install must not have. (Not find_spec: under
# pytest the test folders tests/mlx and tests/torch are importable as namespace packages `mlx` and `torch`.)
FRAMEWORKS = {"mlx": ("mlx", "mlx-lm", "mlx-vlm"), "torch": ("torch", "peft", "accelerate")}
pytestmark = pytest.mark.skipif(EXTRA not in FRAMEWORKS,
                                reason="PRT_TEST_EXTRA_ALONE (mlx or torch) is not set: no venv with one extra alone")

PRT = str(Path(sys.executable).with_name("prt"))
TIMEOUT = 600
PROMPT = "What is the capital of Avalon?"


def env() -> dict:
    out = {k: v for k, v in os.environ.items() if not k.startswith("PRT_")}
    out.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    return out


def prt(*args, input: str | None = None) -> subprocess.CompletedProcess:
    run = subprocess.run([PRT, *map(str, args)], capture_output=True, text=True, input=input, timeout=TIMEOUT, env=env())
    assert run.returncode == 0, f"prt {' '.join(map(str, args))} failed ({run.returncode}):\n{run.stderr[-3000:]}"
    return run


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A tokenizer, a tiny llama, question/answer data and a LoRA-twin reward trained on it with `prt train`."""
    from prtcore.testing.checkpoints import make_tiny_checkpoint, make_tokenizer

    root = tmp_path_factory.mktemp("extra")
    names = ["Avalon", "Corvia", "Mira", "Dunmere", "Brightwater", "Elara"]
    tok = make_tokenizer(root / "tok", [f"What is the capital of {a}? The capital is {a}." for a in names] * 4,
                         vocab_size=300)
    rows = [{"prompt": f"What is the capital of {a}?", "completion": f"The capital is {b}."}
            for a in names for b in names if a != b]
    data = root / "data"
    data.mkdir()
    for split, part in (("train", rows[:20]), ("valid", rows[20:25]), ("test", rows[25:])):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    base = make_tiny_checkpoint(root / "base", "llama", tokenizer_dir=tok, seed=0)
    reward = root / "reward"
    prt("train", "--backend", EXTRA, "--model", base, "--data", data, "--output-dir", reward, "--reward", "twin",
        "--lora-r", "4", "--num-layers", "2", "--iters", "8", "--batch-size", "4", "--learning-rate", "1e-2",
        "--mask-prompt", "--steps-per-report", "2", "--steps-per-eval", "4", "--val-batches", "2", "--seed", "0")
    return {"root": root, "base": base, "data": data, "reward": reward}


def installed(name: str) -> bool:
    try:
        distribution(name)
    except PackageNotFoundError:
        return False
    return True


def test_the_other_framework_is_not_installed():
    other = next(name for name in FRAMEWORKS if name != EXTRA)
    assert [name for name in FRAMEWORKS[other] if installed(name)] == []
    assert all(installed(name) for name in FRAMEWORKS[EXTRA])


def test_import_prtcore_imports_no_framework_and_only_this_backend_is_installed():
    code = ("import sys, prtcore; from prtcore.plugins import installed_backend_names; "
            "print(installed_backend_names(), sorted(m for m in ('mlx', 'torch', 'transformers') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env())
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"['{EXTRA}'] []"


def test_train_writes_the_reward_and_its_loss_curve(ws):
    config = json.loads((ws["reward"] / "prt_config.json").read_text())
    assert config["reward"]["kind"] == "twin"
    assert (ws["reward"] / "loss_curve.png").stat().st_size > 0  # matplotlib comes with the extra
    losses = [json.loads(line) for line in (ws["reward"] / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in row for row in losses)


def test_generate_chat_eval_and_explain_use_the_reward(ws):
    model = ["--backend", EXTRA, "--model", ws["base"], "--reward", ws["reward"]]
    generated = prt("generate", *model, "--prompt", PROMPT, "--max-tokens", "8")
    assert generated.stdout.strip()
    prt("chat", *model, "--max-tokens", "4", input="hello there\n/exit\n")
    prt("eval", *model, "--data", ws["data"], "--split", "test", "--output", ws["root"] / "eval.json")
    scores = json.loads((ws["root"] / "eval.json").read_text())
    assert "prt" in json.dumps(scores) and "base" in json.dumps(scores)
    prt("explain", *model, "--prompt", PROMPT, "--continuation", " The capital is Mira.", "--json",
        ws["root"] / "explain.json")
    assert json.loads((ws["root"] / "explain.json").read_text())


def test_serve_starts_and_lists_the_model(ws):
    proc = subprocess.Popen([PRT, "serve", "--backend", EXTRA, "--model", str(ws["base"]), "--reward", str(ws["reward"]),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        line = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(300)
        assert line and line[0], f"prt serve did not start: {proc.stderr.read()[-3000:] if proc.poll() is not None else ''}"
        url = re.search(r"(http://\S+)/v1 serves", line[0]).group(1)
        with urllib.request.urlopen(url + "/v1/models", timeout=60) as response:
            models = json.loads(response.read())
        assert [m["id"] for m in models["data"]][0] == "base"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_conformance_passes_on_this_backend(tmp_path):
    run = prt("conformance", "--family", "llama", "--backend", EXTRA, "--quiet", "--report", tmp_path / "report.json")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["summary"].get("pass", 0) > 0, run.stdout
