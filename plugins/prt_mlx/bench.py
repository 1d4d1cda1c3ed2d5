"""The mlx backend's benchmark (`MLXBackend.benchmark`, `prt bench`): mlx-lm's own `generate_step`, prtcore's loop
(eager and with asynchronous evaluation), the reward as an mlx-lm logits processor, and training steps of PRT
against plain LoRA with mlx-lm's trainer pieces (its LoRA layers and `default_loss`); the peak of mlx's allocator
(`MLXBackend.memory_meter`)."""

from __future__ import annotations

import gc

import mlx.core as mx
from mlx.utils import tree_flatten

from prtcore.benchmarking.config import BenchConfig, ModelShape, reward_config
from prtcore.benchmarking.memory import PeakMeter
from prtcore.benchmarking.models import INIT_STD, bench_tokenizer, hf_config, random_batches
from prtcore.benchmarking.paths import generation_models, loop_path
from prtcore.benchmarking.threads import loaded_openblas_threads, thread_environment
from prtcore.benchmarking.timing import build_measured, side_by_side, step_entries, steps_side_by_side, token_clock

from .base import DTYPES, MLXBaseLM, normalize_config


class MLXPeakMeter(PeakMeter):
    """Peak of mlx's allocator (mx.get_peak_memory)."""

    measure = "mx.get_peak_memory"

    def start(self) -> int:
        mx.clear_cache()
        return mx.get_active_memory()

    def reset_peak(self) -> None:
        mx.reset_peak_memory()

    def peak(self) -> int:
        return mx.get_peak_memory()

    def stop(self, *exc) -> None:
        pass


def mlx_base(backend, shape: ModelShape, tokenizer_dir, *, seed: int, dtype=None) -> MLXBaseLM:
    """An MLXBaseLM with random weights of `shape`: N(0, INIT_STD²) weights, unit norms."""
    from mlx_lm.utils import _get_classes

    from prtcore.testing.checkpoints import hub_config

    tokenizer = backend.load_tokenizer(tokenizer_dir)
    hf = hf_config(shape, tokenizer)
    config = hub_config(hf.to_dict(), hf)
    merged = {**config, **normalize_config(config)}
    model_class, args_class = _get_classes(merged)
    model = model_class(args_class.from_dict(merged))
    key = mx.random.key(seed)
    weights = []
    for name, value in tree_flatten(model.parameters()):
        key, sub = mx.random.split(key)
        if "norm" in name and value.ndim == 1:
            weights.append((name, mx.ones(value.shape)))
        else:
            weights.append((name, INIT_STD * mx.random.normal(value.shape, key=sub)))
    model.load_weights(weights)
    if dtype is not None:
        model.set_dtype(DTYPES[dtype])
    mx.eval(model.parameters())
    return MLXBaseLM(backend, model, tokenizer, config, None, {"dtype": dtype} if dtype else {})


def perturb(reward, seed: int, scale: float = 0.02) -> None:
    """Small random trained weights (a zero-initialised head would make every reward 0)."""
    key = mx.random.key(seed)
    params = reward.module.trainable_parameters()
    noise = []
    for name, value in tree_flatten(params):
        key, sub = mx.random.split(key)
        noise.append((name, value + scale * mx.random.normal(value.shape, key=sub).astype(value.dtype)))
    reward.module.load_weights(noise, strict=False)
    mx.eval(reward.module.parameters())


def _native_path(model, prompt, max_tokens, processors=None):
    from mlx_lm.generate import generate_step

    def run(n=max_tokens):
        procs = processors() if processors else None
        steps = generate_step(mx.array(prompt), model, max_tokens=n, logits_processors=procs)
        return token_clock(steps, lambda s: s[0])

    return run


# ------------------------------------------------------------------------------------------------ generation
def generation(backend, config: BenchConfig, workdir, log) -> dict:
    from .generation import PRTLogitsProcessor

    tok = bench_tokenizer(workdir, config.vocab)
    log("mlx: building the target, the source and EFT's fine-tuned source")
    target = mlx_base(backend, config.target, tok, seed=config.seed, dtype=config.dtype)
    source = mlx_base(backend, config.source, tok, seed=config.seed + 1, dtype=config.dtype)
    finetuned = mlx_base(backend, config.source, tok, seed=config.seed + 2, dtype=config.dtype)
    reward = backend.create_reward(reward_config(config, config.gen_reward), source, seed=config.seed + 3)
    perturb(reward, config.seed + 4)
    feeder, prt, eft, alone, reward_alone, prompt = generation_models(backend, config, target, source, finetuned, reward)
    n = config.max_tokens

    paths = {"target.native": _native_path(target.model, prompt, n)}
    if reward.config.kind == "twin":
        paths["reward.native"] = _native_path(reward.module, prompt, n)
    for name, model in (("target", alone), ("reward", reward_alone), ("prt", prt), ("eft", eft)):
        paths[f"{name}.loop"] = loop_path(model, prompt, n, pipeline=False)
        paths[f"{name}.async"] = loop_path(model, prompt, n, pipeline=True)
    paths["prt.processor"] = _native_path(
        target.model, prompt, n,
        processors=lambda: [PRTLogitsProcessor(reward, source=feeder, vocab_size=prt.vocab_size)])
    device = str(mx.default_device())
    log(f"mlx generation on {device}: {len(paths)} paths x {config.repeats} rounds, {n} tokens each")
    if config.paths is not None:
        paths = {k: v for k, v in paths.items() if k in config.paths}
    runs = side_by_side(paths, config.repeats, log=log)
    return {"device": device, "dtype": config.dtype or "float32", "reward_kind": reward.config.kind,
            "paths": runs, "prompt_tokens": len(prompt), "max_tokens": n}


# ------------------------------------------------------------------------------------------------ training
def _batches(config):
    from prtcore.data import Batch

    out = []
    for ids, mask in random_batches(config.vocab, config.train_batch, config.train_seq, 4, config.seed):
        out.append((Batch(ids, mask), mx.array(ids), mx.array([[0, ids.shape[1] - 1]] * ids.shape[0])))
    return out


def _build_lora(config, backend, tok, batches):
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm.tuner.trainer import default_loss

    from .lora import apply_lora

    lm = mlx_base(backend, config.source, tok, seed=config.seed + 1, dtype=config.dtype)
    model = lm.model
    model.freeze()
    apply_lora(model, reward_config(config, "twin").lora, seed=config.seed + 3)
    model.train()
    optimizer = optim.Adam(learning_rate=1e-5, bias_correction=True)
    optimizer.init(model.trainable_parameters())
    value_and_grad = nn.value_and_grad(model, default_loss)
    state = {"i": 0}

    def step():
        _, ids, lengths = batches[state["i"] % len(batches)]
        state["i"] += 1
        (loss, ntok), grads = value_and_grad(model, ids, lengths)
        optimizer.update(model, grads)
        mx.eval(loss, ntok, model.parameters(), optimizer.state)

    return step, {"lm": lm, "optimizer": optimizer}


def _build_prt(kind, config, backend, tok, batches):
    import mlx.optimizers as optim

    from prtcore.sampling import tokenizer_vocab

    from .training import new_weights, reward_objective, reward_step

    source = mlx_base(backend, config.source, tok, seed=config.seed + 1, dtype=config.dtype)
    reward = backend.create_reward(reward_config(config, kind), source, seed=config.seed + 3)
    reward.module.train()
    optimizer = optim.Adam(learning_rate=1e-5, bias_correction=True)
    optimizer.init(reward.module.trainable_parameters())
    vocab = len(tokenizer_vocab(source.tokenizer))  # the shared vocabulary, as the backend counts it
    train_step = reward_step(reward, source, vocab, reward_objective(reward))
    state = {"i": 0}

    def step():
        batch, _, _ = batches[state["i"] % len(batches)]
        state["i"] += 1
        (loss, ntok), grads = train_step(batch)
        mx.eval(loss, ntok, grads)  # as the trainer (prt_mlx.training.run_loop): the gradients, then the update
        reward.module.update(new_weights(optimizer, reward.module, grads))
        mx.eval(reward.module.parameters())

    return step, {"source": source, "reward": reward, "optimizer": optimizer}


def _forward_only(config, backend, tok, batches):
    lm = mlx_base(backend, config.source, tok, seed=config.seed + 1, dtype=config.dtype)
    state = {"i": 0}

    def step():
        _, ids, _ = batches[state["i"] % len(batches)]
        state["i"] += 1
        mx.eval(lm.forward(ids[:, :-1]).logits)

    return step, {"lm": lm}


def training(backend, config: BenchConfig, workdir, log) -> dict:
    tok = bench_tokenizer(workdir, config.vocab)
    batches = _batches(config)
    builders = {"lora": lambda: _build_lora(config, backend, tok, batches)}
    for kind in config.train_rewards:
        builders[f"prt.{kind}"] = (lambda k: lambda: _build_prt(k, config, backend, tok, batches))(kind)
    builders["forward"] = lambda: _forward_only(config, backend, tok, batches)
    steps, memory, alive = build_measured(builders, MLXPeakMeter, log)
    memory.pop("forward", None)
    log(f"mlx training: batch {config.train_batch} x {config.train_seq} tokens, {len(steps)} configurations x "
        f"{config.train_repeats} rounds")
    times = steps_side_by_side(steps, config.train_repeats, per_round=config.train_steps, warmup=False, log=log)
    del alive
    return {"device": str(mx.default_device()), "dtype": config.dtype or "float32",
            "memory_measure": "mx.get_peak_memory over the floor", "threads": _threads(),
            "steps": step_entries(times, memory)}


def _threads() -> dict:
    """The BLAS mlx's CPU matrix products call (OpenBLAS when preloaded, else the wheel's own) and its threads."""
    openblas = loaded_openblas_threads()
    blas = {"blas": "the wheel's BLAS"} if openblas is None else {"blas": "OpenBLAS", "openblas threads": openblas}
    return {**blas, **thread_environment()}


def run(backend, config: BenchConfig, workdir, log=None) -> dict:
    """`MLXBackend.benchmark`: generation, then training, as `config` asks."""
    log = log or (lambda message: None)
    out = {"backend": "mlx"}
    if config.generation:
        out["generation"] = generation(backend, config, workdir, log)
        gc.collect()
    if config.training:
        out["training"] = training(backend, config, workdir, log)
    return out
