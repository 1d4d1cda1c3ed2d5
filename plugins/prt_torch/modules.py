"""Rewards of kinds stored as tensors as torch modules: `RewardModule`, what every such kind's module is, and the
`linear` and `transformer` rewards exactly as prtcore.kinds defines them (with the transformer's static-cache runner
for prt_torch.graphs).

Parameter names equal the artifact's tensor names (`head.weight`, `blocks.0.attn.q_proj.weight`, ...), so
`state_dict()` is what reward.safetensors holds.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import nn

from prtcore.config import RewardConfig
from prtcore.rewards import alibi_slopes


class RewardModule(nn.Module):
    """The module of a reward kind stored as tensors, built as `Module(config, hidden_size, vocab_size)` by
    prt_torch.rewards.HeadImplementation: `forward(hidden, cache=None, attention_mask=None, position_ids=None)` →
    reward logits for source hidden states (B, T, H), parameter names the kind's tensor names. Methods a kind may
    override (these defaults serve a position-wise module, e.g. a head over each position's hidden state):"""

    def init_weights(self, generator: torch.Generator) -> None:
        """A new reward's weights: `head.weight` zero, norms (names with "norm") one, the rest N(0, 0.02²)."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name == "head.weight":
                    p.zero_()
                elif "norm" in name:
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.02)

    def make_cache(self):
        """A cache for incremental decoding (None: position-wise, nothing to keep)."""
        return None

    def static_runner(self, *, batch: int, max_len: int):
        """For static decoding (prt_torch.graphs): a callable `(hidden (B, T, H), pos (B, T))` → logits (B, V) of the
        last position over static buffers; None for a position-wise module (run on the last hidden state)."""
        return None

    def activation_checkpointing_enable(self, **kwargs):
        """Recompute in the backward pass (what Trainer calls for `activation_checkpointing=True`); nothing by default."""

    def gradient_checkpointing_enable(self, **kwargs):  # the name transformers < 5.2x calls
        self.activation_checkpointing_enable(**kwargs)

    # Set by a module whose `forward(hidden, *, base_weight, lam)` returns r + λ·b (`composed_logits`;
    # prtcore.objectives, "Composed logits"): training then uses it (prt_torch.trainer.composable_weight).
    composes_with_source = False


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    def __init__(self, d: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d // num_heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, x, mask, layer_cache):
        B, T, d = x.shape
        q, k, v = (p(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        if layer_cache is not None:
            k, v = layer_cache(k, v)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, d))


def alibi_mask(slopes, key_pos, query_pos, dtype, key_mask=None):
    """The additive attention mask (B, heads, T, S): ALiBi's slope · (j − i) where key j is visible to query i (at
    or before it, not padding), else the dtype's finite minimum (rows with no visible key stay free of nan).
    Positions (B, S) / (B, T); `key_mask` (B, S) bool, False at padding (None: no padding). Attention takes it
    through scaled_dot_product_attention, whose fused kernels keep no (T, S) scores for the backward pass."""
    allowed = key_pos[:, None, :] <= query_pos[:, :, None]  # (B, T, S)
    if key_mask is not None:
        allowed &= key_mask[:, None, :]
    distance = (key_pos[:, None, :] - query_pos[:, :, None]).to(dtype)  # j − i
    bias = slopes.to(dtype)[None, :, None, None] * distance[:, None]
    return bias.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)


class MLP(nn.Module):
    def __init__(self, d: int, f: int):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: RewardConfig):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(config.d_model, config.norm_eps), RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config.d_model, config.num_heads)
        self.mlp = MLP(config.d_model, config.ffn_dim)

    def forward(self, x, mask, layer_cache):
        x = x + self.attn(self.norm1(x), mask, layer_cache)
        return x + self.mlp(self.norm2(x))


class RewardKVCache:
    """Keys and values per block, with every cached token's absolute position and padding flag."""

    def __init__(self):
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.positions: torch.Tensor | None = None  # (B, S) long
        self.mask: torch.Tensor | None = None  # (B, S) bool, False at padding

    def __len__(self):
        return 0 if self.positions is None else int(self.positions.shape[1])

    def layer(self, index: int):
        def update(k, v):
            if index < len(self.keys):
                self.keys[index] = torch.cat([self.keys[index], k], dim=2)
                self.values[index] = torch.cat([self.values[index], v], dim=2)
            else:
                self.keys.append(k)
                self.values.append(v)
            return self.keys[index], self.values[index]

        return update


class LinearReward(RewardModule):
    """logits = hidden @ head.weightᵀ (zero-initialised)."""

    composes_with_source = True

    def __init__(self, hidden_size: int, vocab_size: int):
        super().__init__()
        self.head = nn.Linear(hidden_size, vocab_size, bias=False)
        nn.init.zeros_(self.head.weight)

    def forward(self, hidden, cache=None, attention_mask=None, position_ids=None, *, base_weight=None, lam=1.0):
        hidden = hidden.to(self.head.weight.dtype)
        if base_weight is None:
            return self.head(hidden)
        return composed_logits(hidden, self.head.weight, hidden, base_weight, lam)


def composed_logits(features, weight, hidden, base_weight, lam: float):
    """r + λ·b = features @ weight[:V']ᵀ + λ·hidden @ base_weightᵀ (prtcore.objectives, "Composed logits")."""
    return _ComposedHead.apply(features, weight, hidden, base_weight.detach(), float(lam))


class _ComposedHead(torch.autograd.Function):
    """composed_logits, with the gradients of `features` and `weight` alone, computed as a linear layer's (autograd
    through the sum and the slice would add passes over (V, D) arrays, which at a few hundred tokens cost more than
    the product saved). In the weights' dtype, also under autocast (mixed precision would round r + λ·b as one,
    where the reward is the small part)."""

    @staticmethod
    def forward(ctx, features, weight, hidden, base_weight, lam):
        rows = base_weight.shape[0]
        ctx.save_for_backward(features, weight)
        ctx.rows = rows
        with torch.autocast(features.device.type, enabled=False):
            if features is hidden and base_weight.dtype == weight.dtype:
                return nn.functional.linear(hidden, torch.add(weight[:rows], base_weight, alpha=lam))
            out = nn.functional.linear(hidden.to(base_weight.dtype), base_weight).to(weight.dtype)
            flat = out.view(-1, rows)
            flat.addmm_(features.reshape(-1, features.shape[-1]).to(weight.dtype), weight[:rows].T, beta=lam)
            return out

    @staticmethod
    def backward(ctx, grad):
        features, weight = ctx.saved_tensors
        rows, (total, width) = ctx.rows, weight.shape
        flat = grad.reshape(-1, rows).to(weight.dtype)
        grad_features = None
        if ctx.needs_input_grad[0]:
            grad_features = (flat @ weight[:rows]).view(features.shape).to(features.dtype)
        grad_weight = flat.T @ features.reshape(-1, width).to(weight.dtype)
        if rows < total:  # the rows past the base's vocabulary get no gradient
            grad_weight = torch.cat([grad_weight, grad_weight.new_zeros(total - rows, width)])
        return grad_features, grad_weight, None, None, None


class TransformerReward(RewardModule):
    """proj_in → causal blocks (RMSNorm, ALiBi attention, SwiGLU) → RMSNorm → head (zero-initialised)."""

    composes_with_source = True

    def __init__(self, config: RewardConfig, hidden_size: int, vocab_size: int):
        super().__init__()
        self.reward_config = config  # not `config`: Trainer treats a `config` attribute as a transformers config
        self.proj_in = nn.Linear(hidden_size, config.d_model, bias=False)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm_out = RMSNorm(config.d_model, config.norm_eps)
        self.head = nn.Linear(config.d_model, vocab_size, bias=False)
        self.register_buffer("slopes", torch.from_numpy(alibi_slopes(config.num_heads)), persistent=False)
        self.checkpointing = False

    def activation_checkpointing_enable(self, **kwargs):
        """Recompute each block in the backward pass (what Trainer calls for `activation_checkpointing=True`)."""
        self.checkpointing = True

    def make_cache(self):
        return RewardKVCache()

    def static_runner(self, *, batch: int, max_len: int):
        return StaticTransformerReward(self, batch=batch, max_len=max_len)

    def forward(self, hidden, cache: RewardKVCache | None = None, attention_mask=None, position_ids=None, *,
                base_weight=None, lam=1.0):
        """Reward logits for source hidden states (B, T, H) of new tokens; `cache` holds the earlier ones.

        `attention_mask` (B, past + T) marks real tokens (left padding), `position_ids` (B, T) their positions;
        by default positions continue each row's cached ones. `base_weight`, `lam`: r + λ·b (RewardModule).
        """
        x = self.proj_in(hidden.to(self.proj_in.weight.dtype))
        B, T, _ = x.shape
        cached = cache is not None and len(cache) > 0
        if position_ids is None:
            start = cache.positions[:, -1:] + 1 if cached else torch.zeros(B, 1, dtype=torch.long, device=x.device)
            position_ids = start + torch.arange(T, device=x.device)
        position_ids = position_ids.to(x.device).long().expand(B, T)
        new_mask = (attention_mask[:, -T:].to(x.device) > 0) if attention_mask is not None else \
            torch.ones(B, T, dtype=torch.bool, device=x.device)
        key_pos = torch.cat([cache.positions, position_ids], 1) if cached else position_ids
        key_mask = torch.cat([cache.mask, new_mask], 1) if cached else new_mask
        mask = alibi_mask(self.slopes, key_pos, position_ids, x.dtype, key_mask)
        for i, block in enumerate(self.blocks):
            if self.checkpointing and self.training and cache is None:
                x = torch.utils.checkpoint.checkpoint(block, x, mask, None, use_reentrant=False)
            else:
                x = block(x, mask, cache.layer(i) if cache is not None else None)
        if cache is not None:
            cache.positions, cache.mask = key_pos, key_mask
        if base_weight is not None:
            return composed_logits(self.norm_out(x), self.head.weight, hidden, base_weight, lam)
        return self.head(self.norm_out(x))


class StaticTransformerReward:
    """prt_torch.modules.TransformerReward over a static cache (ALiBi from absolute positions, as the module)."""

    def __init__(self, module, *, batch: int, max_len: int):
        self.module = module
        config = module.reward_config
        weight = module.proj_in.weight
        self.heads, self.head_dim = config.num_heads, config.d_model // config.num_heads
        shape = (len(module.blocks), batch, self.heads, max_len, self.head_dim)
        self.keys = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        self.values = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        self.key_pos = torch.arange(max_len, device=weight.device)

    @torch.no_grad()
    def __call__(self, hidden, pos):
        m = self.module
        x = m.proj_in(hidden.to(m.proj_in.weight.dtype))
        B, T, _ = x.shape
        mask = alibi_mask(m.slopes, self.key_pos.expand(B, -1), pos.expand(B, T), x.dtype)
        where = pos[0]
        for i, block in enumerate(m.blocks):
            attn = block.attn
            h = block.norm1(x)
            q, k, v = (p(h).view(B, T, self.heads, self.head_dim).transpose(1, 2)
                       for p in (attn.q_proj, attn.k_proj, attn.v_proj))
            self.keys[i].index_copy_(2, where, k)
            self.values[i].index_copy_(2, where, v)
            out = nn.functional.scaled_dot_product_attention(q, self.keys[i], self.values[i], attn_mask=mask)
            x = x + attn.o_proj(out.transpose(1, 2).reshape(B, T, -1))
            x = x + block.mlp(block.norm2(x))
        return m.head(m.norm_out(x[:, -1:]))[:, -1].float()
