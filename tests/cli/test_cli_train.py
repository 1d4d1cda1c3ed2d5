"""`prt train`: reward and SFT runs end to end, interruption and exact resume, dry runs, YAML configs."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import BACKENDS, REWARD_ARGS, run_all, start, train_command
from safetensors.numpy import load_file

from prtcore.artifacts import RewardArtifact
from prtcore.cli.main import main

SUMMARY_KEYS = {"best_val_loss", "time_s", "tokens_per_second", "peak_memory_gb", "artifact_bytes", "steps"}


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_reward_run_writes_artifact_progress_metrics_curve_and_summary(trained, backend):
    out, run = trained[backend]["reward"], trained[backend]["reward_run"]
    artifact = RewardArtifact.open(out)
    assert artifact.kind == "twin" and artifact.config.lora.rank == 4
    assert RewardArtifact.open(out / "best").meta["training"]["val_loss"] > 0
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    records = metrics(out)
    assert [r["iteration"] for r in records if "train_loss" in r] == list(range(2, 17, 2))
    assert [r["iteration"] for r in records if "val_loss" in r] == [0, 8, 16]  # 0: before training, as mlx-lm
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary) and summary["steps"] == 16 and summary["artifact_bytes"] > 0
    assert json.loads(run.stdout)["best_val_loss"] == summary["best_val_loss"]
    # stderr is not a terminal here: one plain line per report, then the summary line
    lines = run.stderr.strip().splitlines()
    assert "step 2/16  loss" in run.stderr and "tok/s" in run.stderr and "\r" not in run.stderr
    assert lines[-2].startswith("done: 16 steps") and "best val loss" in lines[-2] and "artifact" in lines[-2]
    assert lines[-1].startswith(f"prt train: wrote reward artifact {out};")  # then what was written, and where


def _checkpointed(out: Path, backend: str) -> bool:
    if backend == "mlx":
        return (out / "checkpoint" / "state.json").exists()
    return any((p / "trainer_state.json").exists() for p in (out / "checkpoint").glob("checkpoint-*"))


def _interruptible() -> None:
    """In the child: Ctrl-C handled as in a terminal (a shell runs background jobs with SIGINT ignored, and Python
    then installs no KeyboardInterrupt handler), and a low priority, so that on a loaded machine the test still
    sees the first checkpoint before the run ends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.nice(19)


SIGNALS = {b: ("SIGINT" if i % 2 == 0 else "SIGKILL") for i, b in enumerate(BACKENDS)}


@pytest.fixture(scope="module")
def interrupted(ws, trained, tmp_path_factory):
    """Per backend, the reference run's command started afresh and interrupted once its first checkpoint is on
    disk (SIGINT on the first backend, SIGKILL on the second), then resumed with --resume. Backends run side by
    side. Returns backend -> {"out", "signal", "returncode", "stderr", "finished", "resumed"}."""
    root = tmp_path_factory.mktemp("resume")
    procs = {b: start(*train_command(ws, b, root / b, REWARD_ARGS), preexec_fn=_interruptible) for b in BACKENDS}
    signalled: set[str] = set()
    deadline = time.monotonic() + 180
    while len(signalled) < len(procs):
        for backend, proc in procs.items():
            if backend in signalled:
                continue
            if _checkpointed(root / backend, backend):
                proc.send_signal(getattr(signal, SIGNALS[backend]))
                signalled.add(backend)
            elif proc.poll() is not None:
                pytest.fail(f"{backend}: the run ended before its first checkpoint:\n{proc.communicate()[1][-2000:]}")
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    out = {}
    for backend, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        out[backend] = {"out": root / backend, "signal": SIGNALS[backend], "returncode": proc.returncode,
                        "stderr": err, "finished": (root / backend / "prt_config.json").exists()}
    resumed = run_all([train_command(ws, b, root / b, REWARD_ARGS + ["--resume"]) for b in BACKENDS])
    for backend, run in zip(BACKENDS, resumed):
        out[backend]["resumed"] = run
    return out


def test_interrupted_run_resumes_to_the_uninterrupted_weights(ws, trained, interrupted, backend, capsys):
    run = interrupted[backend]
    out = run["out"]
    assert not run["finished"], "the run finished before it was interrupted"
    if run["signal"] == "SIGKILL":
        assert run["returncode"] == -signal.SIGKILL
    else:
        assert run["returncode"] == 130, run["stderr"]
        assert "rerun with --resume" in run["stderr"] and "interrupted" in run["stderr"].splitlines()[-1]
    assert "done: 16 steps" in run["resumed"].stderr
    want = load_file(str(trained[backend]["reward"] / "adapter_model.safetensors"))
    got = load_file(str(out / "adapter_model.safetensors"))
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=0 if backend == "mlx" else 1e-6, err_msg=name)
    steps = [r["iteration"] for r in metrics(out) if "train_loss" in r]
    assert steps == list(range(2, 17, 2))  # the kept reports of the first run, then the resumed run's, no repeats

    # a run never starts over a checkpoint unless told: a one-line error (in-process, before any loading)
    assert main([str(a) for a in train_command(ws, backend, out, REWARD_ARGS)]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1


def test_sft_lora_writes_the_native_adapter_layout(trained, backend, ws):
    out = trained[backend]["sft_lora"]
    config = json.loads((out / "adapter_config.json").read_text())
    if backend == "mlx":
        assert {"adapters.safetensors", "adapter_config.json"} <= {p.name for p in out.iterdir()}
        assert config["fine_tune_type"] == "lora" and config["lora_parameters"]["rank"] == 4
        assert config["num_layers"] == 2
    else:
        assert (out / "adapter_model.safetensors").exists() and config["peft_type"] == "LORA" and config["r"] == 4
    assert config.get("model", config.get("base_model_name_or_path")) == str(Path(ws["source"]).resolve())
    for sub in ("best", "checkpoint"):
        assert (out / sub).is_dir()
    assert (out / "best" / "adapter_config.json").exists()
    assert json.loads((out / "summary.json").read_text())["fine_tune_type"] == "lora"
    records = metrics(out)
    first_report = next(r for r in records if "train_loss" in r)  # records[0]: the validation before training
    assert first_report["train_loss"] > min(r["val_loss"] for r in records if "val_loss" in r)


def test_sft_lora_adapter_loads_with_its_own_library(trained, backend, ws):
    """mlx: mlx_lm.load(adapter_path=...) gives the logits of load_base(ADAPTER); torch: plain peft does."""
    import prtcore

    out = trained[backend]["sft_lora"]
    adapted = prtcore.get_backend(backend).load_base(out, adapter_base=ws["source"])
    ids = [[5, 17, 42, 8, 99, 23]]
    got = np.asarray(prtcore.to_numpy(adapted.forward(ids).logits))
    if backend == "mlx":
        import mlx.core as mx
        from mlx_lm import load

        model, _ = load(str(ws["source"]), adapter_path=str(out))
        want = np.asarray(model(mx.array(ids)).astype(mx.float32))
    else:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(str(ws["source"]), dtype=torch.float32)
        with torch.no_grad():
            want = PeftModel.from_pretrained(base, str(out)).eval()(input_ids=torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)
    base_logits = np.asarray(prtcore.to_numpy(prtcore.get_backend(backend).load_base(ws["source"]).forward(ids).logits))
    assert np.abs(got - base_logits).max() > 1e-3  # the adapter changed the model


def test_sft_full_checkpoint_loads_on_every_backend(trained, backend, ws):
    import prtcore

    out = trained[backend]["sft_full"]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    ids = [[5, 17, 42, 8]]
    logits = {b: np.asarray(prtcore.to_numpy(prtcore.get_backend(b).load_base(out).forward(ids).logits))
              for b in BACKENDS}
    for b in BACKENDS:
        np.testing.assert_allclose(logits[b], logits[backend], atol=2e-4, rtol=1e-4)
    base = np.asarray(prtcore.to_numpy(prtcore.get_backend(backend).load_base(ws["source"]).forward(ids).logits))
    assert np.abs(logits[backend] - base).max() > 1e-3


def test_dry_run_counts_without_training(ws, backend, tmp_path, capsys):
    assert main(["train", "--backend", backend, "--model", str(ws["source"]), "--reward", "twin", "--lora-r", "4",
                 "--num-layers", "1", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trainable"] > 0 and out["total"] > out["trainable"] and out["artifact_bytes"] == 4 * out["trainable"]
    yaml = tmp_path / "sft.yaml"
    yaml.write_text(f"model: {ws['source']}\nmethod: sft\nfine_tune_type: full\n")
    assert main(["train", "--backend", backend, "--config", str(yaml), "--dry-run"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["method"] == "sft" and full["trainable"] == full["total"]
    assert not (tmp_path / "out").exists()


def test_yaml_config_in_mlx_lm_form_with_flags_overriding(ws, tmp_path):
    """The mlx-lm keys (lora_parameters, adapter_path, lr_schedule, train) are read; a flag beats the file."""
    from prtcore.cli.main import build_parser
    from prtcore.cli.train import build_configs

    yaml = tmp_path / "run.yaml"
    yaml.write_text(f"model: {ws['source']}\ndata: {ws['data']}\nadapter_path: {tmp_path / 'out'}\ntrain: true\n"
                    "reward: twin\nlora_parameters:\n  rank: 16\n  scale: 10.0\n  keys: [q_proj, v_proj]\n"
                    "iters: 50\nlearning_rate: 1e-4\nlr_schedule:\n  name: cosine_decay\n  warmup: 5\n"
                    "lambda: 2.0\n")
    args = build_parser().parse_args(["train", "--config", str(yaml), "--iters", "7", "--lora-r", "2"])
    run, reward, training, lora = build_configs(args)
    assert run["output_dir"] == str(tmp_path / "out") and reward.kind == "twin" and reward.lam == 2.0
    assert (lora.rank, lora.scale, lora.keys) == (2, 10.0, ("q_proj", "v_proj"))
    assert (training.iters, training.learning_rate, training.lr_schedule, training.warmup_steps) == (7, 1e-4, "cosine", 5)
