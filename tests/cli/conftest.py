"""Shared fixtures of the `prt` command tests: one tokenizer, two tiny bases, a data set, and the training runs
every other test reads (made once per session, two subprocesses at a time).

Every command runs as a real subprocess: the `prt` console script next to sys.executable. Subprocesses run with
one intra-op thread each (tiny models gain nothing from more, and two run side by side on two cores).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prtcore.plugins import installed_backend_names

PRT = str(Path(sys.executable).with_name("prt"))
BACKENDS = [b for b in ("mlx", "torch") if b in installed_backend_names()]
TIMEOUT = 300

NAMES = ["Avalon", "Corvia", "Mira", "Dunmere", "Brightwater", "Elara", "Fenwick", "Garnet"]


def env() -> dict:
    out = {k: v for k, v in os.environ.items() if not k.startswith("PRT_")}
    out.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return out


def prt(*args, input: str | None = None, timeout: int = TIMEOUT, check: bool = True, cwd=None) -> subprocess.CompletedProcess:
    """Run `prt ARGS` and return the finished process (asserting exit code 0 unless check=False)."""
    run = subprocess.run([PRT, *map(str, args)], capture_output=True, text=True, input=input, timeout=timeout,
                         env=env(), cwd=cwd)
    if check:
        assert run.returncode == 0, f"prt {' '.join(map(str, args))} failed ({run.returncode}):\n{run.stderr[-3000:]}"
    return run


def start(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([PRT, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(), **kwargs)


def run_all(commands: list[list], parallel: int = 2, inputs: list | None = None) -> list[subprocess.CompletedProcess]:
    """Run several `prt` commands, `parallel` at a time (with `inputs` on stdin); results in order, each asserted
    to exit 0. Output goes to temporary files, so a chatty command never blocks on a full pipe."""
    import tempfile

    inputs = inputs or [None] * len(commands)
    pending = list(enumerate(commands))
    running: dict[int, tuple] = {}
    results: dict[int, subprocess.CompletedProcess] = {}
    deadline = time.monotonic() + TIMEOUT
    while pending or running:
        while pending and len(running) < parallel:
            index, args = pending.pop(0)
            stdin, out, err = (tempfile.TemporaryFile("w+", encoding="utf-8") for _ in range(3))
            stdin.write(inputs[index] or "")
            stdin.seek(0)
            proc = subprocess.Popen([PRT, *map(str, args)], stdin=stdin, stdout=out, stderr=err, text=True, env=env())
            running[index] = (proc, args, (stdin, out, err))
        for index, (proc, args, files) in list(running.items()):
            if proc.poll() is None:
                continue
            texts = []
            for f in files[1:]:
                f.seek(0)
                texts.append(f.read())
            for f in files:
                f.close()
            results[index] = subprocess.CompletedProcess(args, proc.returncode, *texts)
            del running[index]
            assert proc.returncode == 0, f"prt {' '.join(map(str, args))} failed ({proc.returncode}):\n{texts[1][-3000:]}"
        if time.monotonic() > deadline:
            for proc, _, _ in running.values():
                proc.kill()
            raise TimeoutError("subprocesses did not finish in time")
        time.sleep(0.02)
    return [results[i] for i in range(len(commands))]


def qa_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.sample(NAMES, 2)
        rows.append({"prompt": f"What is the capital of {a}?", "completion": f"The capital is {b}."})
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def ws(tmp_path_factory):
    """Paths: tok, source (tiny llama), target (another shape, head padded by 16 rows), data (train/valid/test)."""
    from prtcore.testing.checkpoints import make_tiny_checkpoint, make_tokenizer

    root = tmp_path_factory.mktemp("cli")
    corpus = [f"What is the capital of {a}? The capital is {a}." for a in NAMES] * 4
    tok = make_tokenizer(root / "tok", corpus, vocab_size=300)
    data = root / "data"
    rows = qa_rows(56, seed=0)
    write_jsonl(data / "train.jsonl", rows[:40])
    write_jsonl(data / "valid.jsonl", rows[40:48])
    write_jsonl(data / "test.jsonl", rows[48:])
    return {
        "root": root, "tok": tok, "data": data,
        "source": make_tiny_checkpoint(root / "source", "llama", tokenizer_dir=tok, seed=0),
        "target": make_tiny_checkpoint(root / "target", "llama", tokenizer_dir=tok, seed=1, hidden_size=96,
                                       num_hidden_layers=3, intermediate_size=160, extra_vocab_rows=16),
    }


# One reward run per backend doubles as the uninterrupted reference of the resume test: keep these in step.
REWARD_ARGS = ["--reward", "twin", "--lora-r", "4", "--num-layers", "2", "--iters", "16", "--batch-size", "4",
               "--learning-rate", "1e-2", "--mask-prompt", "--steps-per-report", "2", "--steps-per-eval", "8",
               "--save-every", "4", "--val-batches", "2", "--seed", "3",
               "--entropy-coeff", "0.05"]  # with the entropy term: its gradients go through every command below
SFT_ARGS = ["--method", "sft", "--iters", "8", "--batch-size", "4", "--learning-rate", "5e-3", "--mask-prompt",
            "--steps-per-report", "2", "--steps-per-eval", "4", "--save-every", "4", "--val-batches", "2"]


def train_command(ws, backend, out, extra) -> list:
    return ["train", "--backend", backend, "--model", ws["source"], "--data", ws["data"], "--output-dir", out, *extra]


@pytest.fixture(scope="session")
def trained(ws):
    """Per backend: "reward" (a LoRA twin), "sft_lora" and "sft_full" output directories, and each run's process."""
    jobs, keys = [], []
    for backend in BACKENDS:
        for name, extra in (("reward", REWARD_ARGS), ("sft_lora", SFT_ARGS + ["--lora-r", "4", "--num-layers", "2"]),
                            ("sft_full", SFT_ARGS + ["--fine-tune-type", "full"])):
            out = ws["root"] / f"{backend}-{name}"
            jobs.append(train_command(ws, backend, out, extra))
            keys.append((backend, name, out))
    results = run_all(jobs)
    out: dict = {b: {} for b in BACKENDS}
    for (backend, name, path), proc in zip(keys, results):
        out[backend][name] = path
        out[backend][name + "_run"] = proc
    return out


PROMPT = "What is the capital of Avalon?"


def use_commands(ws, trained, backend) -> dict[str, dict]:
    """The generate / chat / eval / explain runs of one backend: name -> {"args", "input"}."""
    reward, files = trained[backend]["reward"], ws["root"] / f"uses-{backend}"
    files.mkdir(exist_ok=True)
    model = ["--backend", backend, "--model", ws["target"]]
    out = {
        "generate": {"args": ["generate", *model, "--reward", f"{reward}:0.5", "--reward", reward, "--prompt", "-",
                              "--max-tokens", "12", "--temp", "0.8", "--top-p", "0.9", "--top-k", "50", "--min-p",
                              "0.01", "--seed", "7", "--system-prompt", "Answer briefly."], "input": PROMPT},
        "eft": {"args": ["generate", *model, "--compose", "eft", "--ft", trained[backend]["sft_lora"], "--source",
                         ws["source"], "--prompt", PROMPT, "--max-tokens", "6"]},
        "chat": {"args": ["chat", *model, "--reward", reward, "--max-tokens", "4"],
                 "input": "hello there\n\nwhat is the capital?\n/exit\nnot read\n"},
        # EFT here composes the full fine-tune (generate composes the LoRA adapter)
        "eval": {"args": ["eval", "--backend", backend, "--model", ws["source"], "--reward", reward, "--ft",
                          trained[backend]["sft_full"], "--source", ws["source"], "--data", ws["data"], "--split",
                          "valid", "--output", files / "eval.json"], "files": {"json": files / "eval.json"}},
        "explain": {"args": ["explain", *model, "--reward", reward, "--prompt", "What is <b>Avalon</b> & the capital?",
                             "--continuation", " The capital is Mira.", "--html", files / "x.html", "--json",
                             files / "x.json", "--color", "always"],
                    "files": {"html": files / "x.html", "json": files / "x.json"}},
    }
    if backend == "mlx":
        out["max_kv"] = {"args": ["generate", *model, "--reward", reward, "--prompt", PROMPT + " " + PROMPT,
                                  "--max-tokens", "6", "--max-kv-size", "8"]}
    return out


@pytest.fixture(scope="session")
def uses(ws, trained):
    """Every backend's use_commands, run two at a time: backend -> name -> CompletedProcess (each exited 0)."""
    commands = {(b, name): spec for b in BACKENDS for name, spec in use_commands(ws, trained, b).items()}
    results = run_all([spec["args"] for spec in commands.values()], inputs=[spec.get("input") for spec in commands.values()])
    out: dict = {b: {} for b in BACKENDS}
    for (backend, name), spec, proc in zip(commands, commands.values(), results):
        proc.files = spec.get("files", {})
        out[backend][name] = proc
    return out


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS)
