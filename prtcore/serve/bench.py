"""`prt bench --serve`: the server's requests/s, tokens/s and latency (p50, p99) at 1, 4 and 16 concurrent clients,
with batching (up to 16 requests decoded together) and one request at a time, and the gain of the first over the
second.

The models are random, of the bench config's target shape, built once under the work directory: a llama target
and a reward of kind `gen_reward` made on it (untrained; its cost is what counts). Each client sends its requests
one after another over plain HTTP to an in-process server on a loopback port: greedy /v1/completions of
`max_tokens` tokens for prompts of different lengths (so batches are left-padded); a request's latency is from
sending it to the whole answer.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

CLIENTS = (1, 4, 16)
BATCHED = 16


def build_models(backend, config, workdir: Path):
    """ServedModels of a random target of `config.target`'s shape and a `config.gen_reward` reward on it."""
    from ..benchmarking.config import reward_config
    from ..benchmarking.models import bench_tokenizer
    from ..model import PRTForCausalLM
    from ..testing.checkpoints import make_tiny_checkpoint
    from .models import ServedModels

    shape = config.target
    root = workdir / f"serve-{shape.hidden}x{shape.layers}-{config.vocab}"
    target_dir = root / "target"
    if not (target_dir / "config.json").is_file():
        make_tiny_checkpoint(target_dir, "llama", tokenizer_dir=bench_tokenizer(workdir, config.vocab), seed=1,
                             init_std=0.02, max_position_embeddings=4096, **shape.overrides())
    reward_dir = root / f"{backend.name}-{config.gen_reward}"
    if not reward_dir.is_dir():
        lm = backend.load_base(target_dir)
        reward = backend.create_reward(reward_config(config, config.gen_reward), lm, seed=2)
        reward.save(reward_dir, source=lm, vocab_size=len(lm.tokenizer))
    model = PRTForCausalLM.from_pretrained(target_dir, reward_dir, backend=backend, source=target_dir)
    return ServedModels("bench", model.target, prt=model, names=[config.gen_reward])


def prompts(config, count: int = 8) -> list[list[int]]:
    """Token-id prompts of lengths around `config.prompt_tokens`."""
    from ..benchmarking.models import random_prompt

    return [random_prompt(config.vocab, max(1, config.prompt_tokens * (i % 4 + 2) // 4), seed=i) for i in range(count)]


def post(connection: http.client.HTTPConnection, body: dict) -> dict:
    connection.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    data = json.loads(response.read())
    if response.status != 200:
        raise RuntimeError(f"the server answered {response.status}: {data}")
    return data


def load(url: str, clients: int, per_client: int, bodies: list[dict]) -> dict:
    """`clients` threads, each sending `per_client` requests in turn: throughput and latency percentiles."""
    address = urlsplit(url)
    latencies, tokens, errors = [], [], []

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=600)
        try:
            for k in range(per_client):
                start = time.perf_counter()
                answer = post(connection, bodies[(index * per_client + k) % len(bodies)])
                latencies.append(time.perf_counter() - start)
                tokens.append(answer["usage"]["completion_tokens"])
        except Exception as e:  # reported after the run
            errors.append(e)
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    ms = np.asarray(latencies) * 1000
    return {"requests": len(latencies), "seconds": elapsed, "requests_per_s": len(latencies) / elapsed,
            "tokens_per_s": sum(tokens) / elapsed, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}


def measure(served, max_batch: int, config, per_client: int, log) -> dict:
    """Every client count against one server whose engine decodes up to `max_batch` requests together."""
    from .app import Service, create_app
    from .engine import Engine
    from .server import Background

    bodies = [{"model": served.name, "prompt": p, "max_tokens": config.max_tokens, "temperature": 0}
              for p in prompts(config)]
    service = Service(served, Engine(max_batch=max_batch, max_queue=max(CLIENTS) * 2,
                                     end_thread=served.backend.end_thread))
    out = {}
    with Background(create_app(service)) as server:
        load(server.url, 1, 2, bodies)  # warm-up
        for clients in CLIENTS:
            out[clients] = load(server.url, clients, per_client, bodies)
            log(f"serve bench: {served.backend.name}, batches of up to {max_batch}, {clients} clients: "
                f"{out[clients]['requests_per_s']:.1f} requests/s")
    return out


def run(backends, config, *, workdir, per_client: int = 8, log=None) -> dict:
    """Measure each backend (batched where it has capability "batched"); the JSON-ready result with a "table".
    The models are kept under `workdir`."""
    from ..plugins import get_backend

    log = log or (lambda message: None)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    result = {"config": {"target": config.target.describe(config.vocab), "reward": config.gen_reward,
                         "max_tokens": config.max_tokens, "prompt_tokens": config.prompt_tokens,
                         "requests_per_client": per_client}, "backends": {}}
    for name in backends:
        backend = get_backend(name)
        served = build_models(backend, config, workdir)
        modes = {"one_at_a_time": measure(served, 1, config, per_client, log)}
        if backend.supports("batched"):
            modes["batched"] = measure(served, BATCHED, config, per_client, log)
        result["backends"][name] = modes
    result["table"] = table(result)
    return result


def table(result: dict) -> str:
    head = ("| backend | clients | batched req/s | tok/s | p50 ms | p99 ms | one-at-a-time req/s | tok/s | p50 ms "
            "| p99 ms | gain |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, modes in result["backends"].items():
        single = modes["one_at_a_time"]
        batched = modes.get("batched")
        for clients in CLIENTS:
            one = single[clients]
            many = batched[clients] if batched else None
            cells = [name, str(clients)]
            for row in (many, one):
                cells += ["n/a"] * 4 if row is None else [f"{row['requests_per_s']:.1f}", f"{row['tokens_per_s']:.0f}",
                                                          f"{row['p50_ms']:.0f}", f"{row['p99_ms']:.0f}"]
            cells.append(f"{many['requests_per_s'] / one['requests_per_s']:.2f}x" if many else "n/a")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
