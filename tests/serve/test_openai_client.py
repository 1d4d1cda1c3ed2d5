"""The official `openai` client against an in-process server on each backend: every greedy answer, streamed or
not, equals PRTForCausalLM / ComposedLM `generate` on the same prompt; extra fields pick the composition and the
rewards; log-probs, usage, seeds and stop strings behave as documented."""

from __future__ import annotations

import numpy as np
import pytest

from serve_testutil import MODEL

openai = pytest.importorskip("openai")

PROMPTS = ["The capital of Avalon is", "Hello world! How", "def add(a, b):"]
CHAT = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is the capital of Corvia?"}]


@pytest.fixture
def client(servers, backend):
    with openai.OpenAI(base_url=servers[backend].url + "/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def test_models_lists_the_served_model_its_rewards_and_compositions(client, rewards, backend):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    entry = models[0].model_dump()
    assert entry["compositions"] == ["prt", "eft", "proxy", "base"] and entry["backend"] == backend
    assert [(r["name"], r["lam"]) for r in entry["rewards"]] == [(rewards[backend]["lin"].name, 1.0),
                                                                  (rewards[backend]["twin"].name, 2.0)]
    assert client.models.retrieve(MODEL).id == MODEL


@pytest.mark.parametrize("prompt", PROMPTS)
def test_completion_equals_generate_streamed_or_not(client, references, backend, prompt):
    ref = references[backend]
    model = ref.model()
    want = model.generate(prompt, max_tokens=10)
    text, reason, count = ref.answer("completion", prompt, max_tokens=10)
    assert text == want
    out = client.completions.create(model=MODEL, prompt=prompt, max_tokens=10, temperature=0)
    assert out.choices[0].text == want and out.choices[0].finish_reason == reason
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (len(model.encode(prompt)), count)
    assert out.usage.total_tokens == out.usage.prompt_tokens + count
    chunks = list(client.completions.create(model=MODEL, prompt=prompt, max_tokens=10, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reason
    assert chunks[-1].usage.completion_tokens == count and not chunks[-1].choices


def test_chat_equals_generate_on_the_chat_template_streamed_or_not(client, references, backend):
    text, reason, count = references[backend].answer("chat", CHAT, max_tokens=12)
    out = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=12)
    assert out.choices[0].message.content == text and out.choices[0].message.role == "assistant"
    assert out.choices[0].finish_reason == reason and out.usage.completion_tokens == count
    chunks = list(client.chat.completions.create(model=MODEL, messages=CHAT, max_completion_tokens=12, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
    assert chunks[-1].choices[0].finish_reason == reason


def test_tools_go_to_the_chat_template(client, references, backend):
    """The template lists tools in a system turn: the prompt grows by them, and the answer is generate's on it;
    `tool_choice: "none"` leaves them out."""
    ref = references[backend]
    tools = [{"type": "function", "function": {"name": "capital", "parameters": {"type": "object"}}}]
    with_tools, without = ref.prompt_ids("chat", CHAT, tools), ref.prompt_ids("chat", CHAT)
    assert len(with_tools) > len(without)
    text, _, _ = ref.answer("chat", CHAT, max_tokens=8, tools=tools)
    assert text != ref.answer("chat", CHAT, max_tokens=8)[0]
    out = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=8, tools=tools)
    assert out.choices[0].message.content == text and out.usage.prompt_tokens == len(with_tools)
    out = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=8, tools=tools, tool_choice="none")
    assert out.usage.prompt_tokens == len(without)


@pytest.mark.parametrize("extra", [{"compose": "base"}, {"compose": "eft"}, {"compose": "proxy"},
                                   {"rewards": ["lin:0.25"]}, {"rewards": ["twin"]}, {"rewards": ["twin:0.5", "lin"]}])
def test_extra_fields_pick_the_composition_and_rewards(client, references, rewards, backend, extra):
    names = {k: rewards[backend][k].name for k in ("lin", "twin")}
    picked = extra.get("rewards")
    if picked is not None:  # short names in the parameters, the served names in the request
        picked = [names[spec.split(":")[0]] + spec[len(spec.split(":")[0]):] for spec in picked]
    compose = extra.get("compose", "prt")
    text, _, _ = references[backend].answer("completion", PROMPTS[0], compose=compose, rewards=picked, max_tokens=10)
    body = {k: v for k, v in {"compose": extra.get("compose"), "rewards": picked}.items() if v is not None}
    out = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=10, extra_body=body)
    assert out.choices[0].text == text


def test_the_rewards_change_the_answer(references, backend):
    """Guards the comparisons above: the compositions give different answers on these tiny models."""
    ref = references[backend]
    answers = {c: ref.answer("completion", PROMPTS[0], compose=c, max_tokens=10)[0] for c in ("prt", "base", "eft")}
    assert len(set(answers.values())) == 3, answers


def test_logprobs_are_the_composed_log_probs(client, references, backend):
    ref = references[backend]
    model = ref.model()
    out = client.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=4, logprobs=3)
    lp = out.choices[0].logprobs
    ids = model.encode(PROMPTS[1])
    composed = model.backend.to_numpy(model(model.backend.asarray([ids])).logprobs)[0, -1].astype(np.float64)
    best = np.argsort(-composed)[:3]
    assert lp.token_logprobs[0] == pytest.approx(composed[best[0]], abs=1e-4)  # greedy: the first token is the best
    assert list(lp.top_logprobs[0].values()) == pytest.approx(list(composed[best]), abs=1e-4)
    assert len(lp.tokens) == len(lp.token_logprobs) == out.usage.completion_tokens
    chat = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=3, logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens and all(len(c.top_logprobs) == 2 for c in content)
    assert all(c.logprob == pytest.approx(c.top_logprobs[0].logprob) for c in content)


def test_seeded_sampling_equals_generate_with_that_seed(client, references, backend):
    settings = dict(temperature=0.9, top_p=0.95, seed=11)
    text, _, _ = references[backend].answer("completion", PROMPTS[2], max_tokens=10, **settings)
    outs = [client.completions.create(model=MODEL, prompt=PROMPTS[2], max_tokens=10, **settings).choices[0].text
            for _ in range(2)]
    assert outs == [text, text]


def test_stop_strings_end_the_answer_as_generate_ends_it(client, references, backend):
    full, _, _ = references[backend].answer("completion", PROMPTS[0], max_tokens=10)
    stop = full[3:5]
    text, reason, _ = references[backend].answer("completion", PROMPTS[0], max_tokens=10, stop=[stop])
    assert reason == "stop" and stop not in text
    out = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=10, stop=stop)
    assert (out.choices[0].text, out.choices[0].finish_reason) == (text, "stop")
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=10, stop=[stop], stream=True))
    assert "".join(c.choices[0].text for c in chunks) == text


def test_errors_reach_the_client_as_openai_errors(client, backend):
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model=MODEL, prompt="x", max_tokens=4, extra_body={"rewards": ["nope"]})
    assert bad.value.body["param"] == "rewards" and "unknown reward 'nope'" in bad.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt="x", max_tokens=4)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=CHAT, temperature=-1)
    assert bad.value.body["param"] == "temperature"
    assert client.completions.create(model=MODEL, prompt="x", max_tokens=2).usage.completion_tokens >= 1
