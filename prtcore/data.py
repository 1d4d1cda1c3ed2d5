"""Training data: mlx-lm's jsonl formats, tokenised with a loss mask, and deterministic resumable batches.

A data directory holds `train.jsonl`, `valid.jsonl` and optionally `test.jsonl`, one JSON object per line in
one of three formats (detected from the first line; every line must use the same one):
- text:        {"text": "..."}
- completions: {"prompt": "...", "completion": "..."}   rendered as a user/assistant chat when the tokenizer
                                                        has a chat template, else concatenated
- chat:        {"messages": [{"role": ..., "content": ...}, ...], "tools": [...]?}
- llava:       {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}   read as chat

Chat and llava rows may carry images (for vision-language bases, prtcore.vision): `"images": [path, ...]` or
`"image": path`, paths relative to the jsonl file's directory. Each image goes where its "<image>" marker is
(or, without markers, before the first user message); image tokens are never loss targets.

`mask[i] == 1` marks token i as a training target. With `mask_prompt`, only assistant turns are targets
(every assistant turn of a multi-turn chat, not only the last).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import attrs
import numpy as np

from .errors import ConfigError, DataError
from .tokens import check_token_ids

FORMATS = {"text": ("text",), "completions": ("prompt", "completion"), "chat": ("messages",), "llava": ("conversations",)}
ROLES = ("system", "user", "assistant", "tool")
LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@attrs.frozen
class Example:
    """Token ids and loss mask of one row; `images` (prtcore.vision.Images) when the row has images."""

    ids: list[int]
    mask: list[int]
    line: int = 0
    images: Any = None


@attrs.frozen
class Batch:
    """Padded (B, L) int32 ids and float32 mask; the loss reads ids[:, :-1] → ids[:, 1:] where mask[:, 1:]."""

    ids: np.ndarray
    mask: np.ndarray
    images: tuple | None = None  # per row: prtcore.vision.Images or None; None when no row has images

    @property
    def ntokens(self) -> int:
        return int(self.mask[:, 1:].sum())


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; errors name the file and line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a .jsonl file") from None
    rows = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{number}: invalid UTF-8 at byte {e.start}") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number}: invalid JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise DataError(f"{path}:{number}: JSON nested too deeply") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, found {type(obj).__name__}")
        rows.append((number, obj))
    if not rows:
        raise DataError(f"{path}: file is empty")
    return rows


def detect_format(obj: dict, where: str) -> str:
    for name, keys in FORMATS.items():
        if all(k in obj for k in keys):
            return name
    raise DataError(
        f"{where}: no known format: expected keys 'text', 'prompt'+'completion', 'messages' or 'conversations', "
        f"found {sorted(obj)}"
    )


def _check_str(obj, key, where):
    if not isinstance(obj.get(key), str):
        raise DataError(f"{where}: field {key!r} must be a string, found {type(obj.get(key)).__name__}")


def _check_messages(obj, where):
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise DataError(f"{where}: messages[{i}] must be an object with a string 'role'")
        if m["role"] not in ROLES:
            raise DataError(f"{where}: messages[{i}].role={m['role']!r} must be one of {', '.join(ROLES)}")
        if not isinstance(m.get("content", ""), (str, list)) and m.get("content") is not None:
            raise DataError(f"{where}: messages[{i}].content must be a string")
    if "tools" in obj and not isinstance(obj["tools"], list):
        raise DataError(f"{where}: field 'tools' must be a list")


def _check_conversations(obj, where):
    turns = obj["conversations"]
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: field 'conversations' must be a non-empty list")
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or t.get("from") not in LLAVA_ROLES:
            raise DataError(f"{where}: conversations[{i}].from must be one of {', '.join(LLAVA_ROLES)}")
        if not isinstance(t.get("value"), str):
            raise DataError(f"{where}: conversations[{i}].value must be a string")


def llava_messages(obj) -> list[dict]:
    return [{"role": LLAVA_ROLES[t["from"]], "content": t["value"]} for t in obj["conversations"]]


def image_paths(obj, where, base_dir: Path) -> list[Path]:
    """The row's image files ("images": [...] or "image": "..."), relative to `base_dir`, each checked to exist."""
    if "images" in obj and "image" in obj:
        raise DataError(f"{where}: give either field 'images' or field 'image', not both")
    value = obj.get("images", obj.get("image"))
    if value is None:
        return []
    field = "images" if "images" in obj else "image"
    names = [value] if field == "image" else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise DataError(f"{where}: field {field!r} must be " + ("a path string" if field == "image" else "a list of path strings"))
    paths = []
    for i, name in enumerate(names):
        path = Path(name) if Path(name).is_absolute() else base_dir / name
        if not path.is_file():
            label = field if field == "image" else f"images[{i}]"
            raise DataError(f"{where}: field {label!r}: image file {str(path)!r} not found")
        paths.append(path)
    return paths


def _ids(value) -> list[int]:
    if isinstance(value, dict) or hasattr(value, "keys"):
        value = value["input_ids"]
    return [int(i) for i in value]


class Tokenise:
    """Turns one JSON row into an Example with the tokenizer's chat template."""

    def __init__(self, tokenizer, mask_prompt: bool, vision=None):
        self.tok, self.mask_prompt, self.vision = tokenizer, mask_prompt, vision
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        eos = getattr(tokenizer, "eos_token_id", None)
        self.eos = None if eos is None else int(eos)

    def render(self, messages, tools=None, add_generation_prompt=False, where: str = "") -> list[int]:
        kwargs = {"tools": tools} if tools else {}
        try:
            return _ids(self.tok.apply_chat_template(messages, tokenize=True,
                                                     add_generation_prompt=add_generation_prompt, **kwargs))
        except DataError:
            raise
        except Exception as e:  # the template's own error (jinja2, a missing key, a value of another type)
            detail = " ".join(str(e).split())[:200]
            raise DataError(f"{where}: the tokenizer's chat template cannot render this row "
                            f"({type(e).__name__}: {detail})") from None

    def __call__(self, fmt: str, obj: dict, where: str) -> Example:
        if fmt == "text":
            ids = list(self.tok.encode(obj["text"]))
            if self.eos is not None and (not ids or ids[-1] != self.eos):
                ids.append(self.eos)
            return Example(ids, [1] * len(ids))
        if fmt == "completions":
            if not self.has_template:
                prompt = list(self.tok.encode(obj["prompt"]))
                full = list(self.tok.encode(obj["prompt"] + obj["completion"]))
                if self.eos is not None:
                    full.append(self.eos)
                return Example(full, self._mask(len(full), [(len(prompt), len(full))]))
            messages = [{"role": "user", "content": obj["prompt"]}, {"role": "assistant", "content": obj["completion"]}]
            return self.chat(messages, None, where)
        if not self.has_template:
            raise DataError(f"{where}: chat data needs a tokenizer with a chat template")
        messages = llava_messages(obj) if fmt == "llava" else obj["messages"]
        return self.chat(messages, obj.get("tools"), where)

    def with_images(self, fmt: str, obj: dict, where: str, paths: list[Path]) -> Example:
        """A chat row with images: placeholders rendered, expanded to the image's tokens, never targets."""
        from .vision import Images, expand_image_tokens, messages_with_placeholders

        if self.vision is None:
            raise DataError(f"{where}: the row has images, but the model has no vision encoder")
        if not self.has_template:
            raise DataError(f"{where}: chat data needs a tokenizer with a chat template")
        messages = llava_messages(obj) if fmt == "llava" else obj["messages"]
        try:
            messages = messages_with_placeholders(messages, len(paths), self.vision.placeholder)
        except DataError as e:
            raise DataError(f"{where}: {e}") from None
        ex = self.chat(messages, obj.get("tools"), where)
        images = Images(paths)
        token = self.vision.image_token_id
        counts = images.num_tokens(self.vision)
        ids = expand_image_tokens(ex.ids, token, counts)
        widths = iter(counts)
        mask = [v for t, m in zip(ex.ids, ex.mask) for v in ([0] * next(widths) if t == token else [m])]
        return Example(ids, mask, images=images)

    def chat(self, messages, tools, where) -> Example:
        full = self.render(messages, tools, where=where)
        spans = []
        if self.mask_prompt:
            for i, m in enumerate(messages):
                if m["role"] != "assistant":
                    continue
                prefix = self.render(messages[:i], tools, add_generation_prompt=True, where=where) if i else []
                upto = self.render(messages[: i + 1], tools, where=where)
                # A template may close a chat that ends here with more than the turn (Phi-3 appends eos): the
                # turn ends where this rendering and the whole chat part.
                end = next((k for k, (a, b) in enumerate(zip(upto, full)) if a != b), min(len(upto), len(full)))
                if full[: len(prefix)] != prefix or end <= len(prefix):
                    raise DataError(f"{where}: the chat template does not render turns incrementally; cannot mask prompts")
                spans.append((len(prefix), end))
            if not spans:
                raise DataError(f"{where}: --mask-prompt needs at least one assistant message")
        else:
            spans = [(0, len(full))]
        return Example(full, self._mask(len(full), spans))

    def _mask(self, length, spans):
        if not self.mask_prompt:
            return [1] * length
        mask = [0] * length
        for start, end in spans:
            mask[start:end] = [1] * (end - start)
        return mask


def parse_split(path, *, mask_prompt: bool = False) -> tuple[str, list[tuple[int, dict]]]:
    """(format, rows) of one jsonl file, every row checked against the format of the first (no tokenizer needed).

    Errors name the file and line: invalid JSON, a row of another format, a missing or mistyped key, an empty
    file, `mask_prompt` on plain text, images on a text or completions row or an image file that is missing.
    """
    path = Path(path)
    rows = read_jsonl(path)
    fmt = detect_format(rows[0][1], f"{path}:{rows[0][0]}")
    if fmt == "text" and mask_prompt:
        raise DataError(f"{path}: --mask-prompt needs prompt/completion or chat data, this file holds plain text")
    for number, obj in rows:
        where = f"{path}:{number}"
        found = detect_format(obj, where)
        if found != fmt:
            raise DataError(f"{where}: format {found!r} differs from the file's format {fmt!r} (line {rows[0][0]})")
        for key in FORMATS[fmt]:
            if key not in ("messages", "conversations"):
                _check_str(obj, key, where)
        if fmt == "chat":
            _check_messages(obj, where)
        elif fmt == "llava":
            _check_conversations(obj, where)
        if ("images" in obj or "image" in obj) and fmt not in ("chat", "llava"):
            raise DataError(f"{where}: images need chat rows ('messages' or 'conversations'), not {fmt!r}")
        image_paths(obj, where, path.parent)
    return fmt, rows


def check_data_dir(data_dir, *, splits: Sequence[str] = ("train", "valid"), optional: Sequence[str] = ("test",),
                   mask_prompt: bool = False) -> dict[str, tuple[str, list[tuple[int, dict]]]]:
    """Parse and check every split of a data directory without a tokenizer (fails fast, before a model loads)."""
    out = {}
    for split, path in _split_paths(data_dir, splits, optional).items():
        out[split] = parse_split(path, mask_prompt=mask_prompt)
    return out


def load_split(path, tokenizer, *, max_seq_length: int = 2048, mask_prompt: bool = False,
               vision=None, embedding_rows: int | None = None) -> list[Example]:
    """Tokenise one jsonl file; over-long samples are truncated with one warning that counts them.

    `vision`: the model's prtcore.vision.VisionEncoder, needed for rows with images. `embedding_rows`: the model's
    embedding rows; a row whose tokens include an id past them is refused naming the file, line and id."""
    path = Path(path)
    fmt, rows = parse_split(path, mask_prompt=mask_prompt)
    return tokenise_rows(path, fmt, rows, tokenizer, max_seq_length=max_seq_length, mask_prompt=mask_prompt,
                         vision=vision, embedding_rows=embedding_rows)


def tokenise_rows(path: Path, fmt: str, rows: list[tuple[int, dict]], tokenizer, *, max_seq_length: int,
                  mask_prompt: bool, vision=None, embedding_rows: int | None = None) -> list[Example]:
    """Examples of rows parsed from `path` (see `parse_split`): truncated to `max_seq_length` with one warning that
    counts them, refusing a cut through image tokens, one that leaves no target token, and ids the model has no
    embedding row for (`embedding_rows`)."""
    tokenise = Tokenise(tokenizer, mask_prompt, vision)
    examples, truncated, empty = [], 0, []
    for number, obj in rows:
        where = f"{path}:{number}"
        paths = image_paths(obj, where, path.parent)
        ex = tokenise.with_images(fmt, obj, where, paths) if paths else tokenise(fmt, obj, where)
        try:
            check_token_ids(ex.ids, embedding_rows, where)
        except ConfigError as e:
            raise DataError(f"{e} (a token the tokenizer knows but the model does not)") from None
        if len(ex.ids) > max_seq_length:
            if ex.images is not None and vision.image_token_id in ex.ids[max_seq_length - 1:]:
                raise DataError(f"{where}: max_seq_length={max_seq_length} would cut the row's image tokens")
            truncated += 1
            ex = Example(ex.ids[:max_seq_length], ex.mask[:max_seq_length], images=ex.images)
        if sum(ex.mask[1:]) == 0:
            raise DataError(f"{where}: no target tokens left (prompt longer than max_seq_length={max_seq_length}?)")
        pair = prompt_and_answer(fmt, obj)
        if pair is not None and not pair[1].strip():
            empty.append(number)
        examples.append(Example(ex.ids, ex.mask, number, ex.images))
    if empty:
        warnings.warn(f"{path}: {len(empty)} of {len(examples)} rows (first: line {empty[0]}) have an empty completion; "
                      "the model learns to end its answer at once", stacklevel=3)
    if truncated:
        warnings.warn(f"{path}: {truncated} of {len(examples)} samples longer than max_seq_length={max_seq_length} were truncated",
                      stacklevel=3)
    return examples


def _split_paths(data_dir, splits, optional) -> dict[str, Path]:
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DataError(f"{data_dir}: data directory not found")
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: not a directory (expected one with {', '.join(s + '.jsonl' for s in splits)})")
    out = {}
    for split in list(splits) + list(optional):
        path = data_dir / f"{split}.jsonl"
        if not path.exists():
            if split in splits:
                raise DataError(f"{path}: missing (a data directory needs {', '.join(s + '.jsonl' for s in splits)})")
            continue
        out[split] = path
    return out


class Splits(dict):
    """Split name -> examples, remembering the data directory they came from (recorded in the reward artifact)."""

    directory: Path | None = None


def load_dataset(data_dir, tokenizer, *, splits: Sequence[str] = ("train", "valid"), optional: Sequence[str] = ("test",),
                 max_seq_length: int = 2048, mask_prompt: bool = False, vision=None,
                 embedding_rows: int | None = None, model_config: dict | None = None) -> dict[str, list[Example]]:
    """Tokenised splits of a data directory; each split in `splits` must exist (`vision`, `embedding_rows`: see
    load_split). With the model's `model_config`, rows longer than its context window are warned about."""
    out = Splits({split: load_split(path, tokenizer, max_seq_length=max_seq_length, mask_prompt=mask_prompt,
                                    vision=vision, embedding_rows=embedding_rows)
                  for split, path in _split_paths(data_dir, splits, optional).items()})
    out.directory = Path(data_dir).resolve()
    window = context_window(model_config or {})
    for split, examples in out.items():
        longer = [e.line for e in examples if window and len(e.ids) > window]
        if longer:
            warnings.warn(f"{data_dir}/{split}.jsonl: {len(longer)} of {len(examples)} rows (first: line {longer[0]}) are "
                          f"longer than the model's context window (max_position_embeddings={window}); lower "
                          "max_seq_length to it", stacklevel=2)
    return out


def context_window(config: dict) -> int | None:
    """The model's context window from its config.json (a vision-language model's: its text model's)."""
    for section in (config, config.get("text_config") or {}, config.get("llm_config") or {}):
        value = section.get("max_position_embeddings") if isinstance(section, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    return None


# ------------------------------------------------------------------------------------------------ prompts
def prompt_and_answer(fmt: str, obj: dict) -> tuple[list[dict] | str, str] | None:
    """(prompt, answer) of a row for exact-match evaluation: a prompt/completion pair, or a chat (or LLaVA
    conversation) whose last message is the assistant's (prompt: the messages before it). None for plain text."""
    if fmt == "completions":
        return obj["prompt"], obj["completion"]
    messages = llava_messages(obj) if fmt == "llava" else obj.get("messages") if fmt == "chat" else None
    if messages and len(messages) > 1 and messages[-1]["role"] == "assistant":
        content = messages[-1].get("content")
        if isinstance(content, str):
            return list(messages[:-1]), content
    return None


def render_prompt(tokenizer, prompt: list[dict] | str, *, tools=None) -> list[int]:
    """Token ids that ask the model for the answer: the chat template with a generation prompt when the
    tokenizer has one (as training rendered the data), else the plain text."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        kwargs = {"tools": tools} if tools else {}
        return _ids(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, **kwargs))
    if not isinstance(prompt, str):
        prompt = "\n".join(str(m.get("content", "")) for m in prompt)
    return list(tokenizer.encode(prompt))


def turn_end_marker(tokenizer) -> str | None:
    """The text a chat template puts right after an assistant message (e.g. "<|im_end|>"), used as a stop
    string so that a reply ends with its turn; None without a template or when it adds nothing visible."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    mark = "\u2063PRT-END\u2063"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": mark}],
                                             tokenize=False)
    except Exception:  # a template that refuses this exchange: no marker
        return None
    if not isinstance(text, str) or mark not in text:
        return None
    tail = text.split(mark, 1)[1].strip()
    return tail.split()[0] if tail else None


# ------------------------------------------------------------------------------------------------ batches
def batches_per_epoch(n_examples: int, batch_size: int) -> int:
    return max(1, n_examples // batch_size)


def batch_indices(n_examples: int, batch_size: int, step: int, *, seed: int = 0,
                  rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Example indices of global batch `step` (0-based), a pure function of its arguments so runs resume exactly.

    Each epoch is a fresh permutation drawn from (seed, epoch); the remainder of an epoch is dropped. Under
    data parallelism each rank takes every `world_size`-th example of the global batch.
    """
    if n_examples == 0:
        raise DataError("no examples to batch")
    per_epoch = batches_per_epoch(n_examples, batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_examples)
    size = min(batch_size, n_examples)
    return order[position * size: (position + 1) * size][rank::world_size]


def collate(examples: Sequence[Example], pad_id: int, *, pad_to_multiple: int = 8) -> Batch:
    """Right-pad examples to a common length (a multiple of `pad_to_multiple`)."""
    longest = max(len(e.ids) for e in examples)
    length = -(-longest // pad_to_multiple) * pad_to_multiple
    ids = np.full((len(examples), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(examples), length), dtype=np.float32)
    for row, e in enumerate(examples):
        ids[row, : len(e.ids)] = e.ids
        mask[row, : len(e.mask)] = e.mask
    images = tuple(e.images for e in examples) if any(e.images is not None for e in examples) else None
    return Batch(ids, mask, images)


def iterate_batches(examples: Sequence[Example], batch_size: int, pad_id: int, *, seed: int = 0, start_step: int = 0,
                    steps: int | None = None, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
    """Training batches from global step `start_step` on (forever when `steps` is None)."""
    step = start_step
    while steps is None or step < start_step + steps:
        idx = batch_indices(len(examples), batch_size, step, seed=seed, rank=rank, world_size=world_size)
        yield collate([examples[i] for i in idx], pad_id)
        step += 1


def evaluation_batches(examples: Sequence[Example], batch_size: int, pad_id: int, *, max_batches: int = -1) -> Iterator[Batch]:
    """Validation batches in file order; `max_batches` -1 for all."""
    count = 0
    for start in range(0, len(examples), batch_size):
        if max_batches != -1 and count >= max_batches:
            return
        yield collate(examples[start: start + batch_size], pad_id)
        count += 1
