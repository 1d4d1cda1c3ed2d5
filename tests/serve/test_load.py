"""The load test: 16 concurrent clients send 208 requests (completions and chats, streamed or not, several
compositions, seeded sampling, malformed ones, and streams they leave after the first event) to one server per
backend. Every good request must get the answer of PRTForCausalLM / ComposedLM `generate` on its prompt, every
bad one its error; afterwards the engine is idle, and on a backend that batches, requests were decoded together."""

from __future__ import annotations

import threading

from serve_testutil import MODEL, CountingEngine, call, cancel_stream, stream, streamed_text, wait_for

CLIENTS = 16
ROUNDS = 16  # of the 13 cases below: 208 requests
LEFT_TOKENS = 300  # what a stream left after its first event asks for (no other request asks as many)
PROMPTS = ["The capital of Avalon is", "Hello world!", "Numbers: 0 1 2", "def add(a, b):\n    return"]
C, CHAT = "/v1/completions", "/v1/chat/completions"


def cases(lin: str) -> list[dict]:
    """The requests, each with what it expects: "answer" (kind, prompt, options for Reference.answer) or "error"
    (status, param, code), or "leave" (a stream left after its first event)."""
    out = []
    for r in range(ROUNDS):
        prompt = PROMPTS[r % len(PROMPTS)]
        chat = [{"role": "user", "content": prompt}]
        n = 4 + r % 9  # rows of one batch end at different steps
        for path, body, streamed, compose, rewards, sampling in (
                (C, {"prompt": prompt}, False, None, None, {}),
                (C, {"prompt": prompt, "stream_options": {"include_usage": True}}, True, None, None, {}),
                (CHAT, {"messages": chat}, False, None, None, {}),
                (CHAT, {"messages": chat}, True, None, None, {}),
                (C, {"prompt": prompt, "compose": "base"}, r % 2 == 1, "base", None, {}),
                (C, {"prompt": prompt, "compose": "eft"}, False, "eft", None, {}),
                (C, {"prompt": prompt, "rewards": [f"{lin}:0.5"]}, False, None, [f"{lin}:0.5"], {}),
                (C, {"prompt": prompt, "temperature": 0.8, "seed": r}, False, None, None,
                 {"temperature": 0.8, "seed": r})):
            kind = "chat" if path == CHAT else "completion"
            options = {"compose": compose or "prt", "rewards": rewards, "max_tokens": n, **sampling}
            out.append({"path": path, "body": {"model": MODEL, "max_tokens": n, **body}, "stream": streamed,
                        "answer": (kind, chat if kind == "chat" else prompt, options)})
        out += [
            {"path": C, "raw": b'{"model": "target", "prompt": ', "error": (400, None, None)},
            {"path": C, "body": {"model": MODEL, "prompt": prompt, "rewards": ["nobody"]}, "error": (400, "rewards", None)},
            {"path": CHAT, "body": {"model": MODEL, "messages": chat, "temperature": -1}, "error": (400, "temperature", None)},
            {"path": C, "body": {"model": MODEL, "prompt": [7] * 700}, "stream": r % 2 == 0,
             "error": (400, "prompt", "context_length_exceeded")},
            {"path": C, "body": {"model": MODEL, "prompt": prompt, "max_tokens": LEFT_TOKENS}, "leave": True},
        ]
    return out


def send(url: str, case: dict) -> dict:
    if "leave" in case:
        return {"events": cancel_stream(url, case["path"], case["body"], after=1)}
    if case.get("stream"):
        status, events = stream(url, case["path"], case["body"])
        return {"status": status, "events": events}
    status, body = call(url, case["path"], case.get("raw") or case["body"])
    return {"status": status, "body": body}


def check(case: dict, got: dict, reference) -> None:
    if "leave" in case:
        assert got["events"], "no event before leaving"
        return
    if "error" in case:
        status, param, code = case["error"]
        body = got["body"] if "body" in got else got["events"]
        assert got["status"] == status and (body["error"]["param"], body["error"]["code"]) == (param, code), body
        return
    kind, prompt, options = case["answer"]
    text, reason, count = reference.answer(kind, prompt, **options)
    assert got["status"] == 200, got
    if case.get("stream"):
        events = got["events"]
        assert events[-1] == "[DONE]", events
        assert streamed_text(events, kind == "chat") == (text, reason), (case, events)
        if "stream_options" in case["body"]:
            assert events[-2]["usage"]["completion_tokens"] == count
        return
    choice = got["body"]["choices"][0]
    assert (choice["message"]["content"] if kind == "chat" else choice["text"], choice["finish_reason"]) == (text, reason), case
    assert got["body"]["usage"]["completion_tokens"] == count


def test_two_hundred_requests_from_sixteen_clients(servers, references, served, backend):
    server, reference = servers[backend], references[backend]
    plan = cases(served[backend].names[0])
    assert len(plan) >= 200
    for case in plan:  # the expected answers, before the load starts
        if "answer" in case:
            kind, prompt, options = case["answer"]
            reference.answer(kind, prompt, **options)
    results: list = [None] * len(plan)
    failures: list = []

    def client(index: int) -> None:
        for i in range(index, len(plan), CLIENTS):
            try:
                results[i] = send(server.url, plan[i])
            except Exception as e:  # reported below, with the case
                failures.append((plan[i], repr(e)))

    engine = server.app.state.service.engine
    batches_before = engine.batches
    counter = CountingEngine(engine)  # the events each job got
    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        wait_for(server.url)  # every row ended, the streams left included
    finally:
        del engine.submit  # the session's server goes on uncounted
    assert not failures, failures[:3]
    for case, got in zip(plan, results):
        check(case, got, reference)
    counts = {k: sum(1 for c in plan if k in c) for k in ("answer", "error", "leave")}
    assert counts == {"answer": 128, "error": 64, "leave": 16}
    decoded = counts["answer"] + counts["leave"]
    assert len(counter.jobs) == decoded  # the malformed ones never reached the engine
    left = [n for job, n in zip(counter.jobs, counter.counts) if job.max_tokens == LEFT_TOKENS]
    assert len(left) == counts["leave"] and all(1 <= n < LEFT_TOKENS for n in left), left  # their rows were freed
    if served[backend].backend.supports("batched"):
        assert engine.largest > 1 and engine.batches - batches_before < decoded
    else:
        assert engine.largest == 1
