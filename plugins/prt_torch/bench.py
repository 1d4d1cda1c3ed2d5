"""The torch backend's benchmark (`TorchBackend.benchmark`, `prt bench`): transformers' own `generate`, prtcore's
loop, static caches / CUDA graphs, and training steps of PRT against plain LoRA fine-tuning through peft; the
CUDA allocator's peak memory (`TorchBackend.memory_meter`)."""

from __future__ import annotations

import gc
import time

import torch

from prtcore.benchmarking.config import BenchConfig, ModelShape, reward_config
from prtcore.benchmarking.memory import PeakMeter
from prtcore.benchmarking.models import bench_tokenizer, hf_config, random_batches
from prtcore.benchmarking.paths import generation_models, loop_path
from prtcore.benchmarking.threads import thread_environment
from prtcore.benchmarking.timing import build_measured, side_by_side, step_entries, steps_side_by_side, token_clock

from .base import TorchBaseLM, default_device, load_tokenizer, resolve_dtype


class CudaPeakMeter(PeakMeter):
    """Peak of CUDA's caching allocator on one device (torch.cuda.max_memory_allocated)."""

    measure = "torch.cuda.max_memory_allocated"

    def __init__(self, device):
        super().__init__()
        self.device = device

    def start(self) -> int:
        torch.cuda.empty_cache()
        return torch.cuda.memory_allocated(self.device)

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated(self.device)

    def stop(self, *exc) -> None:
        pass


def memory_meter(device=None) -> PeakMeter:
    """CUDA's allocator on a CUDA device (default: cuda when available), else the host's peak resident memory."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return CudaPeakMeter(str(device)) if str(device).startswith("cuda") else PeakMeter()


def torch_base(backend, shape: ModelShape, tokenizer_dir, *, seed: int, device=None, dtype=None) -> TorchBaseLM:
    """A TorchBaseLM with random weights of `shape` (transformers' own init, built directly on `device`)."""
    from transformers import AutoModelForCausalLM

    from prtcore.testing.checkpoints import hub_config

    tokenizer = load_tokenizer(tokenizer_dir)
    config = hf_config(shape, tokenizer)
    device = torch.device(device) if device is not None else default_device()
    dtype = resolve_dtype(dtype, device)
    torch.manual_seed(seed)
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    except (RuntimeError, TypeError, NotImplementedError):  # older transformers: build on the CPU, then move
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device)
    model.eval().requires_grad_(False)
    return TorchBaseLM(backend, model, tokenizer, None, hub_config(config.to_dict(), config))


def perturb(reward, seed: int, scale: float = 0.02) -> None:
    """Small random trained weights (a zero-initialised head would make every reward 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in reward.trainable_parameters().values():
            p.add_(scale * torch.randn(p.shape, generator=gen).to(p.device, p.dtype))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Clock:
    """A transformers streamer that notes when each generated token arrives (the first `put` is the prompt)."""

    def __init__(self):
        self.times = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


def _hf_path(generate, prompt_ids, max_tokens, pad_id):
    def run(n=max_tokens):
        clock = _Clock()
        with torch.no_grad():
            out = generate(input_ids=prompt_ids, max_new_tokens=n, do_sample=False, streamer=clock,
                           pad_token_id=pad_id)
        tokens = out[0, prompt_ids.shape[1]:].tolist()
        return tokens, clock.times[1:]

    return run


def _static_path(static, prompt, max_tokens):
    def run(n=max_tokens):
        return token_clock(static.stream_steps(prompt, max_tokens=n, eos_ids=()), lambda s: s.token)

    return run


# ------------------------------------------------------------------------------------------------ generation
def generation(backend, config: BenchConfig, workdir, log) -> dict:
    from .generation import PRTGenerator
    from .graphs import StaticDecoding

    tok = bench_tokenizer(workdir, config.vocab)
    opts = dict(device=config.device, dtype=config.dtype)
    log("torch: building the target, the source and EFT's fine-tuned source")
    target = torch_base(backend, config.target, tok, seed=config.seed, **opts)
    source = torch_base(backend, config.source, tok, seed=config.seed + 1, **opts)
    finetuned = torch_base(backend, config.source, tok, seed=config.seed + 2, **opts)
    device = target.device
    reward = backend.create_reward(reward_config(config, config.gen_reward), source, seed=config.seed + 3)
    perturb(reward, config.seed + 4)
    reward.trainable = False
    _, prt, eft, alone, reward_alone, prompt = generation_models(backend, config, target, source, finetuned, reward)
    ids = torch.tensor([prompt], device=device)
    pad = target.tokenizer.pad_token_id or 0
    n = config.max_tokens
    cuda = device.type == "cuda"

    paths = {"target.native": _hf_path(target.generate, ids, n, pad)}
    if reward.config.kind == "twin":
        def reward_generate(**kw):
            with reward.active():
                return reward.module.generate(**kw)

        paths["reward.native"] = _hf_path(reward_generate, ids, n, pad)
    paths["target.loop"] = loop_path(alone, prompt, n, pipeline=False)
    paths["reward.loop"] = loop_path(reward_alone, prompt, n, pipeline=False)
    paths["prt.loop"] = loop_path(prt, prompt, n, pipeline=False)
    paths["eft.loop"] = loop_path(eft, prompt, n, pipeline=False)
    if cuda:
        paths["prt.pipelined"] = loop_path(prt, prompt, n, pipeline=True)
        paths["eft.pipelined"] = loop_path(eft, prompt, n, pipeline=True)
    for name, model in (("target", alone), ("reward", reward_alone), ("prt", prt), ("eft", eft)):
        if config.paths is not None and f"{name}.static" not in config.paths:
            continue
        try:
            decoding = StaticDecoding(model, max_len=config.prompt_tokens + n)
        except Exception as e:  # reported in the table (e.g. an architecture static decoding does not cover)
            log(f"  {name}.static unavailable: {type(e).__name__}: {e}")
            continue
        paths[f"{name}.static"] = _static_path(decoding, prompt, n)

    generator = PRTGenerator(prt)

    def prt_processor(**kw):
        return target.generate(logits_processor=[generator.logits_processor()], **kw)

    paths["prt.processor"] = _hf_path(prt_processor, ids, n, pad)
    log(f"torch generation on {device} ({target.dtype}): {len(paths)} paths x {config.repeats} rounds, "
        f"{n} tokens each")
    if config.paths is not None:
        paths = {k: v for k, v in paths.items() if k in config.paths}
    runs = side_by_side(paths, config.repeats, log=log)
    return {"device": str(device), "dtype": str(target.dtype).replace("torch.", ""), "graphs": cuda,
            "reward_kind": reward.config.kind, "paths": runs, "prompt_tokens": len(prompt), "max_tokens": n}


# ------------------------------------------------------------------------------------------------ training
def _inputs(batches, device):
    return [{"ids": torch.from_numpy(ids.astype("int64")).to(device), "mask": torch.from_numpy(mask).to(device)}
            for ids, mask in batches]


def _adamw(parameters):
    """AdamW as prt_torch's trainers run it (TrainingArguments' `adamw_torch_fused`: one fused kernel per update)."""
    return torch.optim.AdamW(list(parameters), lr=1e-5, fused=True)


def _build_lora(config, backend, tok, opts, inputs):
    """What a peft user runs: the adapted model's forward with labels, i.e. transformers' own causal-LM loss
    (float32 cross-entropy), over the same positions as a PRT step (`shift_labels`: the targets, already shifted)."""
    from peft import get_peft_model

    from .rewards import lora_config

    lm = torch_base(backend, config.source, tok, seed=config.seed + 1, **opts)
    model = get_peft_model(lm.model, lora_config(reward_config(config, "twin"), lm.model, None))
    model.train()
    optimizer = _adamw(p for p in model.parameters() if p.requires_grad)
    state = {"i": 0}

    def step():
        batch = inputs[state["i"] % len(inputs)]
        state["i"] += 1
        ids, mask = batch["ids"], batch["mask"]
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100).contiguous()
        loss = model(input_ids=ids[:, :-1], labels=targets, shift_labels=targets).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(lm.device)

    return step, {"model": model, "optimizer": optimizer, "lm": lm}


def _build_prt(kind, config, backend, tok, opts, inputs):
    from .trainer import batch_loss

    source = torch_base(backend, config.source, tok, seed=config.seed + 1, **opts)
    reward = backend.create_reward(reward_config(config, kind), source, seed=config.seed + 3)
    reward.module.train()
    optimizer = _adamw(reward.trainable_parameters().values())
    vocab = len(source.tokenizer)
    state = {"i": 0}

    def step():
        batch = inputs[state["i"] % len(inputs)]
        state["i"] += 1
        loss, _ = batch_loss(reward, source, reward.module, batch, vocab, lam=reward.config.lam,
                             entropy_coeff=reward.config.entropy_coeff,  # PRTTrainer's step within a log window:
                             entropy_metric=False)  # no entropy metric
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(source.device)

    return step, {"reward": reward, "optimizer": optimizer, "source": source}


def _forward_only(config, backend, tok, opts, inputs):
    lm = torch_base(backend, config.source, tok, seed=config.seed + 1, **opts)
    state = {"i": 0}

    def step():
        batch = inputs[state["i"] % len(inputs)]
        state["i"] += 1
        with torch.no_grad():
            lm.forward(batch["ids"][:, :-1])
        _sync(lm.device)

    return step, {"lm": lm}


def training(backend, config: BenchConfig, workdir, log) -> dict:
    tok = bench_tokenizer(workdir, config.vocab)
    device = torch.device(config.device) if config.device else default_device()
    opts = dict(device=str(device), dtype=config.dtype)
    inputs = _inputs(random_batches(config.vocab, config.train_batch, config.train_seq, 4, config.seed), device)
    builders = {"lora": lambda: _build_lora(config, backend, tok, opts, inputs)}
    for kind in config.train_rewards:
        builders[f"prt.{kind}"] = (lambda k: lambda: _build_prt(k, config, backend, tok, opts, inputs))(kind)
    builders["forward"] = lambda: _forward_only(config, backend, tok, opts, inputs)
    cuda = device.type == "cuda"
    from . import trainer  # noqa: F401  (imported here, its memory is no configuration's)

    step, keep = builders["lora"]()  # a throwaway configuration takes one-time allocations out of the measurement
    step()
    del step, keep
    one_thread = None if cuda else (lambda: torch.set_num_threads(1))  # a CPU's peak RSS: each measured in a fork
    steps, memory, alive = build_measured(builders, lambda: memory_meter(device), log, isolated=one_thread)
    memory.pop("forward", None)
    log(f"torch training on {device}: batch {config.train_batch} x {config.train_seq} tokens, "
        f"{len(steps)} configurations x {config.train_repeats} rounds")
    times = steps_side_by_side(steps, config.train_repeats, per_round=config.train_steps, warmup=False, log=log)
    del alive
    return {"device": str(device), "dtype": config.dtype or str(torch.get_default_dtype()).replace("torch.", ""),
            "memory_measure": "cuda max_memory_allocated over the floor" if cuda else "peak RSS (VmHWM) over the floor",
            "threads": {"torch.get_num_threads()": torch.get_num_threads(), **thread_environment()},
            "steps": step_entries(times, memory)}


def run(backend, config: BenchConfig, workdir, log=None) -> dict:
    """`TorchBackend.benchmark`: generation, then training, as `config` asks."""
    log = log or (lambda message: None)
    out = {"backend": "torch", "threads": config.threads or torch.get_num_threads()}
    if torch.cuda.is_available():  # what the GPU check reports it ran on
        out["cuda"] = {"version": torch.version.cuda, "device": torch.cuda.get_device_name()}
    saved = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)  # tiny models: threads only add synchronisation
    try:
        if config.generation:
            out["generation"] = generation(backend, config, workdir, log)
            gc.collect()
        if config.training:
            out["training"] = training(backend, config, workdir, log)
    finally:
        torch.set_num_threads(saved)
    return out
