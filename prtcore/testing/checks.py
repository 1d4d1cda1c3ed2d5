"""The conformance checks, written once: plain functions over a Workspace, each returning measurements.

They live by topic in checks_forward (base and reward logits, the PRT loss), checks_gradients and
checks_generation (composition, decoding, sampling, training round trips), over measures (`Measure`, the
comparisons, the tolerances) and registry (CHECKS, `run_check`, CheckResult); this module gathers them, so that
importing it registers every check, and keeps their names importable from here.

`prt conformance` (prtcore.testing.runner), the pytest suite (tests/conformance) and the ConformanceTests classes
a plugin subclasses (prtcore.testing.suite) all run these through `run_check`, which gives a CheckResult:

    status   pass | fail | error | skip | xfail (a declared known failure) | xpass (declared, but it passed)
    figure   the worst measurement, `limit` what it had to stay within, `where` what and where it is

Each check runs in one or more modes, which decide its subjects (the backends it involves):
- "reference": one backend against the NumPy reference (prtcore.testing.reference) on the backend's own inputs;
- "self": one backend against itself (cached versus uncached, batched versus one by one);
- "pair": two backends on the same checkpoint and weights (each unordered pair once, label "a/b");
- "ordered": what backend a wrote, backend b reads (label "a>b"; both orders).

Every measurement is "figure ≤ limit" (a cosine similarity is measured as 1 − cos). Tolerances are float32's:
logits and hidden states 1e-4 × max(1, their scale); log-probs and probabilities 1e-4 between backends,
1e-5 against NumPy on the same inputs; the PRT loss 1e-5 × max(1, |loss|); gradients 1 − cos ≤ 1e-4 and
norms within 1e-3 of each other.
"""

from __future__ import annotations

# The order of these imports is the order of CHECKS (the order of `prt conformance`'s table).
from . import checks_forward  # noqa: F401  base model, rewards, loss
from . import checks_gradients  # noqa: F401  gradients
from . import checks_generation  # noqa: F401  composition, decoding, training round trip
from .checks_forward import (LOSS_MASK_DROP, base_logits_pair, prt_loss_pair,  # noqa: F401
                             prt_loss_reference)
from .checks_generation import (GENERATION_TOKENS, SAMPLER, batched_self, cached_self,  # noqa: F401
                                composed_pair, composed_reference, greedy_pair, sampling_pair, sampling_reference)
from .checks_gradients import gradients_linear_reference  # noqa: F401
from .measures import (TOL_COSINE, TOL_LOGITS, TOL_LOGPROBS, TOL_LOSS, TOL_NORM, TOL_REFERENCE,  # noqa: F401
                       Measure, compare, compare_gradients, compare_loss, np64)
from .registry import (CHECKS, FAILING, STATUSES, Check, CheckResult, check, run_check,  # noqa: F401
                       subject_label, subjects)
