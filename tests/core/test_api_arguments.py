"""Every public entry point refuses a bad argument with one PRTError subclass whose one-line message names the
argument: wrong types, bad token ids, out-of-range sampling settings, mismatched reward / λ lists."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prtcore import (
    BackendError, ConfigError, EFTComposer, GenerationError, PRTComposer, PRTForCausalLM, ProxyTuningComposer,
    RewardArtifact, Sampler, ArtifactError, get_backend,
)
from prtcore.errors import PRTError
from prtcore.model import ComposedLM
from prtcore.plugins import installed_backend_names

BACKENDS = [b for b in ("mlx", "torch") if b in installed_backend_names()]
pytestmark = pytest.mark.skipif(not BACKENDS, reason="needs an array backend (mlx or torch)")


@pytest.fixture(scope="module", params=BACKENDS)
def env(request, tmp_path_factory):
    """A tiny llama source, a linear reward artifact on it, and the PRT model of both, on each backend."""
    from prtcore import RewardConfig
    from prtcore.testing.checkpoints import make_tiny_checkpoint, make_tokenizer

    root = tmp_path_factory.mktemp("api")
    tok = make_tokenizer(root / "tok", ["What is the capital of Avalon? The capital is Avalon."] * 8, vocab_size=300)
    source = make_tiny_checkpoint(root / "source", "llama", tokenizer_dir=tok, seed=0)
    backend = get_backend(request.param)
    lm = backend.load_base(source)
    reward = backend.create_reward(RewardConfig(kind="linear"), lm).save(
        root / "reward", source=lm, vocab_size=len(lm.tokenizer.get_vocab()))
    model = PRTForCausalLM.from_pretrained(source, reward, backend=request.param)
    return {"source": source, "reward": reward, "model": model, "backend": request.param, "rows": lm.vocab_size}


def load(env, **kwargs):
    args = {"base": env["source"], "reward": env["reward"], "backend": env["backend"], **kwargs}
    return PRTForCausalLM.from_pretrained(args.pop("base"), args.pop("reward"), **args)


def gen(env, prompt="The capital", **kwargs):
    return env["model"].generate(prompt, **{"max_tokens": 2, **kwargs})


def batch(env, prompts, **kwargs):
    """Batched generation of the backend's plugin."""
    if env["backend"] == "mlx":
        from prt_mlx.generation import generate_batch

        return generate_batch(env["model"], prompts, **kwargs)
    from prt_torch.generation import PRTGenerator

    return PRTGenerator(env["model"]).generate_batch(prompts, **kwargs)


# (label, call, exception class, text the message must hold: the argument, and often the value)
BAD_CALLS = [
    # PRTForCausalLM.from_pretrained
    ("base None", lambda e: load(e, base=None), ConfigError, "base"),
    ("base int", lambda e: load(e, base=7), ConfigError, "base=7"),
    ("base list", lambda e: load(e, base=[e["source"]]), ConfigError, "base"),
    ("reward int", lambda e: load(e, reward=5), ConfigError, "reward=5"),
    ("reward mixed list", lambda e: load(e, reward=[e["reward"], 5]), ConfigError, "reward[1]"),
    ("reward dict", lambda e: load(e, reward={"a": 1}), ConfigError, "reward"),
    ("reward missing dir", lambda e: load(e, reward=str(e["source"]) + "-nope"), ArtifactError, "-nope"),
    ("backend int", lambda e: load(e, backend=3), ConfigError, "backend=3"),
    ("backend unknown", lambda e: load(e, backend="nope"), BackendError, "'nope'"),
    ("lam str", lambda e: load(e, lam="big"), ConfigError, "lam='big'"),
    ("lam negative", lambda e: load(e, lam=-1.0), ConfigError, "lam"),
    ("lam zero", lambda e: load(e, lam=0), ConfigError, "lam"),
    ("lam nan", lambda e: load(e, lam=math.nan), ConfigError, "lam"),
    ("lam inf", lambda e: load(e, lam=math.inf), ConfigError, "lam"),
    ("lam bool", lambda e: load(e, lam=True), ConfigError, "lam=True"),
    ("lam list too long", lambda e: load(e, lam=[1.0, 2.0]), ConfigError, "lam"),
    ("lam list bad item", lambda e: load(e, lam=["x"]), ConfigError, "lam"),
    ("source int", lambda e: load(e, source=4), ConfigError, "source=4"),
    ("unknown load option", lambda e: load(e, colour="red"), ConfigError, "colour"),
    # __call__
    ("ids None", lambda e: e["model"](None), ConfigError, "token ids"),
    ("ids str", lambda e: e["model"]("hello"), ConfigError, "token ids"),
    ("ids int", lambda e: e["model"](5), ConfigError, "token ids"),
    ("ids flat list", lambda e: e["model"]([1, 2, 3]), ConfigError, "token ids row 0"),
    ("ids too deep", lambda e: e["model"]([[[1, 2]]]), ConfigError, "token ids row 0"),
    ("ids empty batch", lambda e: e["model"]([]), ConfigError, "token ids"),
    ("ids empty row", lambda e: e["model"]([[]]), ConfigError, "token ids row 0"),
    ("ids ragged", lambda e: e["model"]([[1, 2], [3]]), ConfigError, "token ids"),
    ("ids negative", lambda e: e["model"]([[1, -1]]), ConfigError, "token id -1"),
    ("ids past rows", lambda e: e["model"]([[1, e["rows"]]]), ConfigError, "out of range"),
    ("ids huge", lambda e: e["model"]([[2 ** 70]]), ConfigError, f"token id {2 ** 70}"),
    ("ids float", lambda e: e["model"]([[1.0, 2.0]]), ConfigError, "1.0"),
    ("ids bool", lambda e: e["model"]([[True, 2]]), ConfigError, "True"),
    ("ids float array", lambda e: e["model"](np.ones((1, 3))), ConfigError, "float64"),
    ("ids 1-d array", lambda e: e["model"](np.ones(3, dtype=np.int64)), ConfigError, "shape (3,)"),
    ("ids array past rows", lambda e: e["model"](np.array([[1, 10 ** 6]])), ConfigError, "token id 1000000"),
    ("images on a text model", lambda e: e["model"]([[1, 2]], images=5), ConfigError, "images=5"),
    # prepare / generate / stream: prompts
    ("prompt None", lambda e: e["model"].prepare(None), ConfigError, "prompt=None"),
    ("prompt int", lambda e: e["model"].prepare(42), ConfigError, "prompt=42"),
    ("prompt bytes", lambda e: e["model"].prepare(b"abc"), ConfigError, "prompt=b'abc'"),
    ("prompt float ids", lambda e: gen(e, [1.5, 2]), ConfigError, "1.5"),
    ("prompt negative id", lambda e: gen(e, [1, -3]), ConfigError, "token id -3"),
    ("prompt id past rows", lambda e: gen(e, [1, 10 ** 9]), ConfigError, "token id 1000000000"),
    ("prompt empty text", lambda e: gen(e, ""), GenerationError, "empty"),
    ("prompt empty ids", lambda e: gen(e, []), ConfigError, "token ids"),
    ("prompt messages without content", lambda e: gen(e, [{"role": "user"}]), ConfigError, "content"),
    ("prompt message not a dict", lambda e: gen(e, [{"role": "user", "content": "hi"}, 3]), ConfigError, "prompt[1]"),
    ("images int", lambda e: gen(e, images=3), ConfigError, "images=3"),
    ("images on a text model", lambda e: gen(e, images=["x.png"]), GenerationError, "images"),
    # generate / stream: decoding settings
    ("max_tokens None", lambda e: gen(e, max_tokens=None), ConfigError, "max_tokens=None"),
    ("max_tokens str", lambda e: gen(e, max_tokens="5"), ConfigError, "max_tokens='5'"),
    ("max_tokens float", lambda e: gen(e, max_tokens=2.5), ConfigError, "max_tokens=2.5"),
    ("max_tokens bool", lambda e: gen(e, max_tokens=True), ConfigError, "max_tokens=True"),
    ("max_tokens negative", lambda e: gen(e, max_tokens=-1), GenerationError, "max_tokens=-1"),
    ("temperature nan", lambda e: gen(e, temperature=math.nan), ConfigError, "temperature=nan"),
    ("temperature str", lambda e: gen(e, temperature="hot"), ConfigError, "temperature='hot'"),
    ("temperature None", lambda e: gen(e, temperature=None), ConfigError, "temperature=None"),
    ("temperature negative", lambda e: gen(e, temperature=-0.5), ConfigError, "temperature=-0.5"),
    ("temperature bool", lambda e: gen(e, temperature=True), ConfigError, "temperature=True"),
    ("top_p zero", lambda e: gen(e, top_p=0.0), ConfigError, "top_p=0.0"),
    ("top_p above one", lambda e: gen(e, top_p=1.5), ConfigError, "top_p=1.5"),
    ("top_p list", lambda e: gen(e, top_p=[0.5]), ConfigError, "top_p=[0.5]"),
    ("top_k negative", lambda e: gen(e, top_k=-1), ConfigError, "top_k=-1"),
    ("top_k float", lambda e: gen(e, top_k=2.5), ConfigError, "top_k=2.5"),
    ("top_k str", lambda e: gen(e, top_k="3"), ConfigError, "top_k='3'"),
    ("top_k huge", lambda e: gen(e, top_k=2 ** 70), ConfigError, "top_k"),
    ("min_p above one", lambda e: gen(e, min_p=2.0), ConfigError, "min_p=2.0"),
    ("min_p nan", lambda e: gen(e, min_p=math.nan), ConfigError, "min_p=nan"),
    ("repetition_penalty zero", lambda e: gen(e, repetition_penalty=0), ConfigError, "repetition_penalty=0"),
    ("seed str", lambda e: gen(e, seed="abc"), ConfigError, "seed='abc'"),
    ("seed float", lambda e: gen(e, seed=1.5), ConfigError, "seed=1.5"),
    ("seed negative", lambda e: gen(e, seed=-1), ConfigError, "seed=-1"),
    ("seed huge", lambda e: gen(e, seed=2 ** 70), ConfigError, "seed"),
    ("stop None item", lambda e: gen(e, stop=[None]), ConfigError, "stop"),
    ("stop int", lambda e: gen(e, stop=5), ConfigError, "stop=5"),
    ("stop list of ints", lambda e: gen(e, stop=["a", 3]), ConfigError, "stop"),
    ("stream max_tokens str", lambda e: list(e["model"].stream("The", max_tokens="x")), ConfigError, "max_tokens"),
    ("stream top_k float", lambda e: next(iter(e["model"].stream("The", top_k=0.5))), ConfigError, "top_k"),
    ("batch prompts str", lambda e: batch(e, "The capital"), ConfigError, "prompts='The capital'"),
    ("batch max_tokens float", lambda e: batch(e, ["The"], max_tokens=1.5), ConfigError, "max_tokens=1.5"),
    ("batch stop int", lambda e: batch(e, ["The"], max_tokens=2, stop=[7]), ConfigError, "stop=[7]"),
    ("batch prompt None", lambda e: batch(e, ["The", None]), ConfigError, "prompt=None"),
    # Sampler and composers
    ("Sampler temperature list", lambda e: Sampler(temperature=[1.0]), ConfigError, "temperature"),
    ("Sampler repetition_context zero", lambda e: Sampler(repetition_context=0), ConfigError, "repetition_context"),
    ("PRTComposer lam str", lambda e: PRTComposer(lam="x"), ConfigError, "lam"),
    ("PRTComposer lam None", lambda e: PRTComposer(lam=None), ConfigError, "lam"),
    ("PRTComposer lam nan", lambda e: PRTComposer(lam=math.nan), ConfigError, "lam"),
    ("PRTComposer lam nested", lambda e: PRTComposer(lam=[[1.0]]), ConfigError, "lam"),
    ("PRTComposer vocab_size str", lambda e: PRTComposer(vocab_size="10"), ConfigError, "vocab_size"),
    ("PRTComposer vocab_size zero", lambda e: PRTComposer(vocab_size=0), ConfigError, "vocab_size=0"),
    ("EFTComposer vocab_size float", lambda e: EFTComposer(vocab_size=2.5), ConfigError, "vocab_size=2.5"),
    ("ProxyTuningComposer alpha str", lambda e: ProxyTuningComposer(alpha="x"), ConfigError, "alpha"),
    ("ProxyTuningComposer alpha nan", lambda e: ProxyTuningComposer(alpha=math.nan), ConfigError, "alpha"),
    ("composer wrong count", lambda e: PRTComposer(lam=1.0)(np.zeros((1, 4))), ConfigError, "logits"),
    # ComposedLM
    ("ComposedLM method", lambda e: ComposedLM.from_pretrained(e["source"], method="sum"), ConfigError, "'sum'"),
    ("ComposedLM missing models", lambda e: ComposedLM.from_pretrained(e["source"], method="eft"), ConfigError, "eft"),
    ("ComposedLM alpha str", lambda e: ComposedLM.from_pretrained(e["source"], finetuned=e["source"],
                                                                  source=e["source"], method="proxy", alpha="x"),
     ConfigError, "alpha"),
    ("ComposedLM backend int", lambda e: ComposedLM.from_pretrained(e["source"], method="base", backend=1),
     ConfigError, "backend=1"),
    # RewardArtifact.open, get_backend
    ("artifact None", lambda e: RewardArtifact.open(None), ArtifactError, "None"),
    ("artifact int", lambda e: RewardArtifact.open(3), ArtifactError, "3"),
    ("artifact missing", lambda e: RewardArtifact.open(str(e["source"]) + "-nope"), ArtifactError, "-nope"),
    ("get_backend int", lambda e: get_backend(5), BackendError, "backend 5"),
]


@pytest.mark.parametrize("label, call, error, names", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_argument_is_one_line_naming_it(env, label, call, error, names):
    with pytest.raises(PRTError) as info:
        call(env)
    message = str(info.value)
    assert type(info.value) is error, f"{type(info.value).__name__}: {message}"
    assert "\n" not in message and names in message, message


def test_enough_bad_calls_are_covered():
    assert len(BAD_CALLS) >= 40


def test_value_errors_stay_value_errors(env):
    """Code that caught ValueError before still does."""
    with pytest.raises(ValueError):
        gen(env, temperature="hot")
    with pytest.raises(ValueError):
        env["model"]([[1, -1]])
