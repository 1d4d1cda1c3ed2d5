"""Conformance of vision-language bases across backends: the same checkpoint, loaded by two or more backends,
must turn the same images into the same inputs, features and log-probs (float32 tolerances of
prtcore.testing.checks). A family plugin runs it on its own tiny checkpoints:

    bases = {b: get_backend(b).load_base(path) for b in ("mlx", "torch")}
    report = compare_vision_bases(bases, [image], "Describe <image> please.")
    assert report.ok, report.failures
"""

from __future__ import annotations

from typing import Any, Sequence

import attrs
import numpy as np

from .measures import TOL_LOGITS, TOL_LOGPROBS


@attrs.frozen
class VisionReport:
    """Worst differences between the first base and each other one, and what exceeded its tolerance."""

    tokens: list[int]  # vision tokens per image
    feature_diff: float
    feature_scale: float
    logprob_diff: float
    failures: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures


def compare_vision_bases(bases: dict[str, Any], images: Sequence[Any], prompt: str) -> VisionReport:
    """Compare `bases` (name → BaseLM with `vision`) on `images` and a prompt with "<image>" markers (or none)."""
    from ..model import PRTForCausalLM
    from ..vision import Images

    failures: list[str] = []
    results = {}
    for name, base in bases.items():
        shared = Images(images)
        model = PRTForCausalLM(base.backend, base)
        ids, _ = model.prepare(prompt, shared)
        results[name] = (ids, shared.num_tokens(base.vision), base.backend.to_numpy(shared.features(base.vision)),
                         base.backend.to_numpy(model([ids], images=[shared]).logprobs))
    first, (ids0, tokens0, feats0, logprobs0) = next(iter(results.items()))
    scale = float(np.abs(feats0).max())
    feature_diff = logprob_diff = 0.0
    for name, (ids, tokens, feats, logprobs) in list(results.items())[1:]:
        pair = f"{first}/{name}"
        if tokens != tokens0 or ids != ids0 or feats.shape != feats0.shape or logprobs.shape != logprobs0.shape:
            failures.append(f"{pair}: vision tokens {tokens0} vs {tokens}, features {feats0.shape} vs {feats.shape}, "
                            f"log-probs {logprobs0.shape} vs {logprobs.shape} (or token ids differ)")
            continue
        feature_diff = max(feature_diff, float(np.abs(feats - feats0).max()))
        logprob_diff = max(logprob_diff, float(np.abs(logprobs - logprobs0).max()))
        if feature_diff > TOL_LOGITS * max(1.0, scale):
            failures.append(f"{pair}: image features differ by {feature_diff:.3g} (scale {scale:.3g})")
        if logprob_diff > TOL_LOGPROBS:
            failures.append(f"{pair}: log-probs differ by {logprob_diff:.3g}")
    return VisionReport(tokens0, feature_diff, scale, logprob_diff, failures)


def assert_reward_added_to_target(model, prompt: str, image) -> None:
    """`model` (a PRTForCausalLM over a vision-language target, e.g. after a base swap) on `prompt` with one
    `image`: its log-probs are the target's alone plus the reward, renormalised; the reward is not zero; and it
    streams."""
    from ..arrays import to_numpy
    from ..model import PRTForCausalLM

    ids, batch = model.prepare(prompt, [image])
    out = model([ids], images=[batch])
    alone = PRTForCausalLM(model.backend, model.target)([ids], images=[batch])
    r = to_numpy(out.reward)[0]
    expected = to_numpy(alone.base_logprobs)[0] + r
    expected -= np.log(np.exp(expected).sum(-1, keepdims=True))
    np.testing.assert_allclose(to_numpy(out.logprobs)[0], expected, rtol=1e-4, atol=1e-4)
    assert np.abs(r).max() > 1e-3, f"the reward is about zero (max |r| {np.abs(r).max():.3g})"
    steps = list(model.stream_steps(prompt, images=[image], max_tokens=3))
    assert len(steps) >= 1, "streaming yielded no step"
