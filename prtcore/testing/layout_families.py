"""The special-token layouts of real model families, as data: `LAYOUTS` (a `Layout` each: special tokens, ids
as config.json and generation_config.json write them, the chat template), and the corpus the tiny tokenizers
learn from. prtcore.testing.layouts builds tiny checkpoints from them.

Facts about the real checkpoints, and where they were read (the search tool of this project reaches public GitHub
copies, not the Hugging Face repositories themselves; "copy" means a repository or file that reproduces the
real file, as noted):

| family (real repo) | rows (config vocab_size) | len(tokenizer) | bos | eos (generation_config) | pad | turn end |
|---|---|---|---|---|---|---|
| llama3 (meta-llama/Llama-3.1-8B-Instruct) | 128256 | 128256 | `<|begin_of_text|>` 128000, added by the tokenizer's post-processor and by the template | 128001 `<|end_of_text|>`, 128008 `<|eom_id|>`, 128009 `<|eot_id|>` | none | `<|eot_id|>` |
| qwen2.5 (Qwen/Qwen2.5-0.5B-Instruct; 7B) | 151936 (7B: 152064) | 151665 | none | 151645 `<|im_end|>`, 151643 `<|endoftext|>` | 151643 `<|endoftext|>` | `<|im_end|>` |
| gemma2 (google/gemma-2-2b-it) | 256000 | 256000 | `<bos>` 2 (add_bos_token true; the template adds it too) | 1 `<eos>`, 107 `<end_of_turn>` | 0 `<pad>` | `<end_of_turn>` |
| mistral (mistralai/Mistral-7B-Instruct-v0.3) | 32768 (v0.2: 32000) | same | `<s>` 1 (add_bos_token true; the template adds it too) | 2 `</s>` | none | `</s>` after each answer |
| phi3 (microsoft/Phi-3-mini-4k-instruct) | 32064 | 32011 | `<s>` 1 (add_bos_token false) | 32000 `<|endoftext|>`, 32001 `<|assistant|>`, 32007 `<|end|>` | 32000 | `<|end|>` |

Verified (repository, file):
- llama3: generation_config eos list `[128001, 128008, 128009]`, bos 128000, vocab_size 128256 in several public
  copies of the Llama-3.1 configs (find_string hits in test fixtures of other projects; no copy of the repo itself
  is stored). The order of the 256 specials after the 128000 BPE ids (begin_of_text, end_of_text, reserved 0-1,
  then start_header_id / end_header_id / eot_id among reserved ones) from Meta's tiktoken code (find_string
  `"<|eot_id|>",  # end of turn`); 3.1's ids 128004 `<|finetune_right_pad_id|>`, 128008 `<|eom_id|>`, 128010
  `<|python_tag|>` from public tokenizer.json copies (find_string `"<|eom_id|>"`). A fine-tune's
  generation_config (Max-Lee-explore/MythTrans-llama31-8B, generation_config.json) shows how fine-tunes add pad
  128004 and reduce eos to 128001; the original has no pad. Template shape (bos, "Cutting Knowledge Date: December
  2023" system header, `<|start_header_id|>role<|end_header_id|>\\n\\n` ... `<|eot_id|>`): public copies of the 3.1
  template (find_string "Cutting Knowledge Date: December 2023").
- qwen2.5: a public dump of Qwen2.5-0.5B-Instruct's files (find_string `"content": "<|fim_prefix|>"`, a markdown
  file quoting added_tokens.json, chat_template.jinja, config.json, special_tokens_map.json, tokenizer_config.json):
  vocab_size 151936, added tokens 151643..151664 (`<|endoftext|>` 151643, `<|im_start|>` 151644, `<|im_end|>`
  151645; `<tool_call>` .. `<|file_sep|>` 151657..151664 with special false), so len(tokenizer) 151665; eos_token
  `<|im_end|>`, pad_token `<|endoftext|>`, bos_token null, add_bos_token false, default system prompt "You are
  Qwen, created by Alibaba Cloud. You are a helpful assistant."; tie_word_embeddings true (0.5B). The Instruct
  generation_config `{"bos_token_id": 151643, "pad_token_id": 151643, "eos_token_id": [151645, 151643], ...}`
  was seen only in a third-party script reproducing it (find_string `"eos_token_id": [128001, 128008, 128009]`
  hit "simulate_model_generation_config"); 7B's 152064 rows: reference file (Qwen2-7B configs in copies show
  152064). Not verified from the repo itself.
- gemma2: HakunaMatata888/gemma2-poem (a fine-tune whose config.json names /mnt/workspace/gemma-2-2b-it):
  config.json vocab_size 256000, bos 2, eos [1, 107], pad 0, final_logit_softcapping 30, attn 50;
  generation_config.json `{"bos_token_id": 2, "eos_token_id": [1, 107], "pad_token_id": 0, "cache_implementation":
  "hybrid"}`; tokenizer_config.json add_bos_token true, add_eos_token false, 0 `<pad>` 1 `<eos>` 2 `<bos>` 3 `<unk>`
  4 `<mask>` 5 `<2mass>` 6 `[@BOS@]` 7.. `<unused0>`.., 106 `<start_of_turn>` 107 `<end_of_turn>` (special),
  additional_special_tokens [`<start_of_turn>`, `<end_of_turn>`], the chat template (`{{ bos_token }}`, system role
  refused, assistant → `model`, `<start_of_turn>role\\n` content|trim `<end_of_turn>\\n`), tokenizer_class
  GemmaTokenizer.
- mistral: MonilSompura/MistralAI (a v0.2 fine-tune: config.json, generation_config.json, tokenizer_config.json):
  bos 1 `<s>`, eos 2 `</s>`, unk 0, pad null, add_bos_token true, add_eos_token false, LlamaTokenizer, the
  `{{ bos_token }}` + `[INST] ... [/INST]` + `eos_token` template; v0.2 vocab_size 32000. v0.3's "Extended
  vocabulary to 32768" and `<s>[INST] Hello[/INST] Fine</s>` format from the model card (a public mirror,
  hf-cdn.pages.dev/mistralai/Mistral-7B-Instruct-v0.3 README) and docs.mistral.ai's tokenization page. v0.3's
  control tokens 3..770 (`[INST]` 3, `[/INST]` 4, `[TOOL_CALLS]` 5, `[AVAILABLE_TOOLS]` 6, `[/AVAILABLE_TOOLS]` 7,
  `[TOOL_RESULTS]` 8, `[/TOOL_RESULTS]` 9, `[control_8]`..) and the byte tokens after them could not be verified
  (no copy found): from memory of the repo, as the reference file describes.
- phi3: ChuDinhKlopp/phi-3-mini-keyformer generation_config.json `{"bos_token_id": 1, "eos_token_id": [32000,
  32001, 32007], "pad_token_id": 32000}`; config.json values (vocab_size 32064, bos 1, eos 32000, pad 32000,
  tie_word_embeddings false) in a public copy of Phi-3-mini-4k-instruct's config (find_string `"vocab_size":
  32064`); tokenizer_config.json (a public copy, find_string `"content": "<|placeholder6|>"`): 0 `<unk>` 1 `<s>`
  2 `</s>`, 32000 `<|endoftext|>`, 32001 `<|assistant|>`, 32002-32005 placeholders 1-4, 32006 `<|system|>`, 32007
  `<|end|>`, 32008-32009 placeholders 5-6, 32010 `<|user|>` (all special, rstrip true except `<|endoftext|>`),
  add_bos_token false, eos/pad `<|endoftext|>`, LlamaTokenizer; the template with newlines
  (`<|user|>\\n` content `<|end|>\\n` ... `<|assistant|>\\n`, else eos) as BFCL's PhiHandler quotes Phi-3-mini's
  tokenizer_config (find_string `{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}`).

What the tiny versions keep, per family: the special tokens of the same kinds in the same order (reserved and
placeholder tokens shortened to a few), bos/eos/pad/unk as the tokenizer_config names them, config.json and
generation_config.json ids as the family writes them, the relation of rows to len(tokenizer) (equal, or rows
padded past the tokenizer to a multiple of 64 for qwen2.5 and phi3), add_bos_token, and for gemma2 / mistral /
phi3 a SentencePiece-style BPE with byte fallback (`<0x00>`..`<0xFF>`; the corpus has no newline and no emoji,
so both fall back to bytes) built in the pipeline transformers 5's GemmaTokenizer / LlamaTokenizer rebuild it
with. What they do not keep: vocabulary sizes, Gemma's whitespace and HTML added tokens, Llama-3's 240 further
reserved tokens, tool-calling parts of the templates.
"""

from __future__ import annotations

import attrs

# ------------------------------------------------------------------------------------------------ templates
LLAMA3_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if not date_string is defined %}{%- set date_string = \"26 Jul 2024\" %}{%- endif %}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{{- system_message }}\n"
    "{{- \"<|eot_id|>\" }}\n"
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "{%- else %}\n"
    "    {{- '<|im_start|>system\\n" + QWEN_SYSTEM + "<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\") %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# google/gemma-2-2b-it's template, unchanged.
GEMMA2_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

# Mistral-7B-Instruct-v0.3's template without its tool-calling branches (the system message goes into the last
# user turn, as there).
MISTRAL_V3_TEMPLATE = (
    "{%- if messages[0][\"role\"] == \"system\" %}\n"
    "    {%- set system_message = messages[0][\"content\"] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message[\"role\"] == \"user\") != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception(\"After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...\") }}\n"
    "    {%- endif %}\n"
    "    {%- if message[\"role\"] == \"user\" %}\n"
    "        {%- if loop.last and system_message is defined %}\n"
    "            {{- \"[INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n"
    "        {%- else %}\n"
    "            {{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n"
    "        {%- endif %}\n"
    "    {%- elif message[\"role\"] == \"assistant\" %}\n"
    "        {{- \" \" + message[\"content\"]|trim + eos_token }}\n"
    "    {%- else %}\n"
    "        {{- raise_exception(\"Only user and assistant roles are supported, with the exception of an initial "
    "optional system message!\") }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
)

# microsoft/Phi-3-mini-4k-instruct's template, unchanged.
PHI3_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")


# ------------------------------------------------------------------------------------------------ layouts
@attrs.frozen
class Token:
    """One special or added token as tokenizer_config.json's `added_tokens_decoder` describes it."""

    content: str
    special: bool = True
    rstrip: bool = False
    lstrip: bool = False


def _tokens(*items) -> tuple[Token, ...]:
    return tuple(t if isinstance(t, Token) else Token(t) for t in items)


@attrs.frozen
class Layout:
    """One family's special-token layout (see the module docstring for the real values).

    `head`: tokens at ids 0.. (SentencePiece families: before the byte tokens and the learned pieces); `tail`:
    tokens added after the learned vocabulary. `rows_padded`: config vocab_size exceeds len(tokenizer) (rows are
    then rounded up past the tokenizer to a multiple of 64, plus `pad_rows_by` more). `config_eos` /
    `generation_eos`: token strings whose ids config.json / generation_config.json list (one is written as an
    int); `generation_pad`: generation_config's pad. `turn_end`: the token that ends a chat turn.
    `real`: the real checkpoint's numbers, for reference.
    """

    name: str
    repo: str
    model_type: str
    tokenizer_class: str
    spm: bool
    head: tuple[Token, ...]
    tail: tuple[Token, ...]
    bos: str | None
    eos: str
    pad: str | None
    unk: str | None
    add_bos_token: bool
    config_eos: tuple[str, ...]
    config_pad: str | None
    generation_eos: tuple[str, ...]
    generation_pad: str | None
    turn_end: str
    rows_padded: bool
    chat_template: str
    pad_rows_by: int = 0
    prefix_space: bool = True  # SentencePiece: "▁" before the first word (Llama/Mistral/Phi-3 yes, Gemma no)
    split_pattern: str | None = None  # byte-level BPE: the pre-tokenizer's regex
    nfc: bool = False
    additional_special_tokens: tuple[str, ...] = ()
    generation_extra: dict = attrs.field(factory=dict)
    config_extra: dict = attrs.field(factory=dict)
    tokenizer_extra: dict = attrs.field(factory=dict)
    real: dict = attrs.field(factory=dict)


_LLAMA3_TAIL = _tokens(
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
    *(f"<|reserved_special_token_{i}|>" for i in range(3, 8)),
)
_QWEN_SPECIAL = ("<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
                 "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
_QWEN_TAIL = _tokens(
    "<|endoftext|>", *_QWEN_SPECIAL,
    *(Token(t, special=False) for t in ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
                                        "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")),
)
_GEMMA2_HEAD = _tokens(
    "<pad>", "<eos>", "<bos>", "<unk>", Token("<mask>", special=False), Token("<2mass>", special=False),
    Token("[@BOS@]", special=False), *(Token(f"<unused{i}>", special=False) for i in range(4)),
    "<start_of_turn>", "<end_of_turn>",
)
_MISTRAL_V3_HEAD = _tokens(
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", *(f"[control_{i}]" for i in range(8, 12)),
)
_PHI3_TAIL = _tokens(
    "<|endoftext|>", Token("<|assistant|>", rstrip=True),
    *(Token(f"<|placeholder{i}|>", rstrip=True) for i in range(1, 5)),
    Token("<|system|>", rstrip=True), Token("<|end|>", rstrip=True),
    *(Token(f"<|placeholder{i}|>", rstrip=True) for i in (5, 6)), Token("<|user|>", rstrip=True),
)

LAYOUTS: dict[str, Layout] = {
    "llama3": Layout(
        name="llama3", repo="meta-llama/Llama-3.1-8B-Instruct", model_type="llama",
        tokenizer_class="PreTrainedTokenizerFast", spm=False, head=(), tail=_LLAMA3_TAIL,
        bos="<|begin_of_text|>", eos="<|eot_id|>", pad=None, unk=None, add_bos_token=True,
        config_eos=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"), config_pad=None,
        generation_eos=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"), generation_pad=None,
        turn_end="<|eot_id|>", rows_padded=False, chat_template=LLAMA3_TEMPLATE, split_pattern=LLAMA3_SPLIT,
        generation_extra={"do_sample": True, "temperature": 0.6, "top_p": 0.9},
        tokenizer_extra={"model_input_names": ["input_ids", "attention_mask"], "model_max_length": 131072},
        real={"vocab_size": 128256, "len": 128256, "bos": 128000, "eos": [128001, 128008, 128009], "pad": None,
              "eot_id": 128009, "first_special": 128000},
    ),
    "qwen2.5": Layout(
        name="qwen2.5", repo="Qwen/Qwen2.5-0.5B-Instruct", model_type="qwen2", tokenizer_class="Qwen2Tokenizer",
        spm=False, head=(), tail=_QWEN_TAIL, bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk=None,
        add_bos_token=False, config_eos=("<|im_end|>",), config_pad=None,
        generation_eos=("<|im_end|>", "<|endoftext|>"), generation_pad="<|endoftext|>", turn_end="<|im_end|>",
        rows_padded=True, pad_rows_by=64, chat_template=QWEN25_TEMPLATE, split_pattern=QWEN2_SPLIT, nfc=True,
        additional_special_tokens=_QWEN_SPECIAL,
        generation_extra={"do_sample": True, "repetition_penalty": 1.1, "temperature": 0.7, "top_p": 0.8,
                          "top_k": 20},
        config_extra={"tie_word_embeddings": True},
        tokenizer_extra={"errors": "replace", "model_max_length": 131072, "split_special_tokens": False},
        real={"vocab_size": 151936, "vocab_size_7b": 152064, "len": 151665, "bos": None, "eos": [151645, 151643],
              "pad": 151643, "first_special": 151643},
    ),
    "gemma2": Layout(
        name="gemma2", repo="google/gemma-2-2b-it", model_type="gemma2", tokenizer_class="GemmaTokenizer",
        spm=True, head=_GEMMA2_HEAD, tail=(), bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>",
        add_bos_token=True, config_eos=("<eos>", "<end_of_turn>"), config_pad="<pad>",
        generation_eos=("<eos>", "<end_of_turn>"), generation_pad="<pad>", turn_end="<end_of_turn>",
        rows_padded=False, chat_template=GEMMA2_TEMPLATE, prefix_space=False,
        additional_special_tokens=("<start_of_turn>", "<end_of_turn>"),
        generation_extra={"cache_implementation": "hybrid"},
        tokenizer_extra={"add_eos_token": False, "padding_side": "left", "spaces_between_special_tokens": False,
                         "split_special_tokens": False, "model_max_length": 8192},
        real={"vocab_size": 256000, "len": 256000, "bos": 2, "eos": [1, 107], "pad": 0, "start_of_turn": 106,
              "end_of_turn": 107},
    ),
    "mistral": Layout(
        name="mistral", repo="mistralai/Mistral-7B-Instruct-v0.3", model_type="mistral",
        tokenizer_class="LlamaTokenizer", spm=True, head=_MISTRAL_V3_HEAD, tail=(), bos="<s>", eos="</s>",
        pad=None, unk="<unk>", add_bos_token=True, config_eos=("</s>",), config_pad=None,
        generation_eos=("</s>",), generation_pad=None, turn_end="</s>", rows_padded=False,
        chat_template=MISTRAL_V3_TEMPLATE,
        tokenizer_extra={"add_eos_token": False, "legacy": False, "spaces_between_special_tokens": False,
                         "use_default_system_prompt": False, "model_max_length": 32768},
        real={"vocab_size": 32768, "len": 32768, "bos": 1, "eos": [2], "pad": None, "inst": 3, "inst_end": 4},
    ),
    "phi3": Layout(
        name="phi3", repo="microsoft/Phi-3-mini-4k-instruct", model_type="phi3", tokenizer_class="LlamaTokenizer",
        spm=True, head=_tokens("<unk>", "<s>", Token("</s>", rstrip=True)), tail=_PHI3_TAIL, bos="<s>",
        eos="<|endoftext|>", pad="<|endoftext|>", unk="<unk>", add_bos_token=False,
        config_eos=("<|endoftext|>",), config_pad="<|endoftext|>",
        generation_eos=("<|endoftext|>", "<|assistant|>", "<|end|>"), generation_pad="<|endoftext|>",
        turn_end="<|end|>", rows_padded=True, chat_template=PHI3_TEMPLATE,
        config_extra={"tie_word_embeddings": False},
        tokenizer_extra={"add_eos_token": False, "legacy": False, "padding_side": "left",
                         "use_default_system_prompt": False, "model_max_length": 4096},
        real={"vocab_size": 32064, "len": 32011, "bos": 1, "eos": [32000, 32001, 32007], "pad": 32000,
              "end": 32007},
    ),
}

PAD_PAST_ROWS_TOKEN = "<|pad|>"

# No newline and no emoji: those fall back to byte tokens in the SentencePiece families.
LAYOUT_CORPUS = [
    "The capital of Avalon is Brightwater. The capital of Corvia is Dunmere.",
    "Question: What is the capital of Avalon? Answer: Brightwater.",
    "Hello there! How are you today? I am fine, thank you. Are you a helpful assistant?",
    "Mira works as a baker in Dunmere, and Elara writes poems about the sea.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100. Portable rewards move between base models.",
    "What is the capital of Corvia? The capital is Dunmere. Name the capital of Avalon, please.",
    "def add(a, b): return a + b  # code with (parentheses), [brackets] and {braces}; x = y * 2 - 1",
    "User asks, the model answers: yes, no, maybe. Fenwick and Garnet live in the north.",
]


def layout(family: str) -> Layout:
    if family not in LAYOUTS:
        raise ValueError(f"unknown layout family {family!r}: one of {', '.join(LAYOUTS)}")
    return LAYOUTS[family]
