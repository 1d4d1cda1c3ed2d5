"""Running the conformance checks over families and backends, and reporting the results (`prt conformance`).

    results = run_conformance(["llama", "qwen2"], backends=["mlx", "torch"], workdir=tmp)
    print(render_table(results))
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..errors import ConfigError
from .checks import CHECKS, STATUSES, CheckResult, run_check, subjects
from .expected import ExpectedFailures, builtin
from .workspace import Workspace

CHECKPOINT = "checkpoint"  # the result row of a family whose tiny checkpoint cannot be made
# The families CI covers (each a model_type both transformers and mlx-lm support).
CI_FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma2", "phi3", "granite", "olmo2", "qwen3_moe", "gemma3_text",
               "cohere")


def check_family(name: str) -> None:
    """Refuse a family that transformers cannot build a tiny checkpoint of (bad usage, not a failed check)."""
    try:
        from transformers import AutoConfig
    except ImportError:
        raise ConfigError(f"--family {name}: making a tiny checkpoint needs transformers (pip install 'prtcore[torch]'); "
                          "or give a local checkpoint with --model PATH") from None
    try:
        AutoConfig.for_model(name)
    except (ValueError, KeyError):
        raise ConfigError(f"--family {name}: not a model_type transformers knows (e.g. {', '.join(CI_FAMILIES[:4])})") from None


def check_names(names: Iterable[str] | None) -> list[str]:
    names = list(names or CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ConfigError(f"--check {unknown[0]}: unknown check (known: {', '.join(CHECKS)})")
    return names


def resolve_backends(names: Sequence[str] | None) -> dict:
    """Backend instances by name: the given ones, else every installed backend."""
    from ..plugins import get_backend, installed_backend_names

    names = list(names or installed_backend_names())
    if len(set(names)) != len(names):
        raise ConfigError(f"--backend: {', '.join(names)} names a backend twice")
    return {name: get_backend(name) for name in names}


def workspace_cases(ws: Workspace, checks: Sequence[str]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(check, mode, backend names) for every check and subject of the workspace's backends."""
    return [(name, mode, names) for name in checks for mode, names in subjects(name, list(ws.backends))]


def run_workspace(ws: Workspace, checks: Sequence[str], expected: ExpectedFailures | None = None,
                  progress: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
    out = []
    for name, mode, names in workspace_cases(ws, checks):
        result = run_check(ws, name, mode, names, expected)
        out.append(result)
        if progress is not None:
            progress(result)
    return out


def run_conformance(families: Sequence[str] = (), models: Sequence[str] = (), *, backends=None, checks=None,
                    expected: ExpectedFailures | None = None, workdir=None,
                    progress: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
    """Every check for every family (a tiny random checkpoint) and local model, on `backends` (names or a
    name → Backend mapping; default: every installed backend)."""
    from .checkpoints import make_tokenizer

    for family in families:
        check_family(family)
    for model in models:
        if not (Path(model) / "config.json").is_file():
            raise ConfigError(f"--model {model}: not a checkpoint directory (no config.json)")
    checks = check_names(checks)
    backends = backends if isinstance(backends, dict) else resolve_backends(backends)
    expected = builtin() if expected is None else expected
    with tempfile.TemporaryDirectory(prefix="prt-conformance-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        results = []
        tokenizer = make_tokenizer(root / "tokenizer") if families else None
        for family in families:
            try:
                ws = Workspace.for_family(family, backends, root / "families", tokenizer_dir=tokenizer)
            except Exception as e:  # transformers cannot build this family small: one error row, then go on
                message = str(e).splitlines()[0] if str(e) else ""
                result = CheckResult(family, CHECKPOINT, "-", "error",
                                     reason=f"cannot make a tiny {family} checkpoint: {type(e).__name__}: {message}")
                results.append(result)
                if progress is not None:
                    progress(result)
                continue
            results += run_workspace(ws, checks, expected, progress)
        for i, model in enumerate(models):
            ws = Workspace(model, backends, root / f"model-{i}", label=f"{Path(model).name} ({_model_type(model)})",
                           load_options={"dtype": "float32"})
            results += run_workspace(ws, checks, expected, progress)
        return results


def _model_type(path) -> str:
    try:
        return json.loads((Path(path) / "config.json").read_text(encoding="utf-8")).get("model_type", "unknown")
    except (OSError, ValueError):
        return "unknown"


# ---------------------------------------------------------------------------------------------- reports
def summary(results: Sequence[CheckResult]) -> dict:
    counts = Counter(r.status for r in results)
    return {status: counts.get(status, 0) for status in STATUSES} | {"total": len(results)}


def exit_code(results: Sequence[CheckResult]) -> int:
    return 1 if any(r.failed for r in results) else 0


def summary_line(results: Sequence[CheckResult]) -> str:
    counts = summary(results)
    parts = [f"{counts[s]} {s}" for s in STATUSES if counts[s]]
    verdict = "FAILED" if exit_code(results) else "OK"
    return f"{verdict}: {', '.join(parts) or 'nothing ran'} ({counts['total']} results)"


COLUMNS = ("family", "check", "backends", "status", "detail")


def _rows(results):
    return [(r.family, r.check, r.subject, r.status.upper() if r.failed else r.status, r.describe()) for r in results]


def render_table(results: Sequence[CheckResult]) -> str:
    """A plain-text table: family × check × backends with the status and the figure, where, or reason."""
    rows = [COLUMNS] + _rows(results)
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for j, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
        if j == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    lines.append("")
    lines.append(summary_line(results))
    return "\n".join(lines)


def render_markdown(results: Sequence[CheckResult], *, backends: Sequence[str] = (),
                    expected: ExpectedFailures | None = None) -> str:
    def cell(text):
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["# prtcore conformance report", ""]
    if backends:
        lines.append(f"Backends: {', '.join(backends)}. ")
    lines += [summary_line(results), "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in _rows(results)]
    failing = [r for r in results if r.failed]
    if failing:
        lines += ["", "## Failures", ""] + [f"- **{r.family} / {r.check} / {r.subject}** ({r.status}): {cell(r.describe())}"
                                           for r in failing]
    known = [r for r in results if r.status == "xfail"]
    if known or (expected and expected.entries):
        lines += ["", "## Expected failures", ""]
        lines += [f"- {r.family} / {r.check} / {r.subject}: {cell(r.reason)}" for r in known]
        if expected:
            lines += [f"- declared: {e.family} / {e.check} / {e.backends}: {cell(e.reason)}" for e in expected.entries]
    checks = sorted({r.check for r in results} & set(CHECKS))
    lines += ["", "## Checks", ""] + [f"- `{name}`: {CHECKS[name].doc}" for name in checks]
    return "\n".join(lines) + "\n"


def render_json(results: Sequence[CheckResult], *, backends: Sequence[str] = (),
                expected: ExpectedFailures | None = None) -> str:
    data = {
        "summary": summary(results),
        "exit_code": exit_code(results),
        "backends": list(backends),
        "checks": {name: CHECKS[name].doc for name in sorted({r.check for r in results} & set(CHECKS))},
        "expected_failures": [{"family": e.family, "check": e.check, "backends": e.backends, "reason": e.reason}
                              for e in (expected.entries if expected else ())],
        "results": [r.to_dict() for r in results],
    }
    return json.dumps(data, indent=2, default=float) + "\n"


def write_report(path, results, *, backends=(), expected=None) -> Path:
    path = Path(path)
    if path.suffix.lower() == ".json":
        text = render_json(results, backends=backends, expected=expected)
    elif path.suffix.lower() in (".md", ".markdown"):
        text = render_markdown(results, backends=backends, expected=expected)
    else:
        raise ConfigError(f"--report {path}: the report is written as .md or .json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
