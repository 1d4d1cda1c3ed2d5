"""`prt serve` as a real subprocess (the key from PRT_API_KEY, the openai client, SIGTERM finishing a stream in
flight), its flags' errors, and `prt bench --serve`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from prtcore import get_backend
from prtcore.cli.main import main
from serve_testutil import BACKENDS, MODEL, connect, events, serve_args, streamed_text

openai = pytest.importorskip("openai")

PRT = str(Path(sys.executable).with_name("prt"))
ONE = "torch" if "torch" in BACKENDS else BACKENDS[0]
PROMPT = "The capital of Avalon is"


def first_line(proc: subprocess.Popen, seconds: float = 120) -> str:
    got = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    if not got or not got[0]:
        proc.kill()
        raise AssertionError(f"prt serve did not start: {proc.stderr.read()[-3000:]}")
    return got[0]


def test_prt_serve_answers_and_finishes_the_stream_in_flight_on_sigterm(ckpts, rewards, references):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRT_")}
    env.update(PRT_API_KEY="sekret", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([PRT, *map(str, serve_args(ckpts, rewards, ONE, "--port", "0"))], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = re.search(r"(http://\S+)/v1 serves 'target'", first_line(proc)).group(1)
        assert url.startswith("http://127.0.0.1:")  # --host's default: this machine only
        reference = references[ONE]
        with openai.OpenAI(base_url=url + "/v1", api_key="sekret", max_retries=0) as client:
            out = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8)
            assert out.choices[0].text == reference.answer("completion", PROMPT, max_tokens=8)[0]
        with openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0) as client:
            with pytest.raises(openai.AuthenticationError):
                client.models.list()

        connection = connect(url)
        body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 300, "stream": True}
        connection.request("POST", "/v1/completions", json.dumps(body),
                           {"Content-Type": "application/json", "Authorization": "Bearer sekret"})
        response = connection.getresponse()
        first = response.readline()
        assert first.startswith(b"data: ")
        proc.send_signal(signal.SIGTERM)
        rest = events(response)
        connection.close()
        chunks = [json.loads(first[len(b"data: "):])] + rest
        assert rest[-1] == "[DONE]" and len(rest) > 10  # most of the answer came after the signal
        assert streamed_text(chunks, chat=False) == reference.answer("completion", PROMPT, max_tokens=300)[:2]
        # uvicorn re-raises the signal once the requests in flight are done: the exit status of a SIGTERM
        assert proc.wait(timeout=60) == -signal.SIGTERM
        with pytest.raises(OSError):
            connect(url).request("GET", "/health")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.mark.parametrize("flags, message", [
    (["--max-batch", "0"], "--max-batch 0: must be >= 1"),
    (["--port", "70000"], "--port 70000: must be <= 65535"),
    (["--request-timeout", "0"], "--request-timeout 0.0: must be > 0"),
    (["--reward", "/no/such/reward"], "/no/such/reward"),
    ([], "--compose prt needs at least one --reward DIR"),
    (["--compose", "eft"], "--compose eft: EFT and proxy-tuning need --ft"),
    (["--compose", "base", "--max-kv-size", "0"], "--max-kv-size 0: must be >= 1"),
])
def test_bad_flags_fail_in_one_line_before_serving(ckpts, capsys, flags, message):
    assert main(["serve", "--backend", ONE, "--model", str(ckpts["target"]), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prt serve: error: ") and message in err and len(err.strip().splitlines()) == 1, err


def test_bench_serve_reports_each_client_count_and_the_gain_of_batching(tmp_path, capsys):
    output = tmp_path / "serve.json"
    assert main(["bench", "--serve", "--small", "--backend", ",".join(BACKENDS), "--max-tokens", "2",
                 "--serve-requests", "1", "--workdir", str(tmp_path), "--output", str(output), "--quiet"]) == 0
    result = json.loads(output.read_text())
    table = capsys.readouterr().out
    for name in BACKENDS:
        modes = result["backends"][name]
        batched = "batched" in modes
        assert batched == get_backend(name).supports("batched")  # one at a time only where it cannot batch
        for clients in ("1", "4", "16"):
            row = modes["one_at_a_time"][clients]
            assert row["requests"] == int(clients) and row["tokens_per_s"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
            line = next(line for line in table.splitlines() if line.startswith(f"| {name} | {clients} |"))
            assert line.rstrip(" |").endswith("x") == batched


@pytest.mark.skipif("mlx" not in BACKENDS, reason="rotating KV caches: the mlx backend")
def test_max_kv_size_bounds_the_served_caches_as_generate_s(ckpts, rewards):
    """--max-kv-size (a model-loading flag of `prt generate`) reaches the served models: with a window shorter than
    prompt + answer, the answer is generate's under the same flag, and differs from the unbounded one."""
    from prtcore.cli.common import load_model
    from prtcore.cli.main import build_parser
    from prtcore.cli.serve import load_served
    from serve_testutil import call, start_server

    parser, bound = build_parser(), ["--max-kv-size", "8"]
    flags = [str(a) for a in serve_args(ckpts, rewards, "mlx")]
    served = load_served(parser.parse_args(flags + bound))
    generate = ["generate", "--backend", "mlx", "--model", str(ckpts["target"]), "--reward", str(rewards["mlx"]["lin"]),
                "--reward", f"{rewards['mlx']['twin']}:2", "--source", str(ckpts["source"])]
    prompt = [5, 17, 42, 8, 99, 3]
    bounded = load_model(parser.parse_args(generate + bound + ["--prompt", "x"])).generate(prompt, max_tokens=12)
    unbounded = load_model(parser.parse_args(generate + ["--prompt", "x"])).generate(prompt, max_tokens=12)
    assert bounded != unbounded
    with start_server(served) as server:
        status, body = call(server.url, "/v1/completions", {"model": MODEL, "prompt": prompt, "max_tokens": 12})
    assert status == 200 and body["choices"][0]["text"] == bounded
