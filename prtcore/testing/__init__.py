"""Conformance testing for prtcore backends, shipped with the package.

- `checks`: the checks (one backend against NumPy or itself, two backends against each other), written once, by
  topic in `checks_forward`, `checks_gradients` and `checks_generation`, over `measures` (Measure, comparisons,
  tolerances) and `registry` (CHECKS, run_check, CheckResult);
- `workspace`: a checkpoint, the backends under test and what the checks share;
- `runner`: running them over families and backends, and the reports of `prt conformance`;
- `suite`: pytest base classes a plugin subclasses (`ConformanceTests`);
- `gradients`: the contract of the optional capability "reward_gradients" (`backend.reward_gradients`);
- `expected`: declared known failures;
- `vision`: vision-language bases compared across backends (images → tokens, features, log-probs);
- `reference`: the NumPy reference implementations; `checkpoints`: tiny random checkpoints and tokenizers;
- `layouts`: tiny checkpoints with real families' special-token layouts (the families' data: `layout_families`).
"""
