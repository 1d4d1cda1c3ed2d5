"""In-process pieces behind the commands: data formats and masking, the progress display, explain rendering."""

from __future__ import annotations

import io
import json
import warnings

import pytest
from conftest import write_jsonl

from prtcore.data import load_dataset, load_split, turn_end_marker
from prtcore.reporting import TrainingReporter


@pytest.fixture(scope="module")
def tokenizer(ws):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ws["tok"]))


def _assistant_text(tokenizer, ex):
    """The text of the target tokens (mask 1), span by span."""
    spans, current = [], []
    for token, m in zip(ex.ids, ex.mask):
        if m:
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    if current:
        spans.append(tokenizer.decode(current))
    return spans


def test_mask_prompt_keeps_every_assistant_turn_of_a_chat(tokenizer, tmp_path):
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Capital?"},
                         {"role": "assistant", "content": "Mira"}],
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]}
    path = write_jsonl(tmp_path / "chat.jsonl", [chat])
    ex = load_split(path, tokenizer, mask_prompt=True)[0]
    assert _assistant_text(tokenizer, ex) == ["Hello<|im_end|>\n", "Mira<|im_end|>\n"]
    full = load_split(path, tokenizer, mask_prompt=False)[0]
    assert sum(full.mask) == len(full.ids) and full.ids == ex.ids


def test_completions_use_the_chat_template_and_mask_the_prompt(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "Capital?", "completion": "Mira", "extra": 1}])
    ex = load_split(path, tokenizer, mask_prompt=True)[0]
    assert tokenizer.decode(ex.ids).startswith("<|im_start|>user\nCapital?<|im_end|>")
    assert _assistant_text(tokenizer, ex) == ["Mira<|im_end|>\n"]
    assert turn_end_marker(tokenizer) == "<|im_end|>"


def test_text_gets_eos_and_long_samples_are_truncated_with_one_counting_warning(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "Hello world " * 20}, {"text": "Hi"}, {"text": "Hello " * 30}])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        examples = load_split(path, tokenizer, max_seq_length=16)
    assert len(caught) == 1 and "2 of 3 samples longer than max_seq_length=16 were truncated" in str(caught[0].message)
    assert [len(e.ids) for e in examples][::2] == [16, 16]
    assert examples[1].ids[-1] == tokenizer.eos_token_id


def test_optional_test_split_and_line_numbers(tokenizer, tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a"}])
    (tmp_path / "valid.jsonl").write_text('\n{"text": "b"}\n')
    data = load_dataset(tmp_path, tokenizer)
    assert set(data) == {"train", "valid"} and data["valid"][0].line == 2


def test_progress_bar_on_a_terminal_and_plain_lines_otherwise(tmp_path):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    reports = [{"iteration": i, "train_loss": 2.0 / i, "learning_rate": 1e-3, "iterations_per_second": 10.0,
                "tokens_per_second": 1234.0, "trained_tokens": 100 * i, "peak_memory": 0.5} for i in (5, 10)]
    tty, plain = Terminal(), io.StringIO()
    for stream, out in ((tty, tmp_path / "a"), (plain, tmp_path / "b")):
        reporter = TrainingReporter(out, total_steps=10, stream=stream)
        reporter.on_train_report(reports[0])
        reporter.on_val_report({"iteration": 5, "val_loss": 1.5})
        reporter.on_train_report(reports[1])
        summary = reporter.finish(artifact=str(out))
        assert summary["best_val_loss"] == 1.5 and summary["best_val_step"] == 5
        assert [json.loads(line)["iteration"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [5, 5, 10]
    text = tty.getvalue()
    assert "\r\x1b[K[" in text and "█" in text and "5/10" in text and "1234 tok/s" in text and "0.50 GB" in text
    assert "step 5  val loss 1.5000  (best)\n" in text and text.endswith("\n") and "done: 10 steps" in text
    lines = plain.getvalue().splitlines()
    assert "\r" not in plain.getvalue() and lines[0].startswith("step 5/10  loss 0.4000")
    assert lines[1] == "step 5  val loss 1.5000  (best)" and lines[-1].startswith("done: 10 steps")


def test_explain_rendering_colours_and_escapes():
    from prtcore.explain import TokenExplanation, render_html, render_terminal

    rows = [TokenExplanation(0, 5, "<i>", 0.1, 0.5, 1.7, (("a", 0.3), ("<i>", 0.1), ("\n", 0.05)),
                             (("<i>", 0.5), ("a", 0.2), ("b", 0.1))),
            TokenExplanation(1, 6, "\x07x", 0.4, 0.2, -0.3, (("x", 0.4),), (("y", 0.3),))]
    plain = render_terminal(rows, color=False, prompt="Q")
    assert "\x1b" not in plain and "\x07" not in plain and "'\\n'" in plain
    coloured = render_terminal(rows, color=True)
    assert "\x1b[1;32m<i>" in coloured and "\x1b[31m" in coloured
    page = render_html(rows, prompt="<script>alert(1)</script>", details={"model": "<m>"})
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;i&gt;" in page and "&lt;m&gt;" in page
    assert rows[0].delta == pytest.approx(1.6094379, rel=1e-6)
