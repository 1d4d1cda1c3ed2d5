"""PRT end to end on the real families' special-token layouts (prtcore.testing.layouts), on every installed
backend: `prt train` on chat-rendered data, then PRTForCausalLM: generation stops on every eos id
generation_config.json names, chat (the API and `prt chat`), and `model(ids)` on ids with the pad id — including a
tokenizer whose pad id lies past the model's embedding rows."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("torch")

import prtcore  # noqa: E402
from prtcore import PRTForCausalLM  # noqa: E402
from prtcore.artifacts import RewardArtifact  # noqa: E402
from prtcore.cli.main import main  # noqa: E402
from prtcore.errors import PRTError  # noqa: E402
from prtcore.plugins import installed_backend_names  # noqa: E402
from prtcore.sampling import Scorer  # noqa: E402
from prtcore.testing.layouts import LAYOUTS, PAD_PAST_ROWS_TOKEN, layout_ids, make_layout_checkpoint  # noqa: E402

BACKENDS = [b for b in ("mlx", "torch") if b in installed_backend_names()]
FAMILIES = list(LAYOUTS)
# A LoRA twin where the rows equal the tokenizer, a linear head where the rows are padded past it.
REWARD = {"llama3": "twin", "qwen2.5": "linear", "gemma2": "twin", "mistral": "twin", "phi3": "linear"}
NAMES = ["Avalon", "Corvia", "Mira", "Dunmere", "Brightwater", "Elara", "Fenwick", "Garnet"]
PROMPT = "What is the capital of Avalon?"

pytestmark = pytest.mark.skipif(not BACKENDS, reason="no backend installed")


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def qa(i):
    a, b = NAMES[i % len(NAMES)], NAMES[(3 * i + 1) % len(NAMES)]
    return {"prompt": f"What is the capital of {a}?", "completion": f"The capital is {b}."}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Checkpoints of every family (and llama3 / mistral with a pad past the rows) and two data sets:
    prompt/completion rows (rendered as a user/assistant exchange) and two-turn chats."""
    root = tmp_path_factory.mktemp("layouts-prt")
    models = {f: make_layout_checkpoint(root / f, f, seed=1) for f in FAMILIES}
    for f in ("llama3", "mistral"):
        models[f + "+pad"] = make_layout_checkpoint(root / (f + "-pad"), f, seed=1, pad_past_rows=True)
    completions, chats = root / "completions", root / "chats"
    rows = [qa(i) for i in range(12)]
    write_jsonl(completions / "train.jsonl", rows[:8])
    write_jsonl(completions / "valid.jsonl", rows[8:])
    chat_rows = [{"messages": [{"role": "user", "content": r["prompt"]},
                               {"role": "assistant", "content": r["completion"]},
                               {"role": "user", "content": "And the next one?"},
                               {"role": "assistant", "content": rows[(i + 1) % 12]["completion"]}]}
                 for i, r in enumerate(rows)]
    write_jsonl(chats / "train.jsonl", chat_rows[:8])
    write_jsonl(chats / "valid.jsonl", chat_rows[8:])
    return {"root": root, "models": models, "completions": completions, "chats": chats, "trained": {}}


def train(ws, family, backend, data="completions", extra=()):
    """Run `prt train` in this process; returns (exit code, output dir)."""
    out = ws["root"] / f"reward-{family}-{backend}-{data}"
    kind = REWARD[family.split("+")[0]]
    args = ["train", "--backend", backend, "--model", str(ws["models"][family]), "--data", str(ws[data]),
            "--output-dir", str(out), "--reward", kind, "--iters", "3", "--batch-size", "2", "--learning-rate", "1e-2",
            "--steps-per-report", "1", "--steps-per-eval", "3", "--val-batches", "1", "--save-every", "3",
            "--seed", "0", "--overwrite", *extra]
    if kind == "twin":
        args += ["--lora-r", "2", "--num-layers", "1"]
    return main(args), out


@pytest.fixture(scope="module")
def trained(ws):
    """(family, backend) -> reward directory of a 3-step run on prompt/completion rows with --mask-prompt."""
    cache = ws["trained"]

    def get(family, backend):
        if (family, backend) not in cache:
            code, out = train(ws, family, backend, extra=["--mask-prompt"])
            assert code == 0, f"prt train ({family}, {backend}) exited {code}"
            cache[family, backend] = out
        return cache[family, backend]

    return get


def load(ws, family, backend, reward=None):
    return PRTForCausalLM.from_pretrained(ws["models"][family], reward, backend=backend)


class Biased(Scorer):
    """A real scorer whose logits get +1e4 on one token: the decoding loop must stop right there when it is eos."""

    def __init__(self, inner, token, backend):
        self.inner, self.token, self.backend = inner, token, backend

    def __call__(self, ids):
        logits = self.inner(ids)
        bias = np.zeros(tuple(logits.shape), dtype=np.float32)
        bias[..., self.token] = 1e4
        return logits + self.backend.xp.asarray(bias)


def force(model, token, monkeypatch):
    """Bias the target's scorer (the first) towards `token`; the models and the reward still run."""
    real = type(model).scorers.__get__(model)
    monkeypatch.setattr(model, "scorers", lambda images=None: [Biased(s, token, model.backend) if i == 0 else s
                                                               for i, s in enumerate(real(images))])


def assert_rows_finite(model, out):
    """Composed log-probs over the tokenizer's ids: finite where the model has a row, -inf past its rows."""
    logprobs, rows = prtcore.to_numpy(out.logprobs), model.target.vocab_size
    assert logprobs.shape[-1] == model.vocab_size
    assert np.isfinite(logprobs[..., :rows]).all()
    assert np.isneginf(logprobs[..., rows:]).all()
    assert np.allclose(np.exp(logprobs).sum(-1), 1.0, atol=1e-3)


# --------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_train_on_chat_rendered_completions(ws, trained, family, backend):
    out = trained(family, backend)
    artifact = RewardArtifact.open(out)
    assert artifact.kind == REWARD[family]
    assert artifact.vocab_size == layout_ids(ws["models"][family])["len"]  # the shared ids, not the model's rows
    assert json.loads((out / "summary.json").read_text())["steps"] == 3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_train_on_multi_turn_chats_with_masked_prompts(ws, family, backend):
    code, out = train(ws, family, backend, data="chats", extra=["--mask-prompt"])
    assert code == 0 and (out / "prt_config.json").is_file()


@pytest.mark.parametrize("family", FAMILIES)
def test_masked_prompts_train_on_each_assistant_turn_and_its_end(ws, family):
    """Only the assistant turns are targets, each with the template's end of turn; Phi-3's template also closes a
    chat that ends on an assistant turn with eos, which the last turn's target keeps."""
    from transformers import AutoTokenizer

    from prtcore.data import Tokenise

    tok = AutoTokenizer.from_pretrained(str(ws["models"][family]))
    row = json.loads((ws["chats"] / "train.jsonl").read_text().splitlines()[0])
    ex = Tokenise(tok, mask_prompt=True)("chat", row, "row")
    spans, start = [], None
    for k, m in enumerate(ex.mask + [0]):
        if m and start is None:
            start = k
        elif not m and start is not None:
            spans.append(tok.decode(ex.ids[start:k]))
            start = None
    answers = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
    turn_end = LAYOUTS[family].turn_end
    assert len(spans) == 2
    for span, answer in zip(spans, answers):
        assert answer in span and turn_end in span and "user" not in span


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", ["llama3+pad", "mistral+pad"])
def test_train_with_a_pad_id_past_the_rows(ws, family, backend):
    """Batches of different lengths are padded; the tokenizer's pad id has no row in the model."""
    code, out = train(ws, family, backend)
    assert code == 0 and (out / "prt_config.json").is_file()


# --------------------------------------------------------------------------------------------- eos ids
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_eos_ids_are_generation_configs_list(ws, family, backend):
    ids = layout_ids(ws["models"][family])
    model = load(ws, family, backend)
    eos = model.target.eos_token_ids
    assert sorted(eos) == sorted(set(ids["generation_eos"]) | {ids["eos"]})
    turn_end = model.tokenizer.convert_tokens_to_ids(LAYOUTS[family].turn_end)
    assert turn_end in eos


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_generation_stops_on_every_eos_id(ws, trained, family, backend, monkeypatch):
    model = load(ws, family, backend, trained(family, backend))
    prompt = model.apply_chat_template([{"role": "user", "content": PROMPT}])
    for eos in layout_ids(ws["models"][family])["generation_eos"]:
        force(model, eos, monkeypatch)
        steps = list(model.stream_steps(prompt, max_tokens=5))
        assert [(s.token, s.finish_reason) for s in steps] == [(eos, "stop")], f"eos {eos}"
    other = model.tokenizer.encode("a", add_special_tokens=False)[0]
    force(model, other, monkeypatch)
    steps = list(model.stream_steps(prompt, max_tokens=5))
    assert [s.token for s in steps] == [other] * 5 and steps[-1].finish_reason == "length"


# --------------------------------------------------------------------------------------------- chat
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_chat_through_the_template_then_generate(ws, trained, family, backend):
    model = load(ws, family, backend, trained(family, backend))
    ids = model.apply_chat_template([{"role": "user", "content": PROMPT}])
    bos = model.tokenizer.bos_token_id
    if LAYOUTS[family].bos is not None and LAYOUTS[family].chat_template.count("bos_token"):
        assert ids.count(bos) == 1 and ids[0] == bos
    text = model.generate(ids, max_tokens=6, temperature=0.7, seed=0)
    assert isinstance(text, str)
    assert LAYOUTS[family].turn_end not in text


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_prt_chat_command(ws, trained, family, backend, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is the capital of Avalon?\nAnd Corvia?\n/exit\nnot read\n"))
    code = main(["chat", "--backend", backend, "--model", str(ws["models"][family]), "--reward",
                 str(trained(family, backend)), "--max-tokens", "4"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert captured.out.count("\n\n") >= 2  # two replies


# --------------------------------------------------------------------------------------------- ids with pad
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", [f for f in FAMILIES if LAYOUTS[f].pad is not None])
def test_call_on_ids_with_the_pad_id(ws, trained, family, backend):
    model = load(ws, family, backend, trained(family, backend))
    pad = model.tokenizer.pad_token_id
    assert pad is not None and pad < model.target.vocab_size
    ids = model.apply_chat_template([{"role": "user", "content": PROMPT}])
    batch = [ids + [pad, pad], ids[:-2] + [pad, pad, pad, pad]]
    out = model(batch)
    logprobs = prtcore.to_numpy(out.logprobs)
    assert logprobs.shape == (2, len(ids) + 2, model.vocab_size)
    assert np.isfinite(logprobs).all()
    assert np.allclose(np.exp(logprobs).sum(-1), 1.0, atol=1e-3)


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs both backends")
@pytest.mark.parametrize("family", [f for f in FAMILIES if LAYOUTS[f].pad is not None])
def test_backends_read_pad_ids_alike(ws, family):
    ids = load(ws, family, "torch").apply_chat_template([{"role": "user", "content": PROMPT}])
    pad = layout_ids(ws["models"][family])["pad"]
    batch = [ids + [pad, pad]]
    a = prtcore.to_numpy(load(ws, family, "torch")(batch).logprobs)
    b = prtcore.to_numpy(load(ws, family, "mlx")(batch).logprobs)
    np.testing.assert_allclose(a, b, atol=2e-3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", ["llama3+pad", "mistral+pad"])
def test_pad_id_past_the_rows_is_refused_in_one_line(ws, family, backend):
    model = load(ws, family, backend)
    pad = model.tokenizer.pad_token_id
    assert model.tokenizer.pad_token == PAD_PAST_ROWS_TOKEN and pad == model.target.vocab_size
    ids = model.tokenizer.encode("The capital of Avalon")
    with pytest.raises(PRTError, match=f"token id {pad}"):
        model([ids + [pad]])
    # without the pad the same model reads the ids; the pad, which has no row, gets probability 0
    assert_rows_finite(model, model([ids]))
    text = model.generate(ids, max_tokens=4)
    assert isinstance(text, str)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", ["llama3+pad", "mistral+pad"])
def test_reward_trained_with_pad_past_rows_applies(ws, family, backend):
    code, out = train(ws, family, backend, extra=["--mask-prompt"])
    assert code == 0
    model = load(ws, family, backend, out)
    ids = model.apply_chat_template([{"role": "user", "content": PROMPT}])
    assert_rows_finite(model, model([ids]))
