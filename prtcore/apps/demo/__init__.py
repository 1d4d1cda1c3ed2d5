"""`prt demo`: the portability claim reproduced end to end in minutes, with no downloads (see run.py)."""

from .pipeline import DemoSettings
from .report import markdown
from .run import run_demo
from .world import World

__all__ = ["DemoSettings", "World", "markdown", "run_demo"]
