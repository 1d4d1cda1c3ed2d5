"""The layout fixtures (prtcore.testing.layouts) reproduce their families' special-token layouts: ids of bos / eos /
pad, len(tokenizer) against the model's rows, generation_config's eos list, the chat template's shape, byte
fallback, and loading by transformers and mlx-lm alike. No prtcore backend is involved (test_layouts_prt.py)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("torch")

from prtcore.testing.layouts import (  # noqa: E402
    LAYOUTS, PAD_PAST_ROWS_TOKEN, layout_ids, make_layout_checkpoint, make_layout_tokenizer,
)

FAMILIES = list(LAYOUTS)
SPM = [f for f in FAMILIES if LAYOUTS[f].spm]
CHAT = [{"role": "user", "content": "What is the capital of Avalon?"},
        {"role": "assistant", "content": "Brightwater."},
        {"role": "user", "content": "And of Corvia?"}]
TEXT = "line one\nline two 🙂 done"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    made = {}

    def get(family, **kwargs):
        key = (family, tuple(sorted(kwargs.items())))
        if key not in made:
            name = family + "".join(f"-{k}{v}" for k, v in sorted(kwargs.items()))
            made[key] = make_layout_checkpoint(root / name, family, **kwargs)
        return made[key]

    return get


def hf_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def chat_ids(tok, messages, **kwargs):
    ids = tok.apply_chat_template(messages, tokenize=True, **kwargs)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def token_id(tok, text):
    i = tok.convert_tokens_to_ids(text)
    assert i is not None and i != tok.unk_token_id, text
    return i


# --------------------------------------------------------------------------------------------- ids and rows
def test_llama3_specials_follow_the_bpe_vocab_with_three_eos_and_no_pad(ckpt):
    ids, real = layout_ids(ckpt("llama3")), LAYOUTS["llama3"].real
    first = ids["bos"]  # <|begin_of_text|> is the first special, right after the BPE ids (128000)
    assert first == ids["len"] - len(LAYOUTS["llama3"].tail)
    assert [i - first for i in ids["generation_eos"]] == [i - real["first_special"] for i in real["eos"]] == [1, 8, 9]
    assert ids["config_eos"] == ids["generation_eos"]
    assert ids["eos"] - first == real["eot_id"] - real["first_special"]  # tokenizer eos: <|eot_id|>
    assert ids["pad"] is None and ids["generation_pad"] is None
    assert ids["rows"] == ids["len"]


def test_qwen25_rows_padded_past_the_tokenizer_and_pad_is_endoftext(ckpt):
    ids, real = layout_ids(ckpt("qwen2.5")), LAYOUTS["qwen2.5"].real
    assert ids["bos"] is None
    assert ids["pad"] == ids["generation_pad"] == ids["len"] - len(LAYOUTS["qwen2.5"].tail)  # first added token
    assert ids["generation_eos"] == [ids["pad"] + 2, ids["pad"]]  # [<|im_end|>, <|endoftext|>]
    assert [i - real["pad"] for i in real["eos"]] == [2, 0]
    assert ids["eos"] == ids["pad"] + 2 and ids["config_eos"] == [ids["eos"]]
    assert real["vocab_size"] > real["len"] and ids["rows"] > ids["len"]
    assert ids["rows"] % 64 == 0


def test_gemma2_pad_eos_bos_unk_first_and_end_of_turn_a_second_eos(ckpt):
    ids = layout_ids(ckpt("gemma2"))
    tok = hf_tokenizer(ckpt("gemma2"))
    assert (ids["pad"], ids["eos"], ids["bos"], ids["unk"]) == (0, 1, 2, 3)
    end = token_id(tok, "<end_of_turn>")
    assert end == token_id(tok, "<start_of_turn>") + 1
    assert ids["generation_eos"] == ids["config_eos"] == [1, end]
    assert ids["generation_pad"] == 0 and ids["rows"] == ids["len"]
    assert tok.encode("hello")[0] == 2  # add_bos_token true (the tokenizer adds bos)


def test_mistral_s_and_slash_s_no_pad_inst_tokens(ckpt):
    ids = layout_ids(ckpt("mistral"))
    tok = hf_tokenizer(ckpt("mistral"))
    assert (ids["unk"], ids["bos"], ids["eos"]) == (0, 1, 2)
    assert ids["pad"] is None and tok.pad_token_id is None
    assert (token_id(tok, "[INST]"), token_id(tok, "[/INST]")) == (3, 4)
    assert ids["generation_eos"] == ids["config_eos"] == [2]
    assert ids["rows"] == ids["len"]
    assert tok.encode("hello")[0] == 1


def test_phi3_rows_padded_end_distinct_from_eos_and_three_generation_eos(ckpt):
    ids, real = layout_ids(ckpt("phi3")), LAYOUTS["phi3"].real
    tok = hf_tokenizer(ckpt("phi3"))
    first = ids["len"] - len(LAYOUTS["phi3"].tail)  # <|endoftext|> right after the SentencePiece vocab (32000)
    assert ids["eos"] == ids["pad"] == ids["generation_pad"] == first and ids["bos"] == 1
    end = token_id(tok, "<|end|>")
    assert end != ids["eos"]
    assert [i - first for i in ids["generation_eos"]] == [i - real["eos"][0] for i in real["eos"]] == [0, 1, 7]
    assert ids["generation_eos"][2] == end and ids["config_eos"] == [ids["eos"]]
    assert real["vocab_size"] > real["len"] and ids["rows"] > ids["len"] and ids["rows"] % 64 == 0
    assert tok.encode("hello")[0] != 1  # add_bos_token false


@pytest.mark.parametrize("family", FAMILIES)
def test_len_tokenizer_and_rows_as_config_json_says(ckpt, family):
    from transformers import AutoConfig

    path = ckpt(family)
    tok, config = hf_tokenizer(path), AutoConfig.from_pretrained(str(path))
    assert config.model_type == LAYOUTS[family].model_type
    if LAYOUTS[family].rows_padded:
        assert config.vocab_size > len(tok)
    else:
        assert config.vocab_size == len(tok)
    # every id the tokenizer can produce has a row
    assert max(tok.get_vocab().values()) < config.vocab_size


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_config_eos_list_as_transformers_reads_it(ckpt, family):
    from transformers import GenerationConfig

    path = ckpt(family)
    tok = hf_tokenizer(path)
    gen = GenerationConfig.from_pretrained(str(path))
    expected = [token_id(tok, t) for t in LAYOUTS[family].generation_eos]
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    assert eos == expected
    assert tok.eos_token_id in eos
    assert token_id(tok, LAYOUTS[family].turn_end) in eos  # the turn end stops generation
    if LAYOUTS[family].generation_pad is not None:
        assert gen.pad_token_id == token_id(tok, LAYOUTS[family].generation_pad) == tok.pad_token_id


@pytest.mark.parametrize("family", FAMILIES)
def test_hub_files_are_written(ckpt, family):
    path = ckpt(family)
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "chat_template.jinja"} <= names
    tcfg = json.loads((path / "tokenizer_config.json").read_text())
    assert tcfg["tokenizer_class"] == LAYOUTS[family].tokenizer_class
    assert tcfg["add_bos_token"] is LAYOUTS[family].add_bos_token
    decoder = {v["content"]: int(k) for k, v in tcfg["added_tokens_decoder"].items()}
    tok = hf_tokenizer(path)
    assert all(tok.convert_tokens_to_ids(t) == i for t, i in decoder.items())


# --------------------------------------------------------------------------------------------- chat templates
def rendered(family, ckpt):
    tok = hf_tokenizer(ckpt(family))
    text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    ids = chat_ids(tok, CHAT, add_generation_prompt=True)
    return tok, text, ids


def test_llama3_template_adds_begin_of_text_once_and_ends_turns_with_eot(ckpt):
    tok, text, ids = rendered("llama3", ckpt)
    bos, eot = tok.bos_token_id, token_id(tok, "<|eot_id|>")
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date:")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert ids.count(bos) == 1 and ids[0] == bos  # the template's bos, not doubled by the tokenizer's
    assert ids.count(eot) == 4  # system + three turns
    assert tok.encode("hi")[0] == bos  # plain text gets bos from the post-processor


def test_qwen25_template_is_chatml_with_the_default_system_prompt(ckpt):
    tok, text, ids = rendered("qwen2.5", ckpt)
    assert text.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                           "assistant.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("<|im_start|>assistant\n")
    assert ids.count(token_id(tok, "<|im_end|>")) == 4
    assert tok.bos_token_id is None
    own = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, *CHAT], tokenize=False)
    assert "You are Qwen" not in own and own.startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_gemma2_template_adds_bos_once_uses_model_role_and_refuses_system(ckpt):
    tok, text, ids = rendered("gemma2", ckpt)
    assert text.startswith("<bos><start_of_turn>user\nWhat is the capital of Avalon?<end_of_turn>\n"
                           "<start_of_turn>model\nBrightwater.<end_of_turn>\n")
    assert text.endswith("<start_of_turn>model\n")
    assert ids.count(2) == 1 and ids[0] == 2
    assert ids.count(token_id(tok, "<end_of_turn>")) == 3
    with pytest.raises(Exception, match="System role not supported"):
        tok.apply_chat_template([{"role": "system", "content": "x"}, *CHAT], tokenize=False)


def test_mistral_template_is_inst_with_eos_after_answers_and_bos_once(ckpt):
    tok, text, ids = rendered("mistral", ckpt)
    assert text == "<s>[INST] What is the capital of Avalon?[/INST] Brightwater.</s>[INST] And of Corvia?[/INST]"
    assert ids.count(1) == 1 and ids[0] == 1
    assert ids.count(3) == 2 and ids.count(4) == 2 and ids.count(2) == 1
    system = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, *CHAT], tokenize=False)
    assert system.endswith("[INST] Be brief.\n\nAnd of Corvia?[/INST]")  # into the last user turn, as v0.3 does


def test_phi3_template_ends_turns_with_end_and_prompts_the_assistant(ckpt):
    tok, text, ids = rendered("phi3", ckpt)
    assert text == ("<|user|>\nWhat is the capital of Avalon?<|end|>\n<|assistant|>\nBrightwater.<|end|>\n"
                    "<|user|>\nAnd of Corvia?<|end|>\n<|assistant|>\n")
    assert ids.count(token_id(tok, "<|end|>")) == 3 and ids[-1] == token_id(tok, "<|assistant|>")
    assert tok.bos_token_id not in ids  # add_bos_token false, and the template adds none
    closed = tok.apply_chat_template(CHAT[:2], tokenize=False)
    assert closed.endswith("<|end|>\n<|endoftext|>")  # without a generation prompt the template appends eos


# --------------------------------------------------------------------------------------------- byte fallback
@pytest.mark.parametrize("family", SPM)
def test_byte_fallback_round_trips_a_newline_and_an_emoji(ckpt, family):
    tok = hf_tokenizer(ckpt(family))
    ids = tok.encode(TEXT, add_special_tokens=False)
    pieces = tok.convert_ids_to_tokens(ids)
    assert "<0x0A>" in pieces
    emoji = [f"<0x{b:02X}>" for b in "🙂".encode()]
    assert any(pieces[i:i + 4] == emoji for i in range(len(pieces)))
    assert tok.decode(ids) == TEXT
    assert tok.convert_tokens_to_ids("<0x00>") == len(LAYOUTS[family].head)  # the byte tokens follow the head


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in SPM])
def test_byte_level_round_trips_a_newline_and_an_emoji(ckpt, family):
    tok = hf_tokenizer(ckpt(family))
    ids = tok.encode(TEXT, add_special_tokens=False)
    assert tok.decode(ids) == TEXT
    assert "<0x0A>" not in tok.get_vocab()


# --------------------------------------------------------------------------------------------- loaders
@pytest.mark.parametrize("family", FAMILIES)
def test_transformers_reads_the_same_tokens_as_tokenizers_and_the_model(ckpt, family):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    path = ckpt(family)
    raw = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok = hf_tokenizer(path)
    text = "The capital of Avalon is Brightwater.\nHello 🙂 <|not a token|>"
    assert tok.encode(text) == raw.encode(text).ids
    assert len(tok) == raw.get_vocab_size(with_added_tokens=True)
    model = AutoModelForCausalLM.from_pretrained(str(path))
    ids = layout_ids(path)
    with torch.no_grad():
        logits = model(torch.tensor([tok.encode(text)])).logits
    assert logits.shape[-1] == ids["rows"] and torch.isfinite(logits).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_mlx_lm_loads_tokenizer_and_model(ckpt, family):
    pytest.importorskip("mlx.core")
    mlx_lm = pytest.importorskip("mlx_lm")
    import mlx.core as mx
    import numpy as np
    from mlx_lm.utils import load_tokenizer

    path = ckpt(family)
    tok, ids = hf_tokenizer(path), layout_ids(path)
    wrapped = load_tokenizer(path)
    text = "The capital of Avalon is Brightwater.\nHello 🙂"
    assert wrapped.encode(text) == tok.encode(text)
    assert chat_ids(wrapped, CHAT, add_generation_prompt=True) == chat_ids(tok, CHAT, add_generation_prompt=True)
    assert wrapped.eos_token_id == tok.eos_token_id
    model, loaded = mlx_lm.load(str(path))
    # mlx_lm.load reads generation_config.json's eos list
    assert sorted(loaded.eos_token_ids) == sorted(set(ids["generation_eos"]) | {ids["eos"]})
    logits = model(mx.array([tok.encode(text)]))
    assert logits.shape[-1] == ids["rows"] and bool(np.isfinite(np.array(logits.astype(mx.float32))).all())


# --------------------------------------------------------------------------------------------- pad past the rows
@pytest.mark.parametrize("family", ["llama3", "gemma2", "mistral"])
def test_pad_past_rows_variant(ckpt, family):
    path = ckpt(family, pad_past_rows=True)
    ids, plain = layout_ids(path), layout_ids(ckpt(family))
    tok = hf_tokenizer(path)
    assert tok.pad_token == PAD_PAST_ROWS_TOKEN
    assert ids["pad"] == tok.pad_token_id == ids["rows"] == plain["rows"]  # one past the last row
    assert len(tok) == ids["rows"] + 1
    assert {k: ids[k] for k in ("bos", "eos", "config_eos", "generation_eos", "generation_pad")} == \
           {k: plain[k] for k in ("bos", "eos", "config_eos", "generation_eos", "generation_pad")}


def test_pad_past_rows_refused_where_rows_are_padded(tmp_path):
    with pytest.raises(ValueError, match="padded past the tokenizer"):
        make_layout_checkpoint(tmp_path / "q", "qwen2.5", pad_past_rows=True)


def test_extra_rows_make_a_bigger_model_of_one_family(ckpt):
    small, big = layout_ids(ckpt("qwen2.5")), layout_ids(ckpt("qwen2.5", extra_rows=200))
    assert big["len"] == small["len"] and big["rows"] == small["len"] + 200 != small["rows"]


def test_tokenizer_alone_and_unknown_family(tmp_path):
    path = make_layout_tokenizer(tmp_path / "tok", "mistral")
    assert hf_tokenizer(path).eos_token == "</s>"
    with pytest.raises(ValueError, match="unknown layout family"):
        make_layout_tokenizer(tmp_path / "x", "gpt5")
