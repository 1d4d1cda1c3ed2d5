"""The built-in plugin of prtcore's own reward kinds: registers linear, transformer and twin through the same hook
a third party uses (prtcore.plugins registers this module whatever PRT_LOAD_PLUGINS says). Their mlx and torch
implementations are declared by those backends when they register (plugins/prt_*/plugin.py)."""

from ..hookspecs import hookimpl
from .linear import LINEAR
from .transformer import TRANSFORMER
from .twin import TWIN


@hookimpl
def register_reward_kinds(register):
    register(LINEAR)
    register(TRANSFORMER)
    register(TWIN)
