"""`prt conformance` and the machinery around the checks: exit codes, reports, expected failures, a backend that
genuinely differs, and the tiny checkpoints' hub layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prtcore.cli.main import main
from prtcore.testing.checks import CheckResult, Measure, compare, compare_gradients, run_check
from prtcore.testing.expected import ExpectedFailures
from prtcore.testing.runner import render_markdown, render_table, run_conformance


def run_cli(capsys, *argv):
    code = main(["conformance", "-q", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------------------------------------- usage errors
@pytest.mark.parametrize("argv,message", [
    (["--family", "no_such_family"], "--family no_such_family: not a model_type transformers knows"),
    (["--backend", "no_such_backend"], "unknown backend 'no_such_backend'"),
    (["--check", "no_such_check"], "--check no_such_check: unknown check"),
    (["--report", "out.txt"], "--report out.txt: the report is written as .md or .json"),
    (["--expected-failures", "missing.yaml"], "missing.yaml: expected-failures file not found"),
])
def test_bad_usage_exits_2_with_one_line(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and message in err and out == ""


def test_list_names_every_check_and_the_ci_families(capsys):
    from prtcore.testing.checks import CHECKS
    from prtcore.testing.runner import CI_FAMILIES

    code, out, _ = run_cli(capsys, "--list")
    assert code == 0
    assert all(name in out for name in CHECKS) and " ".join(CI_FAMILIES) in out


# ---------------------------------------------------------------------------------------------- end to end
def test_passing_run_prints_the_table_and_writes_both_reports(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "--family", "llama", "--backend", "mlx", "--backend", "torch",
                           "--check", "base_logits", "--check", "reward_linear", "--report", str(tmp_path / "r.json"))
    assert code == 0, out
    rows = [line.split() for line in out.splitlines()]
    assert ["llama", "base_logits", "mlx/torch", "pass"] == rows[2][:4] and out.rstrip().endswith("r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["exit_code"] == 0 and report["summary"]["pass"] == 5 and report["summary"]["total"] == 5
    assert {r["subject"] for r in report["results"] if r["check"] == "reward_linear"} == {"mlx", "torch", "mlx>torch", "torch>mlx"}
    assert all(r["figure"] <= r["limit"] for r in report["results"])


def test_declared_failure_that_passes_fails_the_run(capsys, tmp_path):
    expected = tmp_path / "expected.yaml"
    expected.write_text("- {family: llama, check: base_logits, backends: '*', reason: 'thought broken'}\n")
    code, out, _ = run_cli(capsys, "--family", "llama", "--backend", "mlx", "--backend", "torch",
                           "--check", "base_logits", "--expected-failures", str(expected), "--report", str(tmp_path / "r.md"))
    assert code == 1
    assert "XPASS" in out and "thought broken" in out
    markdown = (tmp_path / "r.md").read_text()
    assert "## Failures" in markdown and "declared: llama / base_logits / *: thought broken" in markdown


class _Shifted:
    """Wraps a backend; its base logits are off by 2e-3 at one token (a backend that genuinely differs)."""

    def __init__(self, inner):
        self.inner, self.name, self.capabilities = inner, "shifted", inner.capabilities

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def load_base(self, path, **options):
        base = self.inner.load_base(path, **options)
        forward = base.forward

        def shifted(ids, cache=None, *, hidden=False):
            from prtcore.model import ForwardOutput

            out = forward(ids, cache, hidden=hidden)
            bump = np.zeros(out.logits.shape[-1], dtype=np.float32)
            bump[7] = 2e-3
            return ForwardOutput(out.logits + self.inner.xp.asarray(bump), out.hidden)

        base.forward = shifted
        return base


def test_a_backend_that_differs_is_reported_with_the_figure_and_where(tmp_path):
    import prtcore

    mlx = prtcore.get_backend("mlx")
    results = run_conformance(["llama"], backends={"mlx": mlx, "shifted": _Shifted(mlx)}, checks=["base_logits"],
                              workdir=tmp_path)
    (result,) = results
    assert result.status == "fail" and result.subject == "mlx/shifted"
    assert abs(result.figure - 2e-3) < 1e-6 and result.limit < 1e-3
    assert "logits mlx vs shifted" in result.where and ", 7]" in result.where
    assert "FAIL" in render_table(results) and "FAILED: 1 fail" in render_table(results)


def test_an_exception_in_a_backend_is_an_error_naming_where(tmp_path):
    import prtcore

    class Broken(_Shifted):
        def load_base(self, path, **options):
            raise RuntimeError("no weights today")

    mlx = prtcore.get_backend("mlx")
    (result,) = run_conformance(["llama"], backends={"mlx": mlx, "shifted": Broken(mlx)}, checks=["base_logits"],
                                workdir=tmp_path)
    assert result.status == "error" and result.failed
    assert "backend 'shifted' cannot load" in result.reason and "no weights today" in result.reason


# ---------------------------------------------------------------------------------------------- pieces
def test_expected_failures_match_by_pattern_and_turn_failures_into_xfail():
    known = ExpectedFailures.from_entries([{"family": "qwen*", "check": "reward_*", "backends": "mlx>*", "reason": "r"}])
    assert known.reason_for("qwen3_moe", "reward_twin_full", "mlx>torch") == "r"
    assert known.reason_for("qwen3_moe", "reward_twin_full", "torch>mlx") is None
    assert known.reason_for("llama", "reward_twin_full", "mlx>torch") is None
    with pytest.raises(Exception, match="needs a 'reason'"):
        ExpectedFailures.from_entries([{"family": "x"}])


def test_compare_names_the_worst_element_and_scales_the_limit():
    want = np.zeros((1, 2, 3))
    want[0, 1, 2] = 10.0
    got = want.copy()
    got[0, 0, 1] = 5e-4
    m = compare(got, want, what="logits", atol=1e-4)
    assert m.figure == pytest.approx(5e-4) and m.limit == pytest.approx(1e-3) and m.ok and "logits[0, 0, 1]" in m.where
    assert not compare(got, want, what="x", atol=1e-4, scaled=False).ok
    inf = want.copy()
    inf[0, 0, 0] = -np.inf
    assert not compare(want, inf, what="x", atol=1.0).ok


def test_compare_gradients_checks_direction_norm_and_names():
    g = {"w": np.array([1.0, 2.0, 3.0])}
    assert all(m.ok for m in compare_gradients({"w": g["w"] * (1 + 1e-5)}, g, "g"))
    assert not all(m.ok for m in compare_gradients({"w": 2 * g["w"]}, g, "g"))  # right direction, wrong norm
    assert not all(m.ok for m in compare_gradients({"w": g["w"][::-1].copy()}, g, "g"))
    assert not all(m.ok for m in compare_gradients({"v": g["w"]}, g, "g"))


def test_markdown_report_lists_results_failures_and_checks():
    results = [CheckResult("llama", "base_logits", "mlx/torch", "pass", 1e-6, 1e-4, "logits[0, 1, 2]"),
               CheckResult("llama", "prt_loss", "mlx", "fail", 0.5, 1e-5, "linear PRT loss"),
               CheckResult("llama", "batched_decoding", "mlx", "skip", reason="backend 'mlx' lacks capability 'batched'")]
    text = render_markdown(results, backends=["mlx", "torch"])
    assert "FAILED: 1 pass, 1 fail, 1 skip" in text and "| llama | prt_loss | mlx | FAIL |" in text
    assert "lacks capability 'batched'" in text and "`base_logits`" in text


def test_run_check_skips_a_model_type_the_backend_does_not_load(tmp_path):
    from prtcore.testing.checkpoints import make_tiny_checkpoint, make_tokenizer
    from prtcore.testing.workspace import Workspace

    class Picky:
        name, capabilities, model_types = "picky", frozenset({"load"}), frozenset({"llama"})

    path = make_tiny_checkpoint(tmp_path / "phi3", "phi3", tokenizer_dir=make_tokenizer(tmp_path / "tok"))
    ws = Workspace(path, {"picky": Picky()}, tmp_path / "ws")
    result = run_check(ws, "cached_decoding", "self", ("picky",))
    assert result.status == "skip" and "does not load model_type 'phi3'" in result.reason


def test_tiny_checkpoints_carry_the_fields_both_libraries_read(tmp_path):
    from prtcore.testing.checkpoints import make_tiny_checkpoint, make_tokenizer

    tok = make_tokenizer(tmp_path / "tok")
    moe = json.loads((make_tiny_checkpoint(tmp_path / "moe", "qwen3_moe", tokenizer_dir=tok) / "config.json").read_text())
    assert moe["num_experts"] == moe["num_local_experts"] == 4 and moe["head_dim"] == 16
    gemma3 = json.loads((make_tiny_checkpoint(tmp_path / "g3", "gemma3_text", tokenizer_dir=tok,
                                              family_overrides=True) / "config.json").read_text())
    assert gemma3["layer_types"] == ["sliding_attention", "full_attention"] and gemma3["sliding_window_pattern"] == 2
    assert gemma3["rope_parameters"]["full_attention"]["rope_theta"] == 1234.0
    assert gemma3["rope_parameters"]["sliding_attention"]["rope_theta"] == 567.0
