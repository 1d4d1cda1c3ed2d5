"""Tiny random checkpoints and tokenizers, built locally from transformers' config classes (nothing downloaded).

    tok_dir = make_tokenizer(tmp / "tok")
    make_tiny_checkpoint(tmp / "llama", "llama", tokenizer_dir=tok_dir, seed=0)

The checkpoint is written in the hub's layout (config.json as transformers writes it, model.safetensors,
tokenizer files), which both transformers and mlx-lm read. Requires transformers, torch and tokenizers.
"""

from __future__ import annotations

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


def make_tokenizer(path, corpus: str | list[str] = DEFAULT_CORPUS, vocab_size: int = 384) -> Path:
    """Train a small byte-level BPE tokenizer with a ChatML template and save it in the hub's layout."""
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
    fast.chat_template = CHATML_TEMPLATE
    path.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(path))
    return path


def tiny_config(model_type: str, vocab_size: int, *, extra_vocab_rows: int = 0, **overrides):
    """A transformers config of `model_type` shrunk to test size (any field can be overridden)."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type)
    sizes = dict(TINY_SIZES)
    sizes.update(overrides)
    for key, value in sizes.items():
        if key in overrides or hasattr(config, key):
            setattr(config, key, value)
    if getattr(config, "head_dim", None) is not None and "head_dim" not in overrides:
        config.head_dim = config.hidden_size // config.num_attention_heads
    config.vocab_size = vocab_size + extra_vocab_rows
    for name in ("layer_types",):  # per-layer lists must follow the layer count
        value = getattr(config, name, None)
        if isinstance(value, list) and len(value) != config.num_hidden_layers:
            setattr(config, name, (value * config.num_hidden_layers)[: config.num_hidden_layers])
    if "tie_word_embeddings" in overrides:  # otherwise the family's own default (gemma ties, llama does not)
        config.tie_word_embeddings = bool(overrides["tie_word_embeddings"])
    return config


def make_tiny_checkpoint(path, model_type: str = "llama", *, tokenizer_dir=None, seed: int = 0,
                         extra_vocab_rows: int = 0, init_std: float = 0.1, **overrides) -> Path:
    """Save a tiny random `model_type` checkpoint with the tokenizer from `tokenizer_dir` (made if None).

    `extra_vocab_rows` pads the output layer beyond the tokenizer length, as real families do.
    `init_std` is larger than transformers' default so that tiny models have non-trivial distributions.
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
                         initializer_range=init_std, **overrides)
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
    for item in Path(tokenizer_dir).iterdir():
        if item.is_file():
            shutil.copy2(item, path / item.name)
    return path
