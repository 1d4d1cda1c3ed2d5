"""Quiet model loading: no third-party progress bars, advisory log lines or FutureWarnings while models load.

The `prt` commands set QUIET_ENVIRONMENT before any model library is imported (prtcore.cli.main.setup), for the
whole process. The Python API cannot: the libraries read those variables once, when imported, and a user's own
settings must survive a load. So `quiet_loading` applies the same settings through the libraries' own switches for
the duration of one `from_pretrained`, and restores them after. A variable of QUIET_ENVIRONMENT that the user set
(e.g. TRANSFORMERS_VERBOSITY=info, HF_HUB_DISABLE_PROGRESS_BARS=0) decides that part instead, and `verbose=True`
shows everything.
"""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import ExitStack, contextmanager
from typing import Iterator

# what the CLI sets for its whole process (os.environ.setdefault) and quiet_loading applies for one load
QUIET_ENVIRONMENT = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}


@contextmanager
def quiet_loading(verbose: bool = False) -> Iterator[None]:
    """Load models inside this block without progress bars, transformers' log lines below errors, or
    FutureWarnings (unless `verbose`, or the user's environment or `-W` options ask for them)."""
    if verbose:
        yield
        return
    with warnings.catch_warnings(), ExitStack() as stack:
        if not sys.warnoptions:  # python -W / PYTHONWARNINGS: the user chose which warnings to see
            warnings.filterwarnings("ignore", category=FutureWarning)
        if "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ:
            stack.enter_context(_no_progress_bars())
        if "TRANSFORMERS_VERBOSITY" not in os.environ:
            stack.enter_context(_transformers_errors_only())
        yield


def _transformers_logging():
    """transformers' logging module, or None where transformers is not installed."""
    try:
        from transformers.utils import logging
    except ImportError:
        return None
    return logging


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """huggingface_hub's and transformers' progress bars off, then back to what they were."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    logging = _transformers_logging()
    hub_was_off = are_progress_bars_disabled()
    transformers_was_on = logging is not None and logging.is_progress_bar_enabled()
    (logging.disable_progress_bar if logging is not None else disable_progress_bars)()  # the first does both
    try:
        yield
    finally:
        if transformers_was_on:
            logging.enable_progress_bar()  # and huggingface_hub's: set back just below
        if hub_was_off:
            disable_progress_bars()
        else:
            enable_progress_bars()


@contextmanager
def _transformers_errors_only() -> Iterator[None]:
    logging = _transformers_logging()
    if logging is None:
        yield
        return
    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)
