"""The conformance suite: base test classes any backend plugin runs against its own implementation.

In the fsspec / zarr style, a plugin's test module combines the classes with a fixture that returns its
backend:

    import pytest
    from prtcore.testing.suite import ConformanceTests

    class TestMyBackend(ConformanceTests):
        @pytest.fixture(scope="class")
        @classmethod
        def backend(cls):
            return prtcore.get_backend("mine")

Required fixture: `backend`. Optional: `checkpoint` (a base model directory; by default a tiny random llama
built with prtcore.testing.checkpoints). Capabilities a backend lacks (its `capabilities` set) are skipped
with the reason; everything is compared with prtcore.testing.reference (NumPy, float64).

`FamilyConformance` runs every check of prtcore.testing.checks (the ones `prt conformance` runs) for the backend:
against NumPy and itself, and against every other installed backend in both directions, on `checkpoint`.
"""

from __future__ import annotations

import numpy as np
import pytest

from .. import artifacts
from ..config import RewardConfig
from ..objectives import check_loss, prt_loss
from ..sampling import EFTComposer, PRTComposer, ProxyTuningComposer, Sampler
from . import reference
from .checks import CHECKS, CheckResult, run_check, subjects
from .expected import builtin as builtin_expected_failures

ATOL = 1e-5


def requires(backend, capability: str):
    if capability not in backend.capabilities:
        pytest.skip(f"backend {backend.name!r} lacks capability {capability!r}")


def random_logits(shape, seed, scale=4.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def numpy_of(backend, x):
    return np.asarray(backend.to_numpy(x), dtype=np.float64)


def arr(backend, x):
    return backend.xp.asarray(np.asarray(x))


class BackendFixtures:
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls):
        raise NotImplementedError("a conformance test class must provide the `backend` fixture")

    @pytest.fixture(scope="class")
    @classmethod
    def checkpoint(cls, tmp_path_factory):
        from .checkpoints import make_tiny_checkpoint, make_tokenizer

        root = tmp_path_factory.mktemp("conformance")
        return make_tiny_checkpoint(root / "llama", "llama", tokenizer_dir=make_tokenizer(root / "tok"), seed=0)

    @pytest.fixture(scope="class")
    @classmethod
    def base(cls, backend, checkpoint):
        requires(backend, "load")
        return backend.load_base(checkpoint)


class MathConformance(BackendFixtures):
    """The array namespace, the loss, the composers and the sampler on the backend's arrays."""

    @pytest.mark.parametrize("lam,alpha", [(1.0, 0.0), (0.5, 0.05), (3.0, 0.2)])
    def test_loss_matches_reference(self, backend, lam, alpha):
        base, reward = random_logits((2, 5, 11), 1), random_logits((2, 5, 11), 2)
        targets = np.random.default_rng(3).integers(0, 11, (2, 5))
        mask = (np.random.default_rng(4).random((2, 5)) > 0.3).astype(np.float32)
        loss, metrics = prt_loss(arr(backend, base), arr(backend, reward), arr(backend, targets), arr(backend, mask),
                                 lam=lam, entropy_coeff=alpha, xp=backend.xp)
        want, want_metrics = reference.prt_loss(base, reward, targets, mask, lam=lam, entropy_coeff=alpha)
        assert abs(float(numpy_of(backend, loss)) - want) <= ATOL * max(1.0, abs(want))
        for key in ("ntokens", "accuracy", "entropy", "nll"):
            assert abs(float(numpy_of(backend, metrics[key])) - want_metrics[key]) <= ATOL * max(1.0, abs(want_metrics[key]))

    def test_loss_stable_for_large_and_infinite_logits(self, backend):
        base = random_logits((1, 4, 9), 5, scale=1e4)
        base[0, 0, 3] = -np.inf
        reward = random_logits((1, 4, 9), 6, scale=1e4)
        targets = np.array([[1, 2, 4, 5]])
        loss, _ = prt_loss(arr(backend, base), arr(backend, reward), arr(backend, targets), xp=backend.xp)
        want, _ = reference.prt_loss(base, reward, targets)
        got = float(numpy_of(backend, loss))
        assert np.isfinite(got) and abs(got - want) <= 1e-4 * max(1.0, abs(want))

    def test_training_loss_matches_reference(self, backend):
        """The loss the backend trains with (`Backend.prt_loss`, e.g. a fused one) against prtcore.objectives.prt_loss:
        loss and metrics, the gradient where the backend differentiates (`Backend.gradient`), bad arguments refused
        (prtcore.objectives.check_loss)."""
        check_loss(backend.prt_loss, backend.xp, grad=backend.gradient)

    @pytest.mark.parametrize("composer,n", [
        (PRTComposer(1.0), 2), (PRTComposer((0.5, 2.0)), 3), (EFTComposer(), 3), (ProxyTuningComposer(0.7), 3),
        (PRTComposer(1.0, vocab_size=9), 2),
    ])
    def test_composers_match_numpy(self, backend, composer, n):
        logits = [random_logits((3, 11 - i), 10 + i) for i in range(n)] if composer.vocab_size else \
            [random_logits((3, 11), 10 + i) for i in range(n)]
        got = numpy_of(backend, composer(*[arr(backend, x) for x in logits], xp=backend.xp))
        want = composer(*[x.astype(np.float64) for x in logits])
        np.testing.assert_allclose(got, want, atol=ATOL)
        np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, atol=ATOL)

    @pytest.mark.parametrize("settings", [
        {}, {"temperature": 0.7}, {"temperature": 1.0, "top_k": 4}, {"temperature": 1.0, "top_p": 0.8},
        {"temperature": 0.9, "min_p": 0.05}, {"temperature": 1.0, "repetition_penalty": 1.3},
    ])
    def test_sampler_distribution_matches_numpy(self, backend, settings):
        logprobs = PRTComposer(1.0)(random_logits((1, 13), 20), random_logits((1, 13), 21))
        sampler = Sampler(**settings)
        history = [1, 5, 5, 7]
        got = numpy_of(backend, sampler.filtered(arr(backend, logprobs.astype(np.float32)), history, xp=backend.xp))
        want = sampler.filtered(logprobs, history)
        np.testing.assert_allclose(np.exp(got), np.exp(want), atol=1e-5)

    def test_seeded_sampling_reproducible(self, backend):
        logprobs = arr(backend, PRTComposer(1.0)(random_logits((1, 13), 30), random_logits((1, 13), 31)).astype(np.float32))
        sampler = Sampler(temperature=1.0, seed=7)

        def draw():
            rng = backend.xp.make_rng(7)
            return [int(numpy_of(backend, sampler.sample(logprobs, rng, xp=backend.xp)).reshape(-1)[0]) for _ in range(20)]

        assert draw() == draw()


class RewardConformance(BackendFixtures):
    """Rewards loaded from an artifact of random tensors give the reference's logits."""

    @pytest.mark.parametrize("kind", ["linear", "transformer"])
    def test_reward_logits_match_reference(self, backend, base, kind, tmp_path):
        config = RewardConfig(kind=kind, d_model=32, num_layers=2, num_heads=4, ffn_dim=48)
        vocab = base.vocab_size
        tensors = reference.random_reward_tensors(config, base.hidden_size, vocab, seed=3)
        with artifacts.ArtifactWriter(tmp_path / kind) as writer:
            artifacts.save_numpy_tensors(writer.dir / artifacts.REWARD_WEIGHTS, tensors)
            writer.copy_tokenizer(base.path)
            writer.commit(artifacts.reward_meta(config, source=base, tokenizer=base.tokenizer, vocab_size=vocab,
                                                output_size=vocab, weights=[artifacts.REWARD_WEIGHTS], backend="test"))
        reward = backend.load_reward(artifacts.RewardArtifact.open(tmp_path / kind), base)
        ids = [[3, 17, 42, 8, 99, 5, 23]]
        hidden = base.forward(backend.asarray(ids), hidden=True).hidden
        got = numpy_of(backend, reward.forward(backend.asarray(ids), source_hidden=hidden))
        want = reference.reward_logits(tensors, numpy_of(backend, hidden), config)
        np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, np.abs(want).max()))


class DecodingConformance(BackendFixtures):
    """Incremental decoding with caches equals recomputing the whole sequence."""

    def test_cached_base_logits_equal_full_forward(self, backend, base):
        ids = [[3, 17, 42, 8, 99, 5, 23, 61]]
        full = numpy_of(backend, base.forward(backend.asarray(ids)).logits)
        cache = base.make_cache()
        steps = [numpy_of(backend, base.forward(backend.asarray([ids[0][:4]]), cache).logits)]
        for token in ids[0][4:]:
            steps.append(numpy_of(backend, base.forward(backend.asarray([[token]]), cache).logits))
        np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-4)


def assert_result(result: CheckResult) -> None:
    """A check's result as a pytest outcome: skip and xfail with their reason, anything but a pass fails."""
    if result.status == "skip":
        pytest.skip(result.reason)
    if result.status == "xfail":
        pytest.xfail(result.reason)
    assert result.status == "pass", \
        f"{result.family} / {result.check} / {result.subject}: {result.status}: {result.describe()}"


def assert_results(results: list[CheckResult]) -> None:
    """Several subjects of one check: any failure fails (all named), all skipped skips, else every pass counts."""
    failed = [r for r in results if r.status not in ("pass", "skip", "xfail")]
    assert not failed, "\n".join(f"{r.family} / {r.check} / {r.subject}: {r.status}: {r.describe()}" for r in failed)
    if all(r.status == "skip" for r in results):
        pytest.skip("; ".join(sorted({r.reason for r in results})))
    if all(r.status in ("skip", "xfail") for r in results):
        pytest.xfail("; ".join(sorted({r.reason for r in results if r.status == "xfail"})))
    assert any(r.status == "pass" for r in results)


class FamilyConformance(BackendFixtures):
    """The checks of prtcore.testing.checks (as `prt conformance` runs them) for the backend on `checkpoint`:
    against NumPy and itself, and against every other installed backend (both directions)."""

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_workspace(cls, backend, checkpoint, tmp_path_factory):
        from ..plugins import get_backend, installed_backend_names
        from .workspace import Workspace

        backends = {backend.name: backend}
        backends.update({name: get_backend(name) for name in installed_backend_names() if name != backend.name})
        return Workspace(checkpoint, backends, tmp_path_factory.mktemp("conformance-workspace"))

    @pytest.mark.parametrize("check_name", list(CHECKS))
    def test_check(self, backend, conformance_workspace, check_name):
        ws = conformance_workspace
        expected = builtin_expected_failures()
        results = [run_check(ws, check_name, mode, names, expected)
                   for mode, names in subjects(check_name, list(ws.backends)) if backend.name in names]
        assert_results(results)


class ConformanceTests(MathConformance, RewardConformance, DecodingConformance, FamilyConformance):
    """Every conformance check; a plugin subclasses this and provides the `backend` fixture."""
