"""Static KV caches and CUDA graphs for decoding with several models at once (PRT, EFT, a base alone).

At batch 1 an eager decoding step is bound by kernel launches: a 22-layer model launches several hundred small
kernels per token, and PRT launches those of two models. `StaticDecoding` runs every model of a `PRTForCausalLM` or
`ComposedLM` over preallocated key/value buffers with fixed shapes, so that the whole step (every model, then the
composition) is one CUDA graph, replayed once per token:

    fast = StaticDecoding(model)                     # model: PRTForCausalLM / ComposedLM on the torch backend
    text = fast.generate("Question: ...", max_tokens=64)
    ids = fast.generate_ids(prompt_ids, max_tokens=64)

- Each base model is read through its own modules (the same weight tensors, nothing copied): llama-layout
  decoders (llama, mistral, qwen2, qwen3 and their like) are supported; `supported(model)` says why not otherwise.
- A LoRA twin runs the source's weights with its adapter's low-rank terms; rewards of kinds stored as tensors
  (`linear`, `transformer`, a plugin's) read the hidden states of their source's static pass; a module with a cache
  of its own (the `transformer`) runs through its `static_runner` (prt_torch.modules.RewardModule), a position-wise
  one (the `linear`) on the last position's hidden state.
- On a GPU the reward models run on a second CUDA stream inside the graph, concurrently with the target.
- Without a GPU (or with `graphs=False`) the same step runs eagerly over the same static buffers: the CPU fallback
  that the tests compare, token for token, with the eager loop.

The prompt is prefilled eagerly; each generated token then costs one graph replay plus a copy of the sampled id
into the graph's input buffer. Decoding goes through prtcore.sampling.decode, so sampling, stop strings and EOS
behave as in `PRTForCausalLM.generate`.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn.functional as F

from prtcore.errors import ConfigError, GenerationError
from prtcore.sampling import Composer, Sampler, Scorer, decode

from .modules import StaticTransformerReward  # noqa: F401  (importable from here as before)

LLAMA_LAYOUT = ("llama", "mistral", "qwen2", "qwen3", "granite", "olmo2", "smollm3")
BUCKET = 128  # cache lengths are rounded up to a multiple of this, so that one graph serves many lengths


def _round_up(n: int, k: int = BUCKET) -> int:
    return -(-n // k) * k


# ------------------------------------------------------------------------------------------------ layers
def _adapted(linear, adapter: str | None):
    """`linear` as a function: a peft LoRA layer with `adapter`'s low-rank term (or its base alone when None)."""
    base = getattr(linear, "base_layer", None)
    if base is None:
        return linear
    if adapter is None:
        return base
    if getattr(linear, "merged", False):
        raise ConfigError("a merged LoRA adapter cannot be separated from the base for static decoding")
    if adapter not in getattr(linear, "lora_A", {}):
        return base  # this layer is not adapted by `adapter`
    if getattr(linear, "use_dora", {}).get(adapter, False):
        raise ConfigError("DoRA adapters are not supported by static decoding")
    a, b, scale = linear.lora_A[adapter], linear.lora_B[adapter], linear.scaling[adapter]

    def forward(x):
        out = base(x)
        return (out + b(a(x.to(a.weight.dtype))) * scale).to(out.dtype)

    return forward


def _head(module, adapter: str | None):
    """The output layer, unwrapping peft's `modules_to_save` copy (a twin's own head) for `adapter`."""
    if hasattr(module, "modules_to_save") and hasattr(module, "original_module"):
        if adapter is not None and adapter in module.modules_to_save:
            return module.modules_to_save[adapter]
        return module.original_module
    return module


def supported(lm_model) -> str | None:
    """None when `lm_model` (a transformers causal LM) can run statically, else the reason it cannot."""
    config = lm_model.config.get_text_config() if hasattr(lm_model.config, "get_text_config") else lm_model.config
    model_type = getattr(config, "model_type", "?")
    if model_type not in LLAMA_LAYOUT:
        return f"model type {model_type!r} (static decoding supports the llama layout: {', '.join(LLAMA_LAYOUT)})"
    inner = getattr(lm_model, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if inner is None or any(not hasattr(inner, n) for n in needed):
        return f"{type(lm_model).__name__} has no llama-style trunk ({', '.join(needed)})"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True) and model_type == "mistral":
        return None  # windows longer than the static cache change nothing; shorter ones are refused at allocation
    if model_type == "granite":
        return "granite's multipliers are not applied by static decoding"
    return None


_GQA: dict = {}


def _sdpa_gqa(device, dtype) -> bool:
    """Whether scaled_dot_product_attention takes `enable_gqa` (torch >= 2.5) with a boolean mask here."""
    key = (str(device), dtype)
    if key not in _GQA:
        q = torch.zeros((1, 4, 1, 8), device=device, dtype=dtype)
        kv = torch.zeros((1, 2, 3, 8), device=device, dtype=dtype)
        mask = torch.ones((1, 1, 1, 3), device=device, dtype=torch.bool)
        try:
            F.scaled_dot_product_attention(q, kv, kv, attn_mask=mask, enable_gqa=True)
            _GQA[key] = True
        except (TypeError, RuntimeError):
            _GQA[key] = False
    return _GQA[key]


class StaticDecoder:
    """One llama-layout transformers model over a static key/value cache of `max_len` positions.

    `adapter`: the peft adapter whose LoRA terms are added (a LoRA twin), or None for the base weights.
    `__call__(ids, pos)` takes (B, T) ids at (B, T) positions (the same in every row) and returns the float32
    logits of the last position (B, V) and the final hidden states (B, T, H) that feed the output layer.
    """

    def __init__(self, lm_model, *, batch: int, max_len: int, adapter: str | None = None):
        reason = supported(lm_model)
        if reason:
            raise ConfigError(f"static decoding: {reason}")
        config = lm_model.config.get_text_config() if hasattr(lm_model.config, "get_text_config") else lm_model.config
        inner = lm_model.model
        window = getattr(config, "sliding_window", None)
        if window and getattr(config, "use_sliding_window", True) and max_len > window:
            raise ConfigError(f"static decoding: {max_len} positions exceed the model's sliding window of {window}")
        self.embed, self.norm, self.rotary = inner.embed_tokens, inner.norm, inner.rotary_emb
        self.head = _head(lm_model.get_output_embeddings(), adapter)
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scaling = self.head_dim ** -0.5
        weight = self.embed.weight
        self.device, self.dtype = weight.device, weight.dtype
        self.layers = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.layers.append({
                "norm1": layer.input_layernorm, "norm2": layer.post_attention_layernorm,
                "q": _adapted(attn.q_proj, adapter), "k": _adapted(attn.k_proj, adapter),
                "v": _adapted(attn.v_proj, adapter), "o": _adapted(attn.o_proj, adapter),
                "q_norm": getattr(attn, "q_norm", None), "k_norm": getattr(attn, "k_norm", None),
                "gate": _adapted(mlp.gate_proj, adapter), "up": _adapted(mlp.up_proj, adapter),
                "down": _adapted(mlp.down_proj, adapter), "act": mlp.act_fn,
            })
        self.batch, self.max_len = batch, max_len
        shape = (len(self.layers), batch, self.kv_heads, max_len, self.head_dim)
        self.keys = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.values = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.key_pos = torch.arange(max_len, device=self.device)
        # cos / sin of every position, as the model's rotary embedding computes them
        positions = torch.arange(max_len, device=self.device)[None]
        probe = torch.zeros((), dtype=self.dtype, device=self.device)
        with torch.no_grad():
            cos, sin = self.rotary(probe, positions)
        self.cos, self.sin = cos[0], sin[0]
        self.gqa = self.kv_heads != self.heads
        self.native_gqa = self.gqa and _sdpa_gqa(self.device, self.dtype)

    def _attend(self, q, k, v, mask):
        if self.native_gqa:  # grouped queries read the shared key/value heads in place
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling, enable_gqa=True)
        if self.gqa:
            repeat = self.heads // self.kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)

    @torch.no_grad()
    def __call__(self, ids, pos):
        B, T = ids.shape
        x = self.embed(ids)
        cos, sin = self.cos[pos][:, None], self.sin[pos][:, None]  # (B, 1, T, D)
        mask = (self.key_pos[None, None, :] <= pos[:, :, None])[:, None]  # (B, 1, T, max_len)
        where = pos[0]
        half = self.head_dim // 2
        for i, layer in enumerate(self.layers):
            h = layer["norm1"](x)
            q = layer["q"](h).view(B, T, -1, self.head_dim)
            k = layer["k"](h).view(B, T, -1, self.head_dim)
            v = layer["v"](h).view(B, T, -1, self.head_dim).transpose(1, 2)
            if layer["q_norm"] is not None:
                q, k = layer["q_norm"](q), layer["k_norm"](k)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
            q = q * cos + torch.cat((-q[..., half:], q[..., :half]), dim=-1) * sin
            k = k * cos + torch.cat((-k[..., half:], k[..., :half]), dim=-1) * sin
            self.keys[i].index_copy_(2, where, k)
            self.values[i].index_copy_(2, where, v)
            out = self._attend(q, self.keys[i], self.values[i], mask)
            x = x + layer["o"](out.transpose(1, 2).reshape(B, T, -1))
            h = layer["norm2"](x)
            x = x + layer["down"](layer["act"](layer["gate"](h)) * layer["up"](h))
        hidden = self.norm(x)
        return self.head(hidden[:, -1]).float(), hidden


# ------------------------------------------------------------------------------------------------ the step
class _Composed(Composer):
    """The step's output is already the composed, normalised distribution."""

    n_models = 1

    def __call__(self, *logits, xp=None):
        return logits[0]

    def combine(self, logits, ops):
        return logits[0]


class StaticDecoding:
    """Every model of `model` (a PRTForCausalLM or ComposedLM on the torch backend) over static caches.

    A model with `reward_alone = True` (rewards, sources; prtcore.benchmarking's RewardAlone) decodes with its rewards'
    logits alone, the second of PRT's two passes.

    `graphs`: capture the decoding step as a CUDA graph (default: when the models are on a CUDA device);
    `streams`: run the rewards on a second CUDA stream (default: with graphs). `max_len`: the positions the caches
    hold (default: grown to fit each call, in steps of 128; every new length captures a new graph).
    """

    def __init__(self, model, *, graphs: bool | None = None, streams: bool | None = None, max_len: int | None = None,
                 batch: int = 1):
        self.model = model
        device = model.target.device
        self.device = device
        cuda = device.type == "cuda"
        if graphs and not cuda:
            raise ConfigError("graphs=True needs the models on a CUDA device")
        self.graphs = cuda if graphs is None else bool(graphs)
        self.streams = self.graphs if streams is None else bool(streams) and cuda
        self.batch = batch
        self.composer = model.active_composer()
        self._plan()
        self.max_len = 0
        if max_len:
            self._allocate(_round_up(max_len))

    # ------------------------------------------------------------------------------------------ structure
    def _plan(self):
        """Which static passes a step runs: bases (with hidden states when a reward reads them), then rewards."""
        model = self.model
        for reason in self.reasons():
            raise ConfigError(f"static decoding: {reason}")
        self.base_specs, self.reward_specs = [], []
        bases = getattr(model, "models", None)
        if bases is not None:  # ComposedLM: every model is a base, composed in the given order
            self.mode = "bases"
            self.base_specs = [(id(m), m) for m in bases]
            return
        # PRTForCausalLM (target, then rewards), or a reward decoding alone (`reward_alone`)
        self.mode = "reward" if getattr(model, "reward_alone", False) else "prt"
        if self.mode == "prt":
            self.base_specs.append((id(model.target), model.target))
        for reward, source in zip(model.rewards, model.sources):
            if reward.reads_source_hidden:
                if all(key != id(source) for key, _ in self.base_specs):
                    self.base_specs.append((id(source), source))
                self.reward_specs.append((reward, id(source)))
            else:
                self.reward_specs.append((reward, None))

    def reasons(self) -> list[str]:
        """Why this model cannot decode statically (empty when it can)."""
        model, out = self.model, []
        bases = getattr(model, "models", None) or ([] if getattr(model, "reward_alone", False) else [model.target])
        for lm in bases:
            reason = supported(lm.model)
            if reason:
                out.append(reason)
        for reward, source in zip(getattr(model, "rewards", ()), getattr(model, "sources", ())):
            if not reward.reads_source_hidden:  # a twin
                reason = supported(reward.hf_model)
            elif source is None:
                reason = "a reward that reads hidden states needs its source"
            elif reward.module.make_cache() is not None and reward.module.static_runner(batch=1, max_len=1) is None:
                reason = f"reward kind {reward.config.kind!r} keeps a cache but has no static runner"
            else:
                reason = supported(source.model)
            if reason:
                out.append(reason)
        return out

    def _allocate(self, max_len: int):
        B = self.batch
        bases = {key: StaticDecoder(lm.model, batch=B, max_len=max_len) for key, lm in self.base_specs}
        rewards = []
        for reward, feeder in self.reward_specs:
            if not reward.reads_source_hidden:  # a twin: a decoder of its own
                rewards.append(("model", StaticDecoder(reward.hf_model, batch=B, max_len=max_len,
                                                       adapter=reward.adapter if reward.is_lora else None), None))
            elif reward.module.make_cache() is not None:  # a cache of its own (transformer)
                rewards.append(("cached", reward.module.static_runner(batch=B, max_len=max_len), feeder))
            else:  # position-wise (linear)
                rewards.append(("position", reward.module, feeder))
        self.bases, self.rewards, self.max_len = bases, rewards, max_len
        self.ids = torch.zeros((B, 1), dtype=torch.long, device=self.device)
        self.pos = torch.zeros((B, 1), dtype=torch.long, device=self.device)
        self.graph, self.output = None, None
        self._side = torch.cuda.Stream(device=self.device) if self.streams else None

    def _run(self, ids, pos):
        """One step over (B, T) ids: composed log-probs (B, N) of the last position."""
        xp = self.model.backend.xp
        outputs, hidden = {}, {}
        side = self._side if self.mode != "reward" else None
        # the target (and the sources it shares with hidden-state rewards) on the current stream; every other
        # base and reward on the side stream when there is one
        main_keys = {self.base_specs[0][0]} if self.base_specs else set()
        if side is not None:
            side.wait_stream(torch.cuda.current_stream(self.device))
        for key, decoder in self.bases.items():
            if side is not None and key not in main_keys:
                with torch.cuda.stream(side):
                    outputs[key], hidden[key] = decoder(ids, pos)
            else:
                outputs[key], hidden[key] = decoder(ids, pos)
        reward_logits = []
        for kind, runner, feeder in self.rewards:
            on_side = side is not None and (feeder is None or feeder not in main_keys)
            with torch.cuda.stream(side) if on_side else contextlib.nullcontext():
                if kind == "model":
                    logits, _ = runner(ids, pos)
                elif kind == "cached":
                    logits = runner(hidden[feeder], pos)
                else:
                    logits = runner(hidden[feeder][:, -1:])[:, -1].float()
            reward_logits.append(logits)
        if side is not None:
            torch.cuda.current_stream(self.device).wait_stream(side)
        if self.mode == "bases":
            inputs = [outputs[key] for key, _ in self.base_specs]
        elif self.mode == "reward":
            inputs = reward_logits
        else:
            inputs = [outputs[self.base_specs[0][0]]] + reward_logits
        return self.composer(*inputs, xp=xp)

    def _capture(self):
        """Warm up on a side stream, then capture one decoding step (reading `self.ids` at `self.pos`)."""
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._run(self.ids, self.pos)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.output = self._run(self.ids, self.pos)
        self.graph = graph

    # ------------------------------------------------------------------------------------------ decoding
    def scorer(self, total: int) -> "StaticScorer":
        """A fresh prtcore Scorer (composed log-probs) with room for `total` positions."""
        if total > self.max_len:
            self._allocate(_round_up(total))
        return StaticScorer(self)

    @torch.no_grad()  # on a generator function: grad mode is off while it runs, not while the caller does
    def stream_steps(self, prompt, *, max_tokens: int = 256, stop: Sequence[str] = (), eos_ids=None, **sampling):
        """prtcore.sampling.GenerationStep per generated token (arguments as PRTForCausalLM.stream)."""
        model = self.model
        ids = model.encode(prompt)
        sampler = Sampler(**sampling)
        eos = model.target.eos_token_ids if eos_ids is None else list(eos_ids)
        scorer = self.scorer(len(ids) + max_tokens)
        yield from decode([scorer], _Composed(), sampler, ids, xp=model.backend.xp, max_tokens=max_tokens,
                          to_backend=model.backend.asarray, eos_ids=eos, tokenizer=model.tokenizer, stop=stop)

    def generate(self, prompt, **kwargs) -> str:
        return "".join(step.text for step in self.stream_steps(prompt, **kwargs))

    def generate_ids(self, prompt, **kwargs) -> list[int]:
        """Generated token ids (without a final EOS)."""
        eos = set(self.model.target.eos_token_ids if kwargs.get("eos_ids") is None else kwargs["eos_ids"])
        return [s.token for s in self.stream_steps(prompt, **kwargs) if s.token not in eos]


class StaticScorer(Scorer):
    """The whole static step as one prtcore Scorer: ids in, composed log-probs of the last position out."""

    def __init__(self, owner: StaticDecoding):
        self.owner, self.length = owner, 0

    def __call__(self, ids):
        owner = self.owner
        ids = torch.as_tensor(ids, dtype=torch.long, device=owner.device)
        if ids.ndim == 1:
            ids = ids[None]
        B, T = ids.shape
        if B != owner.batch:
            raise GenerationError(f"static decoding was set up for batch {owner.batch}, got {B} rows")
        if self.length + T > owner.max_len:
            raise GenerationError(f"static decoding: {self.length + T} positions exceed the cache's {owner.max_len}")
        start = self.length
        self.length += T
        if T > 1 or not owner.graphs:
            pos = (torch.arange(start, start + T, device=owner.device))[None].expand(B, T)
            if T == 1:
                owner.ids.copy_(ids)
                owner.pos.fill_(start)
                return owner._run(owner.ids, owner.pos)
            return owner._run(ids, pos)
        owner.ids.copy_(ids)
        owner.pos.fill_(start)
        if owner.graph is None:
            owner._capture()
        owner.graph.replay()
        return owner.output.clone()
