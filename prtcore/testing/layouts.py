"""Tiny checkpoints whose tokenizers keep the special-token layouts of real model families.

    path = make_layout_checkpoint(tmp / "llama3", "llama3")            # tiny llama, Llama-3.1-Instruct's layout
    path = make_layout_checkpoint(tmp / "pad", "llama3", pad_past_rows=True)   # + a pad token past the rows

`prtcore.testing.checkpoints.make_tokenizer` trains one ChatML byte-level BPE. Real tokenizers differ in the ways
that break code: the pad id may lie past the embedding rows, eos is a list in generation_config.json, bos is
added by the tokenizer or by the chat template, turns end with a token other than eos, rows are padded past the
tokenizer, SentencePiece vocabularies fall back to `<0xNN>` byte tokens. Each entry of `LAYOUTS` keeps one
family's kinds of special tokens in the same relative positions, with a few hundred BPE merges trained on a small
corpus (nothing downloaded), a chat template of the family's shape (shortened: no tool calling), and the family's
config.json / generation_config.json / tokenizer_config.json / special_tokens_map.json fields. The model itself
is a tiny random model of the family's `model_type` (transformers' config classes, as `checkpoints.tiny_config`).

The families' layouts, with the facts about the real checkpoints and where they were read, are data in
prtcore.testing.layout_families (imported here too).

The files are written in the hub's layout (tokenizer_config.json with `added_tokens_decoder` and the real
`tokenizer_class`, special_tokens_map.json, the template in chat_template.jinja as transformers 5 saves it), so
that `transformers.AutoTokenizer`, `mlx_lm.utils.load_tokenizer` and `mlx_lm.load` read them as they read the real
ones. Requires transformers, torch and tokenizers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .layout_families import (  # noqa: F401  importable from here, as before
    GEMMA2_TEMPLATE, LAYOUT_CORPUS, LAYOUTS, LLAMA3_SPLIT, LLAMA3_TEMPLATE, MISTRAL_V3_TEMPLATE, PAD_PAST_ROWS_TOKEN,
    PHI3_TEMPLATE, QWEN2_SPLIT, QWEN25_TEMPLATE, QWEN_SYSTEM, Layout, Token, layout,
)


# ------------------------------------------------------------------------------------------------ tokenizers
def _added(token: Token):
    from tokenizers import AddedToken

    return AddedToken(token.content, special=token.special, rstrip=token.rstrip, lstrip=token.lstrip,
                      normalized=False, single_word=False)


def _add_in_order(tok, tokens) -> None:
    for t in tokens:
        (tok.add_special_tokens if t.special else tok.add_tokens)([_added(t)])


def _byte_level_tokenizer(lay: Layout, corpus, merges: int):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                               byte_fallback=False))
    if lay.nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(lay.split_pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + merges, show_progress=False, initial_alphabet=alphabet)
    tok.train_from_iterator(corpus, trainer)
    _add_in_order(tok, lay.tail)
    level = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    if lay.add_bos_token and lay.bos is not None:
        bos_id = tok.token_to_id(lay.bos)
        tok.post_processor = processors.Sequence([level, processors.TemplateProcessing(
            single=f"{lay.bos}:0 $A:0", pair=f"{lay.bos}:0 $A:0 {lay.bos}:1 $B:1",
            special_tokens=[(lay.bos, bos_id)])])
    else:
        tok.post_processor = level
    return tok


def _spm_tokenizer(lay: Layout, corpus, merges: int):
    """A SentencePiece-style BPE with byte fallback: the head tokens at ids 0.., then `<0x00>`..`<0xFF>`, then the
    learned pieces, in the pipeline transformers 5's GemmaTokenizer / LlamaTokenizer rebuild it with."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    chars = sorted(set("".join(corpus).replace(" ", "▁")) | {"▁"})
    trainer = trainers.BpeTrainer(vocab_size=len(chars) + merges, show_progress=False, initial_alphabet=chars)
    trainer_tok.train_from_iterator(corpus, trainer)
    learned = json.loads(trainer_tok.to_str())["model"]
    vocab = {t.content: i for i, t in enumerate(lay.head)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    pairs = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, unk_token=lay.unk, fuse_unk=True, byte_fallback=True,
                               dropout=None))
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if lay.prefix_space:  # transformers 5's LlamaTokenizer (Mistral, Phi-3)
        tok.normalizer = None
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    else:  # GemmaTokenizer
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    tok.decoder = decoders.Sequence(steps)
    _add_in_order(tok, [t for t in lay.head])  # already in the vocabulary: they keep their ids
    _add_in_order(tok, lay.tail)
    if lay.add_bos_token and lay.bos is not None:
        bos_id = tok.token_to_id(lay.bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{lay.bos}:0 $A:0", pair=f"{lay.bos}:0 $A:0 {lay.bos}:1 $B:1", special_tokens=[(lay.bos, bos_id)])
    return tok


def _token_entry(t: Token) -> dict:
    return {"content": t.content, "lstrip": t.lstrip, "normalized": False, "rstrip": t.rstrip, "single_word": False,
            "special": t.special}


def make_layout_tokenizer(path, family: str, *, corpus=None, merges: int = 200, pad_past_rows: bool = False) -> Path:
    """Write the family's tiny tokenizer in the hub's layout (tokenizer.json, tokenizer_config.json,
    special_tokens_map.json, chat_template.jinja) to directory `path`.

    `pad_past_rows` adds a pad token (`PAD_PAST_ROWS_TOKEN`) after every other token and names it the pad token,
    as users do with `tokenizer.add_special_tokens({"pad_token": ...})` without resizing the model."""
    lay = layout(family)
    corpus = list(LAYOUT_CORPUS if corpus is None else ([corpus] if isinstance(corpus, str) else corpus))
    tok = (_spm_tokenizer if lay.spm else _byte_level_tokenizer)(lay, corpus, merges)
    tail = list(lay.tail)
    pad = lay.pad
    if pad_past_rows:
        extra = Token(PAD_PAST_ROWS_TOKEN)
        _add_in_order(tok, [extra])
        tail.append(extra)
        pad = PAD_PAST_ROWS_TOKEN
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    decoder = {str(tok.token_to_id(t.content)): _token_entry(t) for t in [*lay.head, *tail]}
    config = {
        "add_bos_token": lay.add_bos_token,
        "added_tokens_decoder": dict(sorted(decoder.items(), key=lambda kv: int(kv[0]))),
        "additional_special_tokens": list(lay.additional_special_tokens),
        "bos_token": lay.bos,
        "clean_up_tokenization_spaces": False,
        "eos_token": lay.eos,
        "pad_token": pad,
        "tokenizer_class": lay.tokenizer_class,
        "unk_token": lay.unk,
        **lay.tokenizer_extra,
    }
    if not lay.additional_special_tokens:
        del config["additional_special_tokens"]
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                encoding="utf-8")
    names = {"bos_token": lay.bos, "eos_token": lay.eos, "pad_token": pad, "unk_token": lay.unk}
    special_map = {k: {"content": v, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
                   for k, v in names.items() if v is not None}
    if lay.additional_special_tokens:
        special_map["additional_special_tokens"] = list(lay.additional_special_tokens)
    (path / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, sort_keys=True) + "\n",
                                                  encoding="utf-8")
    (path / "chat_template.jinja").write_text(lay.chat_template, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ checkpoints
def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def layout_rows(family: str, tokenizer_length: int, extra_rows: int | None = None) -> int:
    """Embedding rows for a tokenizer of `tokenizer_length` ids: equal, or padded past it as the family pads."""
    lay = layout(family)
    if extra_rows is not None:
        return tokenizer_length + extra_rows
    if lay.rows_padded:
        return _round_up(tokenizer_length + 1, 64) + lay.pad_rows_by
    return tokenizer_length


def _ids(tokenizer_file: Path, tokens) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    out = []
    for t in tokens:
        i = tok.token_to_id(t)
        if i is None:
            raise ValueError(f"{tokenizer_file}: no token {t!r}")
        out.append(i)
    return out


def _one_or_list(ids: list[int]):
    return ids[0] if len(ids) == 1 else ids


def make_layout_checkpoint(path, family: str, *, seed: int = 0, hidden_size: int = 32, num_layers: int = 2,
                           intermediate_size: int | None = None, num_heads: int = 4, num_kv_heads: int = 2,
                           pad_past_rows: bool = False, extra_rows: int | None = None, init_std: float = 0.1,
                           merges: int = 200, corpus=None) -> Path:
    """Write a tiny random checkpoint of `family` (a key of LAYOUTS) with its layout's tokenizer to `path`.

    config.json has the family's model_type, bos/eos/pad ids and `vocab_size` rows (equal to the tokenizer's
    length, or padded past it; `extra_rows` overrides the padding: rows = len(tokenizer) + extra_rows);
    generation_config.json the family's bos / eos list / pad. `pad_past_rows` adds a pad token to the tokenizer
    past the model's rows (the model is not resized: config.json and generation_config.json keep the family's
    pad, as after `tokenizer.add_special_tokens({"pad_token": ...})`); it needs a family whose rows equal the
    tokenizer's length (llama3, gemma2, mistral) unless `extra_rows=0`.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from .checkpoints import hub_config, tiny_config

    lay = layout(family)
    hf_logging.disable_progress_bar()
    path = Path(path)
    tok_dir = path.with_name(path.name + "-tokenizer")
    make_layout_tokenizer(tok_dir, family, corpus=corpus, merges=merges)
    base_tokenizer = tok_dir / "tokenizer.json"
    from tokenizers import Tokenizer

    length = Tokenizer.from_file(str(base_tokenizer)).get_vocab_size(with_added_tokens=True)
    rows = layout_rows(family, length, extra_rows)
    if pad_past_rows and rows > length:
        raise ValueError(f"{family}: its rows ({rows}) are padded past the tokenizer ({length}), so an added pad "
                         "token would still have a row; pass extra_rows=0 or use llama3, gemma2 or mistral")
    bos_id = _ids(base_tokenizer, [lay.bos])[0] if lay.bos is not None else None
    config_eos = _ids(base_tokenizer, lay.config_eos)
    config_pad = _ids(base_tokenizer, [lay.config_pad])[0] if lay.config_pad is not None else None
    heads = num_heads
    overrides = dict(hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=heads,
                     num_key_value_heads=num_kv_heads, intermediate_size=intermediate_size or 2 * hidden_size,
                     head_dim=hidden_size // heads, initializer_range=init_std)
    if lay.model_type == "gemma2":
        overrides["query_pre_attn_scalar"] = hidden_size // heads
    overrides.update(lay.config_extra)
    config = tiny_config(lay.model_type, rows, **overrides)
    config.bos_token_id = bos_id
    config.eos_token_id = _one_or_list(config_eos)
    config.pad_token_id = config_pad
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # norms random too, as in checkpoints.make_tiny_checkpoint
        for name, param in model.named_parameters():
            if "norm" in name and param.dim() == 1:
                param.copy_((0.0 if lay.model_type.startswith("gemma") else 1.0) + 0.1 * torch.randn_like(param))
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    saved = json.loads((path / "config.json").read_text())
    out = hub_config(saved, model.config)
    out.update(bos_token_id=bos_id, eos_token_id=_one_or_list(config_eos), vocab_size=rows)
    if config_pad is None:
        out.pop("pad_token_id", None)
    else:
        out["pad_token_id"] = config_pad
    (path / "config.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    generation = {"bos_token_id": bos_id, "eos_token_id": _one_or_list(_ids(base_tokenizer, lay.generation_eos))}
    if lay.generation_pad is not None:
        generation["pad_token_id"] = _ids(base_tokenizer, [lay.generation_pad])[0]
    if bos_id is None:
        generation.pop("bos_token_id")
    generation.update(lay.generation_extra)
    generation["transformers_version"] = saved.get("transformers_version", "5")
    (path / "generation_config.json").write_text(json.dumps(generation, indent=2, sort_keys=True) + "\n")
    if pad_past_rows:
        shutil.rmtree(tok_dir)
        make_layout_tokenizer(tok_dir, family, corpus=corpus, merges=merges, pad_past_rows=True)
    for item in tok_dir.iterdir():
        if item.is_file():
            shutil.copy2(item, path / item.name)
    return path


def layout_ids(path) -> dict:
    """The ids a layout checkpoint at `path` declares: {"rows", "len", "bos", "eos" (tokenizer), "pad",
    "config_eos", "generation_eos", "generation_pad"} (read from its files with `tokenizers`, no transformers)."""
    from tokenizers import Tokenizer

    path = Path(path)
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tcfg = json.loads((path / "tokenizer_config.json").read_text())
    cfg = json.loads((path / "config.json").read_text())
    gen = json.loads((path / "generation_config.json").read_text())

    def tid(name):
        value = tcfg.get(name)
        return None if value is None else tok.token_to_id(value)

    def as_list(v):
        return [] if v is None else [v] if isinstance(v, int) else list(v)

    return {"rows": cfg["vocab_size"], "len": tok.get_vocab_size(with_added_tokens=True), "bos": tid("bos_token"),
            "eos": tid("eos_token"), "pad": tid("pad_token"), "unk": tid("unk_token"),
            "config_eos": as_list(cfg.get("eos_token_id")), "generation_eos": as_list(gen.get("eos_token_id")),
            "generation_pad": gen.get("pad_token_id")}
