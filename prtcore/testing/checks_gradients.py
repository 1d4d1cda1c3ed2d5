"""The conformance checks of gradients of the PRT loss (linear and transformer rewards, a LoRA twin's adapter):
against the closed form in NumPy and between backends. `check` registers them in CHECKS; prtcore.testing.checks
imports this module.
"""

from __future__ import annotations

from .checks_forward import _loss_inputs
from .gradients import GradientsUnavailable, reference_linear_gradients, reward_gradients
from .measures import compare_gradients, np64
from .registry import check
from .workspace import Skip, Workspace


# ---------------------------------------------------------------------------------------------- gradients
def _gradients(ws: Workspace, name: str, kind: str):
    def run():
        ws.require(name, "reward_gradients")  # prtcore.testing.gradients
        if kind == "lora":
            ws.require(name, "lora")
        reward, source = ws.load_reward(name, kind)
        ids, mask = _loss_inputs(ws)
        config = ws.reward_config(kind)
        try:
            return reward_gradients(ws.backend(name), reward, source, ids, mask, lam=config.lam,
                                    entropy_coeff=config.entropy_coeff)
        except (GradientsUnavailable, NotImplementedError) as e:
            raise Skip(f"backend {name!r}: {e}") from None

    return ws.memo(("grads", name, kind), run)


def gradients_linear_reference(ws, a):
    from ..artifacts import RewardArtifact

    got = _gradients(ws, a, "linear")
    b = ws.backend(a)
    ids, mask = _loss_inputs(ws)
    out = ws.base(a).forward(b.asarray([ids[0][:-1]]), hidden=True)
    config = ws.reward_config("linear")
    head = RewardArtifact.open(ws.neutral_artifact("linear")).tensors()["head.weight"]
    want = reference_linear_gradients(np64(b, out.logits), np64(b, out.hidden), head, ids, mask, vocab=ws.vocab(),
                                      lam=config.lam, entropy_coeff=config.entropy_coeff)
    return compare_gradients(got, want, f"linear gradients {a} vs closed form")


def _gradients_pair(kind):
    def run(ws, a, b):
        return compare_gradients(_gradients(ws, b, kind), _gradients(ws, a, kind), f"{kind} gradients {b} vs {a}")

    return run


check("gradients_linear", "gradients of the PRT loss for a linear reward: against the closed form in NumPy, between "
      "backends", reference=gradients_linear_reference, pair=_gradients_pair("linear"))
check("gradients_transformer", "gradients of the PRT loss for a transformer reward, between backends",
      pair=_gradients_pair("transformer"))
check("gradients_twin_lora", "gradients of the PRT loss for a LoRA twin's adapter, between backends",
      pair=_gradients_pair("lora"))
