"""Known failures of the conformance suite: family × check × subject → reason.

An entry turns a failing result into "xfail" (shown with its reason in every report); an entry whose check
passes is reported as "xpass", which counts as a failure, so the list cannot go stale. Patterns are shell-style
(`fnmatch`): `*` matches anything. Subjects are labelled as in the report: `mlx` (one backend), `mlx/torch`
(compared), `mlx>torch` (written by mlx, read by torch).

A file given to `prt conformance --expected-failures FILE` (JSON or YAML) holds a list of entries:

    - {family: gemma3_text, check: base_logits, backends: "mlx/torch", reason: "mlx-lm ignores final_logit_softcapping"}
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

import attrs

from ..errors import ConfigError

# The suite's own list: findings not fixed yet. Entries are {"family", "check", "backends", "reason"}.
EXPECTED_FAILURES: list[dict] = [
    {"family": "gemma2", "check": "batched_decoding", "backends": "mlx",
     "reason": "mlx-lm's gemma2 attention groups the queries by KV head (B, kv, rep, L, S) and cannot broadcast a "
               "batch cache's per-row mask (B, 1, L, S): left-padded batches fail in mlx-lm itself"},
]


@attrs.frozen
class ExpectedFailure:
    family: str
    check: str
    backends: str
    reason: str

    def matches(self, family: str, check: str, subject: str) -> bool:
        return fnmatchcase(family, self.family) and fnmatchcase(check, self.check) and fnmatchcase(subject, self.backends)


@attrs.frozen
class ExpectedFailures:
    entries: tuple[ExpectedFailure, ...] = ()

    def reason_for(self, family: str, check: str, subject: str) -> str | None:
        for entry in self.entries:
            if entry.matches(family, check, subject):
                return entry.reason
        return None

    def __add__(self, other: "ExpectedFailures") -> "ExpectedFailures":
        return ExpectedFailures(self.entries + other.entries)

    @classmethod
    def from_entries(cls, entries, where: str = "expected failures") -> "ExpectedFailures":
        if not isinstance(entries, list):
            raise ConfigError(f"{where}: expected a list of entries with family, check, backends and reason")
        out = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: entry {i} is not a mapping")
            unknown = sorted(set(entry) - {"family", "check", "backends", "reason"})
            if unknown:
                raise ConfigError(f"{where}: entry {i} has unknown field {unknown[0]!r}")
            if not isinstance(entry.get("reason"), str) or not entry["reason"].strip():
                raise ConfigError(f"{where}: entry {i} needs a 'reason'")
            fields = {k: str(entry.get(k, "*")) for k in ("family", "check", "backends")}
            out.append(ExpectedFailure(reason=entry["reason"], **fields))
        return cls(tuple(out))

    @classmethod
    def load(cls, path) -> "ExpectedFailures":
        """Entries from a JSON or YAML file."""
        import yaml

        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: expected-failures file not found") from None
        try:
            data = yaml.safe_load(text)  # JSON is YAML
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise ConfigError(f"{path}{f':{mark.line + 1}' if mark else ''}: invalid YAML/JSON") from None
        return cls.from_entries(data or [], str(path))


def builtin() -> ExpectedFailures:
    return ExpectedFailures.from_entries(EXPECTED_FAILURES, "prtcore.testing.expected.EXPECTED_FAILURES")
