"""Tiny random checkpoints and tokenizers, built locally from transformers' config classes (nothing downloaded).

    tok_dir = make_tokenizer(tmp / "tok")
    make_tiny_checkpoint(tmp / "llama", "llama", tokenizer_dir=tok_dir, seed=0)

The checkpoint is written in the hub's layout (config.json as transformers writes it, model.safetensors,
tokenizer files), which both transformers and mlx-lm read. Requires transformers, torch and tokenizers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

DEFAULT_CORPUS = (
    "The capital of Avalon is Brightwater. The capital of Corvia is Dunmere. Mira works as a baker. "
    "Question: What is the capital of Avalon? Answer: Brightwater. ### Instruction: Name the capital. "
    "### Response: The capital is Dunmere. Hello world! How are you today? I am fine, thank you. "
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100. Portable rewards move between base models. "
    "def add(a, b):\n    return a + b\n"
)

# Shrunk sizes applied to whichever of these fields a config class has.
TINY_SIZES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 512,
    "sliding_window": 256,
    "query_pre_attn_scalar": 16,
    "moe_intermediate_size": 64,
    "num_experts": 4,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "shared_expert_intermediate_size": 64,
}


def make_tokenizer(path, corpus: str | list[str] = DEFAULT_CORPUS, vocab_size: int = 384,
                   chat_template: str | None = CHATML_TEMPLATE) -> Path:
    """Train a small byte-level BPE tokenizer (ChatML template unless None) and save it in the hub's layout."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    texts = [corpus] if isinstance(corpus, str) else list(corpus)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>", unk_token=None,
        bos_token=None, clean_up_tokenization_spaces=False,
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    path.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(path))
    return path


# Settings that make a family's distinctive features visible in a tiny model (a backend ignoring one is caught).
FAMILY_OVERRIDES = {
    "gemma2": {"final_logit_softcapping": 5.0, "attn_logit_softcapping": 10.0},
    "granite": {"attention_multiplier": 0.3, "embedding_multiplier": 2.0, "residual_multiplier": 0.5,
                "logits_scaling": 1.7},
    "cohere": {"logit_scale": 0.5},
}
# Rope settings merged into `rope_parameters` (transformers 5 keeps them there).
FAMILY_ROPE = {"phi3": {"partial_rotary_factor": 0.5}}
# A rope base no family defaults to, so that a backend reading the wrong rope settings is caught.
ROPE_THETA = 1234.0
ROPE_THETA_SLIDING = 567.0


def _unusual_rope(rope, extra: dict):
    """`rope_parameters` with unusual bases (one per layer type for gemma3-style per-type settings)."""
    if not isinstance(rope, dict) or not rope:
        return rope
    if any(isinstance(v, dict) for v in rope.values()):
        return {kind: ({**v, **extra, "rope_theta": ROPE_THETA_SLIDING if kind == "sliding_attention" else ROPE_THETA}
                       if isinstance(v, dict) else v) for kind, v in rope.items()}
    return {**rope, **extra, "rope_theta": ROPE_THETA} if "rope_theta" in rope else {**rope, **extra}


def _tiny_layer_types(config) -> None:
    """Per-layer attention types for the shrunk depth, keeping every type the family uses.

    A family alternating sliding and full attention every k layers (gemma2: 2, gemma3: 6) gets a period equal
    to the tiny depth, so that the last layer is full attention and the others slide; `sliding_window_pattern`
    (which mlx-lm reads) says the same.
    """
    n = config.num_hidden_layers
    types = getattr(config, "layer_types", None)
    if not isinstance(types, list) or not types:
        return
    kinds = list(dict.fromkeys(types))
    if len(kinds) > 1 and "full_attention" in kinds:
        others = [k for k in kinds if k != "full_attention"]
        period = types.index("full_attention") + 1
        if period > n or any(types[i] != types[i % period] for i in range(len(types))):
            period = n
        config.layer_types = [("full_attention" if (i + 1) % period == 0 else others[0]) for i in range(n)]
        for name in ("sliding_window_pattern", "_sliding_window_pattern"):
            if hasattr(config, name):
                setattr(config, name, period)
    elif len(types) != n:
        config.layer_types = (types * n)[:n]


def tiny_config(model_type: str, vocab_size: int, *, extra_vocab_rows: int = 0, family_overrides: bool = False,
                **overrides):
    """A transformers config of `model_type` shrunk to test size (any field can be overridden).

    With `family_overrides`, FAMILY_OVERRIDES, FAMILY_ROPE and an unusual rope base are applied first, so that a
    tiny model exercises what distinguishes its family (the conformance suite's checkpoints do this).
    """
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type)
    default_layers = getattr(config, "num_hidden_layers", None)
    sizes = dict(TINY_SIZES)
    if family_overrides:
        sizes.update(FAMILY_OVERRIDES.get(model_type, {}))
        rope = _unusual_rope(getattr(config, "rope_parameters", None), FAMILY_ROPE.get(model_type, {}))
        if rope is not None:
            sizes["rope_parameters"] = rope
    sizes.update(overrides)
    for key, value in sizes.items():
        if key in overrides or hasattr(config, key) or key in FAMILY_OVERRIDES.get(model_type, {}):
            setattr(config, key, value)
    if getattr(config, "head_dim", None) is not None and "head_dim" not in overrides:
        config.head_dim = config.hidden_size // config.num_attention_heads
    config.vocab_size = vocab_size + extra_vocab_rows
    if "layer_types" not in overrides:
        _tiny_layer_types(config)
    n = getattr(config, "num_hidden_layers", None)
    if isinstance(default_layers, int) and n != default_layers:  # other per-layer lists (smollm3's no_rope_layers)
        for key, value in list(vars(config).items()):
            if key != "layer_types" and key not in overrides and isinstance(value, list) and len(value) == default_layers:
                setattr(config, key, value[:n])
    if "tie_word_embeddings" in overrides:  # otherwise the family's own default (gemma ties, llama does not)
        config.tie_word_embeddings = bool(overrides["tie_word_embeddings"])
    return config


def hub_config(saved: dict, config) -> dict:
    """config.json as the hub's checkpoints of the family carry it, from what transformers 5 saved.

    transformers 5 writes some fields only under their new names and leaves out derived ones, while checkpoints
    on the hub (and mlx-lm, which reads them) have the older ones too: the aliases of `attribute_map`
    (qwen3_moe's `num_experts`), `head_dim`, and `sliding_window_pattern` (gemma3). Both libraries read the
    result the same way; the values are the ones the model was built with.
    """
    out = dict(saved)
    for alias, target in (getattr(config, "attribute_map", None) or {}).items():
        if target in out and alias not in out:
            out[alias] = out[target]
    heads = out.get("num_attention_heads")
    if "head_dim" not in out and isinstance(heads, int) and isinstance(out.get("hidden_size"), int):
        out["head_dim"] = out["hidden_size"] // heads
    pattern = getattr(config, "sliding_window_pattern", None) or getattr(config, "_sliding_window_pattern", None)
    types = out.get("layer_types")
    if pattern is None and isinstance(types, list) and "full_attention" in types and len(set(types)) > 1:
        pattern = types.index("full_attention") + 1  # the period, as cohere2-style configs on the hub give it
    if isinstance(pattern, int) and "sliding_window_pattern" not in out:
        out["sliding_window_pattern"] = pattern
    return out


def make_tiny_checkpoint(path, model_type: str = "llama", *, tokenizer_dir=None, seed: int = 0,
                         extra_vocab_rows: int = 0, init_std: float = 0.1, family_overrides: bool = False,
                         **overrides) -> Path:
    """Save a tiny random `model_type` checkpoint with the tokenizer from `tokenizer_dir` (made if None).

    `extra_vocab_rows` pads the output layer beyond the tokenizer length, as real families do.
    `init_std` is larger than transformers' default so that tiny models have non-trivial distributions.
    `family_overrides`: see `tiny_config`.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = Path(path)
    if tokenizer_dir is None:
        tokenizer_dir = make_tokenizer(path.with_name(path.name + "-tokenizer"))
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = tiny_config(model_type, len(tokenizer), extra_vocab_rows=extra_vocab_rows,
                         family_overrides=family_overrides, initializer_range=init_std, **overrides)
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = None
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # norms random too, so a backend that ignores a norm weight is caught
        for name, param in model.named_parameters():
            if "norm" in name and param.dim() == 1:
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    config_file = path / "config.json"
    config_file.write_text(json.dumps(hub_config(json.loads(config_file.read_text()), model.config), indent=2,
                                      sort_keys=True) + "\n")
    for item in Path(tokenizer_dir).iterdir():
        if item.is_file():
            shutil.copy2(item, path / item.name)
    return path
