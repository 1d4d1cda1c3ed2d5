"""Fixtures of the `prt serve` tests: tiny checkpoints (a target, a source and a "fine-tuned" source), two reward
artifacts per backend, a server per backend (in-process uvicorn on a free loopback port, loaded through the CLI's
own loader) and reference models loaded separately, whose `generate` every answer is compared with."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")  # the tiny checkpoints are written with transformers, whatever the backend

from serve_testutil import BACKENDS, MODEL, Reference, serve_args, start_server  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on two busy cores their spinning costs 30× (the `prt`
    subprocesses of the suite run with OMP_NUM_THREADS=1 for the same reason)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory):
    """Paths: target (llama, 3 layers, head padded by 8 rows), source (another llama), ft (a stand-in for a
    fine-tune of the source: same shape, other weights)."""
    from prtcore.benchmarking.models import synthetic_corpus
    from prtcore.testing.checkpoints import CHATML_TEMPLATE, DEFAULT_CORPUS, make_tiny_checkpoint, make_tokenizer

    root = tmp_path_factory.mktemp("serve")
    # enough merges that most tokens are whole words: answers are mostly readable text, not stray bytes; a ChatML
    # template that lists the request's tools in a system turn (as Qwen's does), so that tools reach the prompt
    template = "{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}" + CHATML_TEMPLATE
    tok = make_tokenizer(root / "tok", [DEFAULT_CORPUS] + synthetic_corpus(0, 4000), vocab_size=1024,
                         chat_template=template)
    return {
        "root": root,
        "target": make_tiny_checkpoint(root / MODEL, "llama", tokenizer_dir=tok, seed=1, num_hidden_layers=3,
                                       extra_vocab_rows=8),
        "source": make_tiny_checkpoint(root / "source", "llama", tokenizer_dir=tok, seed=0),
        "ft": make_tiny_checkpoint(root / "ft", "llama", tokenizer_dir=tok, seed=5),
    }


@pytest.fixture(scope="session")
def rewards(ckpts):
    """backend -> {"lin": a linear reward reading the source's hidden states, "twin": a LoRA twin of the source}."""
    from prtcore import RewardConfig, get_backend

    out = {}
    for name in BACKENDS:
        backend = get_backend(name)
        source = backend.load_base(ckpts["source"])
        lin = backend.create_reward(RewardConfig(kind="linear"), source, seed=3)
        twin_base = backend.load_base(ckpts["source"])
        twin = backend.create_reward(RewardConfig(kind="twin", lora={"rank": 4, "num_layers": 2}), twin_base, seed=4)
        vocab = len(source.tokenizer)
        out[name] = {"lin": lin.save(ckpts["root"] / f"{name}-lin", source=source, vocab_size=vocab),
                     "twin": twin.save(ckpts["root"] / f"{name}-twin", source=twin_base, vocab_size=vocab)}
    return out


@pytest.fixture(scope="session")
def served(ckpts, rewards):
    """backend -> ServedModels, loaded by prt serve's own loader from its flags."""
    from prtcore.cli.main import build_parser
    from prtcore.cli.serve import load_served

    parser = build_parser()
    return {b: load_served(parser.parse_args([str(a) for a in serve_args(ckpts, rewards, b)])) for b in BACKENDS}


@pytest.fixture(scope="session")
def servers(served):
    """backend -> a running Background server (batches of up to 16 where the backend can batch)."""
    running = {b: start_server(served[b]).__enter__() for b in BACKENDS}
    yield running
    for server in running.values():
        server.__exit__(None, None, None)


@pytest.fixture(scope="session")
def references(ckpts, rewards):
    """backend -> Reference (models loaded apart from the server's)."""
    return {b: Reference(b, ckpts, rewards[b]) for b in BACKENDS}


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS)
