"""`prt generate`, `prt chat`, `prt eval` and `prt explain` as subprocesses (the `uses` fixture runs them, two at a
time, on the runs of the `trained` fixture), plus in-process checks of what they must have done."""

from __future__ import annotations

import html
import io
import json
import math
import re

import pytest
from conftest import BACKENDS, PROMPT, use_commands

from prtcore.cli.main import build_parser, main


def test_generate_streams_with_several_rewards_and_stdin_prompt(ws, trained, uses, backend):
    """The subprocess prints what the same settings generate in-process (seeded sampling, two rewards, λ)."""
    from prtcore.cli.common import load_model, prompt_ids, sampling_kwargs

    run = uses[backend]["generate"]
    args = build_parser().parse_args([str(a) for a in use_commands(ws, trained, backend)["generate"]["args"]])
    model = load_model(args)
    assert model.lams[0] == 0.5 and len(model.rewards) == 2
    want = "".join(model.stream(prompt_ids(model, PROMPT, args), **sampling_kwargs(args, model)))
    assert want.strip() and run.stdout == want + "\n"


def test_generate_max_kv_size(ws, trained, uses, backend, capsys):
    if backend == "mlx":  # a rotating cache shorter than the prompt
        assert uses[backend]["max_kv"].stdout.strip()
        return
    # no rotating cache in this backend: a clear error, not a silent no-op (in-process: it fails before loading)
    args = ["generate", "--backend", backend, "--model", ws["target"], "--reward", trained[backend]["reward"],
            "--prompt", PROMPT, "--max-kv-size", "8"]
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert "--max-kv-size" in err and "mlx" in err and len(err.strip().splitlines()) == 1


def test_generate_eft_with_the_sft_lora_adapter(uses, backend):
    assert uses[backend]["eft"].stdout.strip()


def test_chat_reads_scripted_stdin_until_exit(uses, backend):
    run = uses[backend]["chat"]
    assert run.stdout.count("\n\n") >= 2 and run.stderr == ""


def test_chat_keeps_the_history_through_the_template(ws, trained, monkeypatch, capsys):
    """In-process, with the model's stream spied on: the second turn's prompt holds the first exchange (and the
    end of input ends the chat)."""
    from prtcore.cli import chat, common

    backend = BACKENDS[0]
    prompts = []
    real_load = common.load_model

    def load(args, compose=None):
        model = real_load(args, compose)
        real_stream = model.stream

        def stream(ids, **kwargs):
            prompts.append(model.tokenizer.decode(ids))
            yield from real_stream(ids, **kwargs)

        model.stream = stream
        return model

    monkeypatch.setattr(chat, "load_model", load)
    monkeypatch.setattr("sys.stdin", io.StringIO("first question\nsecond question\n"))
    args = build_parser().parse_args(["chat", "--backend", backend, "--model", str(ws["target"]), "--reward",
                                      str(trained[backend]["reward"]), "--max-tokens", "3",
                                      "--system-prompt", "Be brief."])
    assert chat.run(args) == 0
    first_reply = capsys.readouterr().out.split("\n\n")[0]
    assert len(prompts) == 2
    assert prompts[0].count("<|im_start|>user") == 1 and "Be brief." in prompts[0]
    assert "first question" in prompts[1] and "second question" in prompts[1]
    assert prompts[1].count("<|im_start|>assistant") == 2 and first_reply in prompts[1]


def test_eval_base_prt_and_eft_on_one_target(uses, backend):
    run = uses[backend]["eval"]
    table = run.stdout.splitlines()
    assert [line.split()[0] for line in table[3:]] == ["base", "prt", "eft"]
    report = json.loads(run.files["json"].read_text())
    results = report["results"]
    for name in ("base", "prt", "eft"):
        r = results[name]
        assert r["examples"] == 8 and r["tokens"] > 0 and 0.0 <= r["exact_match"] <= 1.0
        assert r["perplexity"] == pytest.approx(math.exp(r["nll"]))
    assert results["prt"]["nll"] < results["base"]["nll"] - 0.3  # the reward learned the answers' format
    assert results["eft"]["nll"] < results["base"]["nll"]
    assert len(report["generations"]) == 8 and set(report["generations"][0]["outputs"]) == {"base", "prt", "eft"}


def test_explain_terminal_html_and_json(uses, backend):
    run = uses[backend]["explain"]
    assert "\x1b[" in run.stdout and "base top-3" in run.stdout
    rows = json.loads(run.files["json"].read_text())["tokens"]
    assert "".join(r["text"] for r in rows) == " The capital is Mira."
    for r in rows:
        assert 0 < r["base_prob"] <= 1 and 0 < r["prt_prob"] <= 1 and len(r["base_top"]) == len(r["prt_top"]) == 3
        assert r["prt_top"][0]["prob"] >= r["prt_top"][1]["prob"]
        assert r["delta_logprob"] == pytest.approx(math.log(r["prt_prob"] / r["base_prob"]), abs=1e-6)
    page = run.files["html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http" not in page
    assert html.escape("What is <b>Avalon</b> & the capital?") in page and "<b>Avalon</b>" not in page


def test_explain_generates_the_continuation_when_none_is_given(ws, trained, capsys):
    backend = BACKENDS[0]
    assert main(["explain", "--backend", backend, "--model", str(ws["target"]), "--reward",
                 str(trained[backend]["reward"]), "--prompt", PROMPT, "--max-tokens", "4"]) == 0
    out = capsys.readouterr().out  # not a terminal: no colour
    rows = [line for line in out.split("base top-3", 1)[1].splitlines() if re.match(r"^\s+\d+\s", line)]
    assert "\x1b[" not in out and 1 <= len(rows) <= 4


def test_output_is_quiet_on_todays_packages(trained, uses, backend):
    """Training, generation, chat, eval and explain print prtcore's own progress and results only: no library
    warnings (deprecations included) and no third-party progress bars with the packages installed today."""
    runs = {name: trained[backend][name + "_run"] for name in ("reward", "sft_lora", "sft_full")}
    runs.update(uses[backend])
    noise = re.compile(r"warn|deprecat|\d+%\||it/s\]|Loading weights|Fetching \d+ files", re.IGNORECASE)
    for name, run in runs.items():
        lines = [line for line in (run.stdout + "\n" + run.stderr).splitlines() if noise.search(line)]
        assert not lines, f"prt {name} ({backend}): {lines[:3]}"
