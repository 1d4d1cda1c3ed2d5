"""Helpers of the `prt serve` tests: plain HTTP (http.client, nothing else), server-sent events, and the reference
answers of PRTForCausalLM / ComposedLM `generate` on the same prompts."""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlsplit

from prtcore import PRTForCausalLM
from prtcore.data import render_prompt, turn_end_marker
from prtcore.model import ComposedLM
from prtcore.plugins import installed_backend_names

BACKENDS = [b for b in ("mlx", "torch") if b in installed_backend_names()]
MODEL = "target"  # the served model's id: the target directory's name
TIMEOUT = 120


def serve_args(ckpts, rewards, backend, *extra):
    """`prt serve` flags: the target with both rewards (the twin at λ 2), and --ft for EFT / proxy-tuning."""
    return ["serve", "--backend", backend, "--model", ckpts["target"], "--reward", rewards[backend]["lin"],
            "--reward", f"{rewards[backend]['twin']}:2", "--ft", ckpts["ft"], "--source", ckpts["source"], *map(str, extra)]


def start_server(served, **options):
    """A Background server of `served` (Service options: api_key, timeout, max_tokens, max_body; Engine options:
    max_batch (default 16 where the backend can batch, else 1), max_queue)."""
    from prtcore.serve.app import Service, create_app
    from prtcore.serve.engine import Engine
    from prtcore.serve.server import Background

    batch = options.pop("max_batch", 16 if served.backend.supports("batched") else 1)
    engine = Engine(max_batch=batch, max_queue=options.pop("max_queue", 256))
    return Background(create_app(Service(served, engine, **options)))


def connect(url: str) -> http.client.HTTPConnection:
    address = urlsplit(url)
    return http.client.HTTPConnection(address.hostname, address.port, timeout=TIMEOUT)


def call(url: str, path: str, body=None, *, method: str = "POST", headers: dict | None = None):
    """(status, parsed JSON body) of one request; `body`: a dict (sent as JSON), bytes or str (sent as is)."""
    connection = connect(url)
    try:
        data = json.dumps(body) if isinstance(body, (dict, list)) else body
        connection.request(method, path, data, {"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def wait_for(url, seconds: float = 30, **state) -> dict:
    """/health of the server at `url` once its fields equal `state` (by default: nothing waiting, nothing running)."""
    state = state or {"waiting": 0, "running": 0}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        health = call(url, "/health", method="GET")[1]
        if all(health[k] == v for k, v in state.items()):
            return health
        time.sleep(0.02)
    raise AssertionError(f"/health is {health}, not {state}")


def events(response) -> list:
    """The data of each server-sent event up to "[DONE]" (which ends the list as the string "[DONE]")."""
    out = []
    for line in response:
        line = line.decode().strip()
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
            if data == "[DONE]":
                break
    return out


def stream(url: str, path: str, body: dict, headers: dict | None = None):
    """(status, events) of a streamed request (events: the error body when the status is not 200)."""
    connection = connect(url)
    try:
        connection.request("POST", path, json.dumps({**body, "stream": True}),
                           {"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        if response.status != 200:
            return response.status, json.loads(response.read())
        return 200, events(response)
    finally:
        connection.close()


def cancel_stream(url: str, path: str, body: dict, after: int = 1) -> list:
    """Start a streamed request, read `after` events, then close the connection mid-stream."""
    connection = connect(url)
    try:
        connection.request("POST", path, json.dumps({**body, "stream": True}), {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200, response.read()
        got = []
        for line in response:
            if line.startswith(b"data: "):
                got.append(line)
                if len(got) >= after:
                    break
        return got
    finally:
        connection.sock and connection.sock.close()
        connection.close()


def streamed_text(chunks: list, chat: bool) -> tuple[str, str | None]:
    """(text, finish reason) put together from streamed chunks."""
    text, reason = "", None
    for chunk in chunks:
        if chunk == "[DONE]" or not chunk.get("choices"):
            continue
        choice = chunk["choices"][0]
        text += (choice["delta"].get("content") or "") if chat else choice["text"]
        reason = choice["finish_reason"] or reason
    return text, reason


class Reference:
    """The answers of models loaded apart from the server's: `generate` on the same token ids, stop strings and
    sampling settings. Names of rewards as the server gives them: the artifact directories' names."""

    def __init__(self, backend: str, ckpts: dict, rewards: dict):
        self.backend, self.ckpts, self.paths = backend, ckpts, rewards
        self.names = {rewards[k].name: rewards[k] for k in rewards}
        self.defaults = [(rewards["lin"].name, None), (rewards["twin"].name, 2.0)]
        self._models: dict = {}
        self._answers: dict = {}
        self._lock = threading.Lock()

    def model(self, compose: str = "prt", rewards=None):
        chosen = self.defaults if rewards is None else [self._reward(spec) for spec in rewards]
        key = (compose, tuple(chosen) if compose == "prt" else None)
        if key not in self._models:
            c = self.ckpts
            if compose == "prt":
                model = PRTForCausalLM.from_pretrained(c["target"], [self.names[n] for n, _ in chosen],
                                                       self.backend, source=c["source"])
                lams = [lam if lam is not None else r.config.lam for (_, lam), r in zip(chosen, model.rewards)]
                model = PRTForCausalLM(model.backend, model.target, model.rewards, lams, model.sources)
            elif compose == "base":
                model = ComposedLM.from_pretrained(c["target"], method="base", backend=self.backend)
            else:
                model = ComposedLM.from_pretrained(c["target"], finetuned=c["ft"], source=c["source"], method=compose,
                                                   backend=self.backend)
            self._models[key] = model
        return self._models[key]

    def _reward(self, spec: str):
        """(name, λ) of "NAME[:λ]": a name alone has the λ the server loaded it with."""
        name, sep, lam = spec.rpartition(":")
        return (name, float(lam)) if sep else (spec, dict(self.defaults)[spec])

    def prompt_ids(self, kind: str, prompt, tools=None) -> list[int]:
        model = self.model("base")
        if kind == "chat":
            return render_prompt(model.tokenizer, prompt, tools=tools)
        return model.encode(prompt)

    def answer(self, kind: str, prompt, *, compose: str = "prt", rewards=None, max_tokens: int = 8, stop=(),
               tools=None, **sampling) -> tuple[str, str, int]:
        """(text, finish reason, tokens generated) of PRTForCausalLM / ComposedLM `stream_steps`."""
        key = (kind, json.dumps(prompt), compose, tuple(rewards or ()) if rewards is not None else None, max_tokens,
               tuple(stop), json.dumps(tools), tuple(sorted(sampling.items())))
        with self._lock:
            if key not in self._answers:
                model = self.model(compose, rewards)
                stops = list(stop)
                if kind == "chat":
                    stops.append(turn_end_marker(model.tokenizer))
                steps = list(model.stream_steps(self.prompt_ids(kind, prompt, tools), max_tokens=max_tokens,
                                                stop=stops, **sampling))
                self._answers[key] = ("".join(s.text for s in steps), steps[-1].finish_reason, len(steps))
            return self._answers[key]


class CountingEngine:
    """Wraps an Engine's submit to count each job's events (jobs in order of arrival in `jobs`). While `gate` is
    clear, the engine's thread waits before delivering an event: the job in progress holds the engine (`held` is
    set once it does)."""

    def __init__(self, engine):
        self.jobs, self.counts = [], []
        self.gate, self.held = threading.Event(), threading.Event()
        self.gate.set()
        submit = engine.submit

        def counting(job):
            index = len(self.counts)
            self.counts.append(0)
            emit = job.emit

            def counted(event):
                if not self.gate.is_set():
                    self.held.set()
                self.gate.wait()
                self.counts[index] += 1
                emit(event)

            job.emit = counted
            self.jobs.append(job)
            submit(job)

        engine.submit = counting
