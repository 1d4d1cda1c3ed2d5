"""Token ids at the boundary: which ids end generation, which id pads, and which ids a model can read.

Real tokenizers do not always fit their models: eos is often a list (Llama-3's generation_config.json names
three), a pad token may be added past the embedding rows, and a model's rows may be padded past the tokenizer
(Qwen2.5, Phi-3). Ids that reach a model are checked here, once, so that neither backend indexes past its
embedding (torch raises an IndexError deep inside, mlx reads garbage).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from .errors import ConfigError


def _as_id_list(value) -> list[int]:
    """An eos entry as ids: None, an int, or a list/set/tuple of ints (transformers 5 makes
    `tokenizer.eos_token_ids` an int, mlx-lm's wrapper a set, generation configs a list)."""
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [int(v) for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def eos_token_ids(tokenizer, path: Path | None = None, config: dict | None = None) -> list[int]:
    """Every id that ends generation: the tokenizer's eos (and an mlx-lm wrapper's set), and the eos ids of the
    checkpoint's generation_config.json — or of its config.json when it has none — as transformers' and mlx-lm's
    generation read them."""
    ids = set(_as_id_list(getattr(tokenizer, "eos_token_id", None)))
    ids.update(_as_id_list(getattr(tokenizer, "eos_token_ids", None)))
    generation = _read_json(Path(path) / "generation_config.json") if path is not None else {}
    if "eos_token_id" in generation:
        ids.update(_as_id_list(generation["eos_token_id"]))
    elif config:
        ids.update(_as_id_list(config.get("eos_token_id", (config.get("text_config") or {}).get("eos_token_id"))))
    return sorted(i for i in ids if i >= 0)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def embedding_rows(config: dict) -> int | None:
    """Rows of a checkpoint's input embedding according to its config.json (None when it does not say)."""
    for cfg in (config, config.get("text_config"), config.get("llm_config")):
        if isinstance(cfg, dict) and isinstance(cfg.get("vocab_size"), int) and cfg["vocab_size"] > 0:
            return cfg["vocab_size"]
    return None


def checkpoint_rows(path) -> int | None:
    """`embedding_rows` of the config.json in directory `path` (None when there is none, e.g. an adapter)."""
    return embedding_rows(_read_json(Path(path) / "config.json"))


def pad_id_of(tokenizer, rows: int | None) -> int:
    """The id to pad batches with: the tokenizer's pad (else eos) when the model has a row for it, else 0.
    Padded positions are masked, so any id the model can read will do; one past its rows would crash it."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = _as_id_list(getattr(tokenizer, attr, None))
        if value and 0 <= value[0] and (rows is None or value[0] < rows):
            return value[0]
    return 0


def check_token_ids(ids: Iterable, rows: int | None, where: str = "token ids") -> None:
    """Refuse an id a model with `rows` embedding rows cannot read (negative or >= rows), naming it."""
    bad = next(((pos, int(i)) for pos, i in enumerate(ids) if i < 0 or (rows is not None and i >= rows)), None)
    if bad is None:
        return
    pos, value = bad
    limit = f"the model has {rows} embedding rows (ids 0..{rows - 1})" if rows is not None else "ids start at 0"
    raise ConfigError(f"{where}: token id {value} at position {pos} is out of range: {limit}")


def as_id_rows(ids: Any, rows: int | None, to_numpy=None) -> list[list[int]] | Any:
    """Validate a (B, T) batch of token ids from the Python API: nested lists of ints, or a backend / NumPy array
    (returned as is). Refuses an empty or ragged batch, non-integers and out-of-range ids with one line."""
    import numpy as np

    if hasattr(ids, "shape"):
        array = np.asarray(to_numpy(ids) if to_numpy is not None and not isinstance(ids, np.ndarray) else ids)
        if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
            raise ConfigError(f"token ids: expected a non-empty (batch, length) array, got shape {tuple(array.shape)}")
        if not np.issubdtype(array.dtype, np.integer):
            raise ConfigError(f"token ids: expected integers, got dtype {array.dtype}")
        for b, row in enumerate(array):
            check_token_ids(row.tolist(), rows, f"token ids row {b}")
        return ids
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (list, tuple)) or not ids:
        raise ConfigError(f"token ids: expected a non-empty list of rows of ints, got {shown(ids)}")
    out = []
    for b, row in enumerate(ids):
        if isinstance(row, (str, bytes)) or not isinstance(row, (list, tuple)) or not row:
            raise ConfigError(f"token ids row {b}: expected a non-empty list of ints, got {shown(row)}")
        if any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) for i in row):
            bad = next(i for i in row if isinstance(i, bool) or not isinstance(i, (int, np.integer)))
            raise ConfigError(f"token ids row {b}: {bad!r} is not an integer token id")
        check_token_ids(row, rows, f"token ids row {b}")
        out.append([int(i) for i in row])
    if len({len(r) for r in out}) > 1:
        raise ConfigError(f"token ids: rows have different lengths ({', '.join(str(len(r)) for r in out)}); "
                          "pad them to one length")
    return out


def shown(value) -> str:
    """`value` for a one-line message: its repr, cut at 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
