"""The plugin module of the "mlp" reward kind: what an entry point in group "prtcore" names."""

import prtcore

from .kind import MLP


@prtcore.hookimpl
def register_reward_kinds(register):
    register(MLP)
