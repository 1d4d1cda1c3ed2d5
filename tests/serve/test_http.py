"""Plain HTTP against in-process servers: every bad request gets a 4xx with OpenAI's error object and the server
goes on; size limit, API key, timeout, a full queue, and clients that leave (their place in the queue or their
row of a batch is freed)."""

from __future__ import annotations

import json
import time

from serve_testutil import (
    BACKENDS, MODEL, CountingEngine, call, cancel_stream, connect, start_server, stream, wait_for,
)

ONE = "torch" if "torch" in BACKENDS else BACKENDS[0]  # for what does not depend on the backend
C, CHAT = "/v1/completions", "/v1/chat/completions"
GOOD = {"model": MODEL, "prompt": "Hello", "max_tokens": 2}
MSG = [{"role": "user", "content": "hi"}]

# (path, body, status, param, code): body None is sent as the raw bytes b'{bad', bytes as they are
BAD = [
    (C, None, 400, None, None),
    (C, b"[" * 100_000, 400, None, None),  # nested past Python's recursion limit
    (C, [1, 2], 400, None, None),
    (C, {"prompt": "x"}, 400, "model", None),
    (C, {**GOOD, "prompt": 123}, 400, "prompt", None),
    (C, {**GOOD, "prompt": ""}, 400, "prompt", None),
    (C, {**GOOD, "prompt": ["a", "b"]}, 400, "prompt", None),
    (C, {**GOOD, "max_tokens": "10"}, 400, "max_tokens", None),
    (C, {**GOOD, "max_tokens": True}, 400, "max_tokens", None),
    (C, {**GOOD, "max_tokens": 0}, 400, "max_tokens", None),
    (C, {**GOOD, "temperature": 1e4}, 400, "temperature", None),
    (C, {**GOOD, "temperature": "hot"}, 400, "temperature", None),
    (C, {**GOOD, "top_p": 0}, 400, "top_p", None),
    (C, {**GOOD, "top_k": -1}, 400, "top_k", None),
    (C, {**GOOD, "seed": -1}, 400, "seed", None),
    (C, {**GOOD, "stop": 5}, 400, "stop", None),
    (C, {**GOOD, "stream": "yes"}, 400, "stream", None),
    (C, {**GOOD, "stream_options": {"include_usage": True}}, 400, "stream_options", None),
    (C, {**GOOD, "logprobs": 9}, 400, "logprobs", None),
    (C, {**GOOD, "n": 2}, 400, "n", None),
    (C, {**GOOD, "rewrads": ["x"]}, 400, "rewrads", None),
    (C, {**GOOD, "rewards": ["nope"]}, 400, "rewards", None),
    (C, {**GOOD, "rewards": "lin"}, 400, "rewards", None),
    (C, {**GOOD, "rewards": []}, 400, "rewards", None),
    (C, {**GOOD, "compose": "base", "rewards": ["x"]}, 400, "rewards", None),
    (C, {**GOOD, "compose": "magic"}, 400, "compose", None),
    (C, {**GOOD, "prompt": [5] * 600}, 400, "prompt", "context_length_exceeded"),
    (C, {**GOOD, "prompt": [10 ** 6]}, 400, "prompt", None),
    (C, {**GOOD, "model": "gpt-4"}, 404, "model", "model_not_found"),
    (CHAT, {"model": MODEL, "messages": []}, 400, "messages", None),
    (CHAT, {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role", None),
    (CHAT, {"model": MODEL, "messages": [{"role": "user"}]}, 400, "messages[0].content", None),
    (CHAT, {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "messages[0].content", None),
    (CHAT, {"model": MODEL, "messages": MSG, "top_logprobs": 2}, 400, "top_logprobs", None),
    (CHAT, {"model": MODEL, "messages": MSG, "logprobs": True, "top_logprobs": 30}, 400, "top_logprobs", None),
    (CHAT, {"model": MODEL, "messages": MSG, "tools": "x"}, 400, "tools", None),
    (CHAT, {"model": MODEL, "messages": MSG, "prompt": "x"}, 400, "prompt", None),
    (CHAT, {"model": MODEL, "messages": [{"role": "user", "content": "Hello world! " * 400}]}, 400, "messages",
     "context_length_exceeded"),
]


def check_error(status, body, want_status, param=None, code=None):
    assert status == want_status, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if want_status < 500:
        assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code), error


def test_bad_requests_get_a_4xx_with_an_openai_error_and_the_server_goes_on(servers, served):
    url = servers[ONE].url
    names = served[ONE].names
    for path, body, status, param, code in BAD:
        body = b"{bad" if body is None else body
        if isinstance(body, dict) and body.get("rewards") == ["x"]:
            body = {**body, "rewards": [names[0]]}
        got, answer = call(url, path, body)
        check_error(got, answer, status, param, code)
        if isinstance(body, dict) and not {"stream", "stream_options"} & set(body):
            got, answer = stream(url, path, body)  # streamed requests are refused before any event
            assert got == status, (path, body, answer)
    assert call(url, C, GOOD)[0] == 200
    bad_lam = {**GOOD, "rewards": [f"{names[0]}:0"]}
    check_error(*call(url, C, bad_lam), 400, "rewards")
    assert "λ=0 must be > 0" in call(url, C, bad_lam)[1]["error"]["message"]


def test_unknown_routes_and_methods_get_openai_errors(servers):
    url = servers[ONE].url
    check_error(*call(url, "/v1/nothing", method="GET"), 404, None, "not_found")
    check_error(*call(url, C, method="GET"), 405, None, "method_not_allowed")
    status, body = call(url, "/health", method="GET")
    assert status == 200 and body["status"] == "ok"


def test_a_body_over_the_limit_gets_a_413(served):
    with start_server(served[ONE], max_body=4096) as server:
        check_error(*call(server.url, C, {**GOOD, "prompt": "x" * 5000}), 413, None, "request_too_large")
        connection = connect(server.url)  # no Content-Length: the limit holds as the body streams in
        chunks = (b"x" * 1024 for _ in range(8))
        connection.request("POST", C, chunks, {"Content-Type": "application/json"}, encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 413 and b"request_too_large" in response.read()
        connection.close()
        assert call(server.url, C, GOOD)[0] == 200


def test_the_api_key_is_required_when_set(served):
    with start_server(served[ONE], api_key="sekret") as server:
        check_error(*call(server.url, C, GOOD), 401, None, "invalid_api_key")
        check_error(*call(server.url, C, GOOD, headers={"Authorization": "Bearer wrong"}), 401, None, "invalid_api_key")
        check_error(*call(server.url, "/v1/models", method="GET"), 401, None, "invalid_api_key")
        assert call(server.url, C, GOOD, headers={"Authorization": "Bearer sekret"})[0] == 200
        assert call(server.url, "/health", method="GET")[0] == 200


def test_a_request_past_its_time_gets_a_504_and_is_cancelled(served):
    with start_server(served[ONE], timeout=0.3, max_batch=1) as server:
        counter = CountingEngine(server.app.state.service.engine)
        counter.gate.clear()  # the first job holds the engine: it and the next one run out of time
        check_error(*call(server.url, C, GOOD), 504, None, "timeout")
        status, chunks = stream(server.url, C, GOOD)
        assert status == 200 and chunks[-1] == "[DONE]" and chunks[-2]["error"]["code"] == "timeout"
        counter.gate.set()
        wait_for(server.url)
        assert counter.counts == [1, 0] and all(job.cancelled.is_set() for job in counter.jobs)
        assert call(server.url, C, GOOD)[0] == 200


def test_a_full_queue_gets_503_and_the_rest_are_served(served):
    with start_server(served[ONE], max_batch=1, max_queue=1) as server:
        url = server.url
        counter = CountingEngine(server.app.state.service.engine)
        counter.gate.clear()  # the first job holds the engine
        first = send(url, GOOD)
        wait_for(url, running=1)
        second = send(url, GOOD)
        wait_for(url, running=1, waiting=1)
        status, body = call(url, C, GOOD)
        check_error(status, body, 503, None, "overloaded")
        assert body["error"]["type"] == "server_overloaded"
        counter.gate.set()
        for connection in (first, second):
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["usage"]["completion_tokens"] == 2
            connection.close()
        assert call(url, C, GOOD)[0] == 200


def send(url: str, body: dict):
    connection = connect(url)
    connection.request("POST", C, json.dumps(body), {"Content-Type": "application/json"})
    return connection


def leave(connection) -> None:
    connection.sock.close()
    connection.close()


def test_clients_that_leave_free_their_place(served, backend):
    """A streamed request left mid-answer stops being decoded; a waiting one left before its turn never runs
    (test_load.py leaves rows of batches)."""
    with start_server(served[backend], max_batch=1) as server:
        url = server.url
        counter = CountingEngine(server.app.state.service.engine)
        long = {**GOOD, "max_tokens": 400}
        cancel_stream(url, C, long, after=3)
        wait_for(url)
        assert counter.jobs[0].cancelled.is_set() and 2 <= counter.counts[0] < 400
        counter.gate.clear()  # the next job holds the engine at its first token
        running = send(url, long)
        assert counter.held.wait(30)  # its first token decoded (a job left before it would have none)
        waiting = send(url, long)
        wait_for(url, running=1, waiting=1)
        leave(waiting)
        wait_for(url, running=1, waiting=0)
        leave(running)
        deadline = time.monotonic() + 30
        while not counter.jobs[1].cancelled.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        counter.gate.set()
        wait_for(url)
        assert counter.counts[1:] == [1, 0] and all(j.cancelled.is_set() for j in counter.jobs)
        assert call(url, C, GOOD)[0] == 200
