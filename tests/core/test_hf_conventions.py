"""transformers' habits on PRTForCausalLM, on every installed backend (prtcore.hf_compat): max_new_tokens, do_sample,
top_k, generation_config, eos/pad ids, streamers, input_ids arrays and tokenizer outputs, `.logits`, and a one-line
refusal of every transformers argument prtcore does not support."""

from __future__ import annotations

import numpy as np
import pytest

from prtcore import ConfigError, GenerationError, PRTForCausalLM, get_backend
from prtcore.plugins import installed_backend_names

transformers = pytest.importorskip("transformers")

BACKENDS = [b for b in ("mlx", "torch") if b in installed_backend_names()]
pytestmark = pytest.mark.skipif(not BACKENDS, reason="needs an array backend (mlx or torch)")
PROMPTS = ["The capital of", "Hello", "Question: What is the capital of Avalon? Answer:"]


@pytest.fixture(scope="module", params=BACKENDS)
def env(request, tmp_path_factory):
    """A qwen2 target, a non-zero linear reward trained on a llama source (written by prtcore.testing), the PRT model
    of both on the backend, and the tokenizer as transformers loads it."""
    from prtcore.testing.checkpoints import make_tiny_checkpoint, make_tokenizer
    from prtcore.testing.workspace import Workspace

    root = tmp_path_factory.mktemp(f"hf-{request.param}")
    tok = make_tokenizer(root / "tok")
    source = make_tiny_checkpoint(root / "source", "llama", tokenizer_dir=tok, seed=0)
    target = make_tiny_checkpoint(root / "target", "qwen2", tokenizer_dir=tok, seed=1, extra_vocab_rows=6,
                                  num_hidden_layers=3)
    backend = get_backend(request.param)
    reward = Workspace(source, {request.param: backend}, root / "ws").neutral_artifact("linear")
    model = PRTForCausalLM.from_pretrained(target, reward, request.param, source=source)
    return {"model": model, "tokenizer": transformers.AutoTokenizer.from_pretrained(target), "backend": backend}


def greedy_tokens(model, prompt, n):
    return [step.token for step in model.stream_steps(prompt, max_tokens=n)]


def early_eos(model, prompt, n=6):
    """(k, id): the k-th greedy token of `prompt` (k >= 1), an id that none of the tokens before it is."""
    tokens = greedy_tokens(model, prompt, n)
    k = next(k for k in range(1, len(tokens)) if tokens[k] not in tokens[:k])
    return k, tokens


# ---------------------------------------------------------------------------------------------- text prompts
def test_max_new_tokens_is_max_tokens(env):
    model = env["model"]
    text = model.generate(PROMPTS[0], max_tokens=7)
    assert model.generate(PROMPTS[0], max_new_tokens=7) == text
    assert model.generate(PROMPTS[0], max_new_tokens=7, max_tokens=7) == text
    assert "".join(model.stream(PROMPTS[0], max_new_tokens=7)) == text
    with pytest.raises(ConfigError, match=r"max_tokens=7 and max_new_tokens=3: give one"):
        model.generate(PROMPTS[0], max_tokens=7, max_new_tokens=3)


def test_do_sample_and_top_k(env):
    model = env["model"]
    greedy = model.generate(PROMPTS[2], max_new_tokens=8)
    assert model.generate(PROMPTS[2], max_new_tokens=8, do_sample=False, temperature=0.9, top_p=0.5) == greedy
    # do_sample=True samples with transformers' defaults where not given: temperature 1, top_k 50
    sampled = model.generate(PROMPTS[2], max_new_tokens=8, do_sample=True, seed=3)
    assert sampled == model.generate(PROMPTS[2], max_new_tokens=8, temperature=1.0, top_k=50, seed=3)
    assert model.generate(PROMPTS[2], max_new_tokens=8, do_sample=True, top_k=1, seed=3) == greedy
    with pytest.raises(ConfigError, match=r"do_sample=True with temperature=0"):
        model.generate(PROMPTS[2], do_sample=True, temperature=0)
    with pytest.raises(ConfigError, match=r"do_sample='yes' must be True or False"):
        model.generate(PROMPTS[2], do_sample="yes")


def test_generation_config(env):
    model = env["model"]
    config = transformers.GenerationConfig(max_new_tokens=5, do_sample=False)
    assert model.generate(PROMPTS[1], generation_config=config) == model.generate(PROMPTS[1], max_tokens=5)
    # arguments given explicitly override the config's fields
    assert model.generate(PROMPTS[1], generation_config=config, max_new_tokens=3) == model.generate(PROMPTS[1], max_tokens=3)
    sampling = transformers.GenerationConfig(max_new_tokens=6, do_sample=True, temperature=0.7, top_p=0.9, top_k=20)
    assert model.generate(PROMPTS[1], generation_config=sampling, seed=1) == model.generate(
        PROMPTS[1], max_tokens=6, temperature=0.7, top_p=0.9, top_k=20, seed=1)
    penalised = transformers.GenerationConfig(max_new_tokens=6, repetition_penalty=1.3, num_beams=1)
    assert model.generate(PROMPTS[1], generation_config=penalised) == model.generate(
        PROMPTS[1], max_tokens=6, repetition_penalty=1.3)
    assert model.generate(PROMPTS[1], generation_config={"max_new_tokens": 4}) == model.generate(PROMPTS[1], max_tokens=4)
    with pytest.raises(ConfigError, match=r"generate: num_beams=2 is not supported"):
        model.generate(PROMPTS[1], generation_config=transformers.GenerationConfig(num_beams=2))
    with pytest.raises(ConfigError, match=r"generation_config='greedy': expected a transformers GenerationConfig"):
        model.generate(PROMPTS[1], generation_config="greedy")


def test_max_length_counts_the_prompt(env):
    model = env["model"]
    n = len(model.encode(PROMPTS[2]))
    assert model.generate(PROMPTS[2], max_length=n + 4) == model.generate(PROMPTS[2], max_tokens=4)
    with pytest.raises(GenerationError, match=rf"max_length={n}: the prompt alone has {n} tokens"):
        model.generate(PROMPTS[2], max_length=n)


def test_eos_token_id_ends_generation(env):
    model = env["model"]
    k, tokens = early_eos(model, PROMPTS[0])
    text = model.generate(PROMPTS[0], max_new_tokens=6, eos_token_id=tokens[k])
    assert text == model.tokenizer.decode(tokens[:k])
    assert model.generate(PROMPTS[0], max_new_tokens=6, eos_token_id=[tokens[k], 1]) == text
    assert model.generate(PROMPTS[0], generation_config=transformers.GenerationConfig(eos_token_id=tokens[k]),
                          max_new_tokens=6) == text


class Recorder:
    """A streamer as transformers defines one: put(ids), end()."""

    def __init__(self):
        self.calls = []

    def put(self, value):
        self.calls.append(("put", tuple(value.shape), np.asarray(value.tolist()).reshape(-1).tolist()))

    def end(self):
        self.calls.append(("end",))


def test_streamer_is_called_as_transformers_calls_it(env, capsys):
    model, tokenizer = env["model"], env["tokenizer"]
    recorder = Recorder()
    text = model.generate(PROMPTS[2], max_new_tokens=5, streamer=recorder)
    prompt, tokens = model.encode(PROMPTS[2]), greedy_tokens(model, PROMPTS[2], 5)
    assert recorder.calls == [("put", (1, len(prompt)), prompt)] + [("put", (1,), [t]) for t in tokens] + [("end",)]
    capsys.readouterr()
    model.generate(PROMPTS[2], max_new_tokens=5, streamer=transformers.TextStreamer(tokenizer, skip_prompt=True))
    assert capsys.readouterr().out == text + "\n"
    streamer = transformers.TextIteratorStreamer(tokenizer, skip_prompt=True)
    model.generate(PROMPTS[2], max_new_tokens=5, streamer=streamer)
    assert "".join(streamer) == text
    with pytest.raises(ConfigError, match=r"streamer=3: expected an object with put\(ids\) and end\(\)"):
        model.generate(PROMPTS[2], streamer=3)


# ---------------------------------------------------------------------------------------------- token-id arrays
@pytest.mark.parametrize("side", ["left", "right"])
def test_input_ids_arrays_give_prompt_and_new_ids(env, side):
    """(B, T) ids with their attention mask, padded on either side, as the backend's array or NumPy: the result is
    the input as given followed by each row's new ids, which equal that prompt's own greedy generation."""
    model, tokenizer = env["model"], env["tokenizer"]
    tokenizer.padding_side = side
    enc = tokenizer(PROMPTS, padding=True, return_tensors="np")
    width = enc["input_ids"].shape[1]
    for as_array in (model.backend.asarray, np.asarray):
        out = model.generate(input_ids=as_array(enc["input_ids"].tolist()),
                             attention_mask=as_array(enc["attention_mask"].tolist()), max_new_tokens=6)
        assert type(out) is type(as_array([[1]]))
        values = np.asarray(model.backend.to_numpy(out) if as_array is not np.asarray else out)
        assert values.shape == (len(PROMPTS), width + 6)
        np.testing.assert_array_equal(values[:, :width], enc["input_ids"])
        for row, prompt in zip(values, PROMPTS):
            assert row[width:].tolist() == greedy_tokens(model, prompt, 6)


def test_rows_that_end_early_are_padded(env):
    """A row that meets an eos id keeps it and is padded with pad_token_id while another row goes on."""
    model, tokenizer = env["model"], env["tokenizer"]
    first, second = greedy_tokens(model, PROMPTS[0], 6), greedy_tokens(model, PROMPTS[2], 6)
    k = next(k for k in range(1, 6) if first[k] not in first[:k] and first[k] not in second)
    tokenizer.padding_side = "left"
    enc = tokenizer([PROMPTS[0], PROMPTS[2]], padding=True, return_tensors="np")
    ids = model.backend.asarray(enc["input_ids"].tolist())
    mask = model.backend.asarray(enc["attention_mask"].tolist())
    out = model.generate(ids, attention_mask=mask, max_new_tokens=6, eos_token_id=first[k], pad_token_id=7)
    values = np.asarray(model.backend.to_numpy(out)).tolist()
    assert values[0] == enc["input_ids"][0].tolist() + first[:k + 1] + [7] * (5 - k)
    assert values[1] == enc["input_ids"][1].tolist() + second
    alone = model.generate(model.backend.asarray([model.encode(PROMPTS[0])]), max_new_tokens=6, eos_token_id=first[k])
    assert np.asarray(model.backend.to_numpy(alone)).tolist() == [model.encode(PROMPTS[0]) + first[:k + 1]]


def test_vector_and_tokenizer_output(env):
    model, tokenizer = env["model"], env["tokenizer"]
    prompt = model.encode(PROMPTS[1])
    vector = model.generate(model.backend.asarray([prompt])[0], max_new_tokens=4)
    assert np.asarray(model.backend.to_numpy(vector)).tolist() == prompt + greedy_tokens(model, PROMPTS[1], 4)
    enc = tokenizer(PROMPTS[:2], padding=True, return_tensors="np")
    spread, whole = model.generate(**enc, max_new_tokens=4), model.generate(enc, max_new_tokens=4)
    np.testing.assert_array_equal(spread, whole)
    # a NumPy vector of ids stays a prtcore prompt (text out), as before
    assert model.generate(np.asarray(prompt), max_new_tokens=4) == model.generate(PROMPTS[1], max_new_tokens=4)


def test_logits(env):
    model = env["model"]
    ids = model.backend.asarray([model.encode(PROMPTS[2])])
    out = model(ids)
    assert out.logits is out.logprobs
    again = model(input_ids=ids, attention_mask=model.backend.asarray([[1] * ids.shape[1]]))
    np.testing.assert_array_equal(model.backend.to_numpy(again.logits), model.backend.to_numpy(out.logits))
    with pytest.raises(ConfigError, match=r"attention_mask: model\(ids\) scores unpadded rows only"):
        model(input_ids=ids, attention_mask=model.backend.asarray([[0] + [1] * (ids.shape[1] - 1)]))


@pytest.mark.parametrize("kwargs,message", [
    ({"num_beams": 4}, "num_beams=4 is not supported: prtcore decodes one sequence per prompt"),
    ({"logits_processor": ["p"]}, r"logits_processor=\['p'\] is not supported: .* PRTLogitsProcessor"),
    ({"stop_strings": ["."]}, r"stop_strings=\['.'\] is not supported: use stop="),
    ({"return_dict_in_generate": True}, "return_dict_in_generate=True is not supported"),
    ({"max_new_token": 3}, "max_new_token=3 is not supported: not an argument of generate"),
    ({"min_new_tokens": 2}, "min_new_tokens=2 is not supported"),
    ({"token_type_ids": [[0, 0]]}, "token_type_ids are not supported"),
    ({"input_ids": [[1, 2]]}, r"give the prompt once"),
])
def test_unsupported_arguments_are_refused_in_one_line(env, kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        env["model"].generate(PROMPTS[0], **kwargs)
    assert "\n" not in str(info.value)


def test_neutral_transformers_values_are_accepted(env):
    model = env["model"]
    want = model.generate(PROMPTS[0], max_tokens=3)
    assert model.generate(PROMPTS[0], max_new_tokens=3, num_beams=1, num_return_sequences=1, use_cache=True,
                          logits_processor=None, bos_token_id=1, output_scores=False) == want


def test_bad_arrays_are_refused(env):
    model = env["model"]
    asarray = model.backend.asarray
    with pytest.raises(GenerationError, match=r"input_ids row 1 is empty: its attention_mask is all 0"):
        model.generate(input_ids=asarray([[5, 6], [5, 6]]), attention_mask=asarray([[1, 1], [0, 0]]))
    with pytest.raises(ConfigError, match=r"input_ids row 0: token id 100000 at position 1 is out of range"):
        model.generate(asarray([[5, 100000]]))
    with pytest.raises(ConfigError, match=r"streamer: streamers take one row"):
        model.generate(asarray([[5, 6], [7, 8]]), streamer=Recorder())
    with pytest.raises(ConfigError, match=r"attention_mask goes with an input_ids array"):
        model.generate(PROMPTS[0], attention_mask=asarray([[1, 1]]))


def test_rows_decode_one_by_one_where_the_backend_does_not_batch(env, monkeypatch):
    model, tokenizer = env["model"], env["tokenizer"]
    tokenizer.padding_side = "left"
    enc = tokenizer(PROMPTS, padding=True, return_tensors="np")
    batched = model.generate(**enc, max_new_tokens=5)
    monkeypatch.setattr(model.backend, "capabilities", model.backend.capabilities - {"batched"})
    assert not model.backend.supports("batched")
    np.testing.assert_array_equal(model.generate(**enc, max_new_tokens=5), batched)
