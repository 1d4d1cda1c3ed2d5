"""`prt conformance`: every check of prtcore.testing.checks for model families and backends, as one table.

    prt conformance                                  # the CI families on every installed backend
    prt conformance --family gemma3_text --family cohere --backend mlx --backend torch --report out.md
    prt conformance --model models/my-llama --report out.json

Exit status: 0 when every check passes (or is skipped, or fails as declared expected), 1 when one fails,
2 on bad usage (an unknown family, backend or check, an unreadable expected-failures file).
"""

from __future__ import annotations

import sys

from ..errors import ConfigError


def add_arguments(parser) -> None:
    a = parser.add_argument
    a("--family", action="append", default=[], metavar="NAME",
      help="a model_type to build a tiny random checkpoint of (repeatable; default: the CI families unless --model)")
    a("--model", action="append", default=[], metavar="PATH", help="a local checkpoint directory (repeatable)")
    a("--backend", action="append", default=[], metavar="NAME", help="a backend to check (repeatable; default: every installed one)")
    a("--check", action="append", default=[], metavar="NAME", help="run only this check (repeatable; see --list)")
    a("--report", metavar="FILE", help="also write the report to FILE (.md or .json)")
    a("--expected-failures", metavar="FILE", help="known failures (JSON or YAML list of family/check/backends/reason)")
    a("--workdir", metavar="DIR", help="keep the checkpoints and artifacts in DIR (default: a temporary directory)")
    a("--list", action="store_true", help="list the checks and the CI families, run nothing")
    a("--quiet", "-q", action="store_true", help="no progress lines on stderr")


def _quiet_libraries() -> None:
    """No progress bars or advisory warnings from the model libraries in the report."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    logging.getLogger("transformers").setLevel(logging.ERROR)


def run(args) -> int:
    from ..testing.checks import CHECKS
    from ..testing.expected import ExpectedFailures, builtin
    from ..testing.runner import CI_FAMILIES, render_table, resolve_backends, run_conformance, write_report

    if args.list:
        for name, check in CHECKS.items():
            print(f"{name:24} {', '.join(check.modes):22} {check.doc}")
        print(f"\nCI families: {' '.join(CI_FAMILIES)}")
        return 0
    if args.report and not args.report.lower().endswith((".md", ".markdown", ".json")):
        raise ConfigError(f"--report {args.report}: the report is written as .md or .json")
    expected = builtin()
    if args.expected_failures:
        expected = expected + ExpectedFailures.load(args.expected_failures)
    families = args.family or ([] if args.model else list(CI_FAMILIES))
    _quiet_libraries()
    backends = resolve_backends(args.backend or None)

    def progress(result):
        if not args.quiet:
            mark = result.status.upper() if result.failed else result.status
            print(f"[{result.family}] {result.check} {result.subject}: {mark} ({result.seconds:.1f}s)", file=sys.stderr,
                  flush=True)

    results = run_conformance(families, args.model, backends=backends, checks=args.check or None, expected=expected,
                              workdir=args.workdir, progress=progress)
    print(render_table(results))
    if args.report:
        path = write_report(args.report, results, backends=list(backends), expected=expected)
        print(f"report written to {path}")
    return 1 if any(r.failed for r in results) else 0
