"""transformers' conventions for `generate` and `stream` (prtcore.model.Generative): its argument names, a
`GenerationConfig`, streamers, and token-id tensors in and out.

    model.generate("Q: ...", max_new_tokens=8)                                       # str, as with max_tokens=8
    model.generate("Q: ...", do_sample=True, top_k=20, seed=0, streamer=TextStreamer(tok))
    model.generate("Q: ...", generation_config=GenerationConfig(max_new_tokens=8, do_sample=False))
    out = model.generate(**tok(["a", "b c"], return_tensors="pt", padding=True), max_new_tokens=8)
    tok.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

Every argument transformers' `generate` takes is either translated here or refused in one line naming it (a value
that asks for what prtcore does anyway, such as `num_beams=1`, is accepted). Token-id inputs are decoded by
prtcore.serve.decoding: the rows together where the backend has capability "batched", else one by one.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import attrs
import numpy as np

from .arrays import to_numpy
from .errors import ConfigError, GenerationError
from .sampling import Sampler, generation_args, number
from .serve.decoding import Job, Token, decode_jobs
from .tokens import check_token_ids, pad_id_of, shown

DEFAULT_MAX_TOKENS = 256
SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed")
OWN = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty")  # prtcore's; None is refused
# what transformers samples with when do_sample=True leaves these unset (GenerationConfig's global defaults)
SAMPLING_DEFAULTS = {"temperature": 1.0, "top_k": 50}
# transformers arguments accepted when they ask for what prtcore does anyway (None, transformers' "unset", too)
NEUTRAL = {
    "num_beams": (1,), "num_return_sequences": (1,), "use_cache": (True, False), "output_scores": (False,),
    "output_logits": (False,), "output_attentions": (False,), "output_hidden_states": (False,),
    "return_dict_in_generate": (False,), "min_length": (0,), "min_new_tokens": (0,), "typical_p": (1.0,),
    "no_repeat_ngram_size": (0,), "length_penalty": (1.0,), "early_stopping": (False,), "renormalize_logits": (False,),
    "remove_invalid_values": (False,), "synced_gpus": (False,), "logits_processor": ([],), "stopping_criteria": ([],),
    "prefix_allowed_tokens_fn": (), "assistant_model": (), "negative_prompt_ids": (), "custom_generate": (),
    "stop_strings": ([],), "max_time": (), "bad_words_ids": ([],), "suppress_tokens": ([],), "guidance_scale": (1.0,),
}
# bookkeeping a GenerationConfig carries; bos_token_id only matters to transformers when no prompt is given
UNUSED = ("transformers_version", "_from_model_config", "bos_token_id")
HINTS = {
    "num_beams": "prtcore decodes one sequence per prompt (no beam search)",
    "num_return_sequences": "repeat the prompt in the batch, with sampling",
    "logits_processor": "the rewards are prtcore's composition; to add a reward inside transformers' or mlx-lm's "
                        "generate, see PRTLogitsProcessor (prt_torch, prt_mlx)",
    "stop_strings": "use stop=[...] (the text ends before the stop string)",
    "return_dict_in_generate": "model(ids) gives the composed log-probs (.logits)",
    "output_scores": "model(ids) gives the composed log-probs (.logits)",
    "output_logits": "model(ids) gives the composed log-probs (.logits)",
}


@attrs.frozen
class DecodingOptions:
    """prtcore's and transformers' generation arguments, resolved (`decoding_options`)."""

    sampler: Sampler
    max_tokens: int | None = None  # new tokens; None: `max_length`, else DEFAULT_MAX_TOKENS
    max_length: int | None = None  # prompt + new tokens (transformers' max_length)
    stop: tuple[str, ...] = ()
    eos_ids: tuple[int, ...] = ()  # eos_token_id: ids that end generation besides the model's own
    pad_token_id: int | None = None
    streamer: object = None
    images: object = None

    def budget(self, prompt_length: int) -> int:
        """New tokens allowed after a prompt of `prompt_length` tokens."""
        if self.max_tokens is not None:
            return self.max_tokens
        if self.max_length is None:
            return DEFAULT_MAX_TOKENS
        if self.max_length <= prompt_length:
            raise GenerationError(f"max_length={self.max_length}: the prompt alone has {prompt_length} tokens; "
                                  "raise max_length or give max_new_tokens")
        return self.max_length - prompt_length

    def eos(self, model) -> list[int]:
        return sorted(set(model.target.eos_token_ids) | set(self.eos_ids))


def decoding_options(kwargs: dict) -> DecodingOptions:
    """Resolve generation arguments: prtcore's (max_tokens, temperature, top_p, top_k, min_p, repetition_penalty,
    seed, stop, images) and transformers' (max_new_tokens, max_length, do_sample, generation_config, eos_token_id,
    pad_token_id, streamer). Arguments given explicitly override `generation_config`'s fields, as in transformers;
    None is transformers' "not given"; prtcore's own settings refuse it, as before."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k in OWN}
    for name in ("max_tokens", "max_new_tokens"):
        if name in kwargs:
            kwargs[name] = _count(kwargs[name], name)
    if kwargs.get("max_tokens", kwargs.get("max_new_tokens")) != kwargs.get("max_new_tokens", kwargs.get("max_tokens")):
        raise ConfigError(f"max_tokens={kwargs['max_tokens']} and max_new_tokens={kwargs['max_new_tokens']}: give one "
                          "(they are the same setting)")
    if "max_tokens" in kwargs:
        kwargs["max_new_tokens"] = kwargs.pop("max_tokens")
    fields = {**config_fields(kwargs.pop("generation_config", None)), **kwargs}
    max_tokens = fields.pop("max_new_tokens", None)
    max_tokens = None if max_tokens is None else _count(max_tokens, "max_new_tokens")
    max_length = fields.pop("max_length", None)
    if max_length is not None:
        max_length = number(max_length, "max_length", int, positive=True)
    stop = generation_args(0, fields.pop("stop", ()))[1]
    streamer = fields.pop("streamer", None)
    if streamer is not None and not (callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))):
        raise ConfigError(f"streamer={shown(streamer)}: expected an object with put(ids) and end(), such as "
                          "transformers' TextStreamer")
    sampler = Sampler(**_sampling(fields))
    eos_ids, pad = tuple(_ids(fields.pop("eos_token_id", None), "eos_token_id")), _pad(fields.pop("pad_token_id", None))
    images = fields.pop("images", None)
    _refuse(fields)
    return DecodingOptions(sampler, max_tokens, max_length, stop, eos_ids, pad, streamer, images)


def _count(value, name: str) -> int:
    value = number(value, name, int)
    if value < 0:
        raise GenerationError(f"{name}={value} must be >= 0")
    return value


def config_fields(config) -> dict:
    """The fields a `generation_config` sets: a transformers GenerationConfig (its non-default fields) or a dict."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        fields = dict(config)
    elif callable(getattr(config, "to_diff_dict", None)):
        fields = config.to_diff_dict()
    else:
        raise ConfigError(f"generation_config={shown(config)}: expected a transformers GenerationConfig or a dict")
    return {k: v for k, v in fields.items() if v is not None}


def _sampling(fields: dict) -> dict:
    """Sampler's keyword arguments; do_sample as transformers reads it (False: greedy; True: sampling, with
    transformers' temperature 1 and top_k 50 where not given). Without do_sample, temperature 0 is greedy."""
    sampling = {k: fields.pop(k) for k in SAMPLING if k in fields}
    do_sample = fields.pop("do_sample", None)
    if do_sample is None:
        return sampling
    if not isinstance(do_sample, bool):
        raise ConfigError(f"do_sample={shown(do_sample)} must be True or False")
    if not do_sample:
        return {**sampling, "temperature": 0.0}
    sampling = {**SAMPLING_DEFAULTS, **sampling}
    if sampling["temperature"] == 0:
        raise ConfigError("do_sample=True with temperature=0: give a temperature > 0, or do_sample=False for greedy "
                          "decoding")
    return sampling


def _ids(value, name: str) -> list[int]:
    if value is None:
        return []
    values = list(value) if isinstance(value, (list, tuple, set)) else [value]
    out = [number(v, name, int) for v in values]
    if any(v < 0 for v in out):
        raise ConfigError(f"{name}={shown(value)}: token ids are >= 0")
    return out


def _pad(value) -> int | None:
    ids = _ids(value, "pad_token_id")
    if len(ids) > 1:
        raise ConfigError(f"pad_token_id={shown(value)}: expected one token id")
    return ids[0] if ids else None


def _refuse(fields: dict) -> None:
    """Refuse, in one line, every field left that does not ask for what prtcore does anyway."""
    for name, value in fields.items():
        if name in UNUSED or _neutral(value, NEUTRAL.get(name, ())):
            continue
        hint = HINTS.get(name, "prtcore's generate does not support it" if name in NEUTRAL else
                         "not an argument of generate (see PRTForCausalLM.stream)")
        raise ConfigError(f"generate: {name}={shown(value)} is not supported: {hint}")


def _neutral(value, neutral: tuple) -> bool:
    try:
        return any(bool(value == v) and isinstance(value, bool) == isinstance(v, bool) for v in neutral)
    except (TypeError, ValueError):  # an array compares elementwise: not a neutral value
        return False


# ---------------------------------------------------------------------------------------------- inputs
@attrs.frozen
class TokenInputs:
    """Token ids given as an array, transformers' way: `ids` (B, T) or (T,) and its `attention_mask` (or None)."""

    ids: object
    attention_mask: object = None


def split_inputs(prompt, kwargs: dict):
    """(prompt, TokenInputs or None) from `generate`'s arguments, taking `inputs=`, `input_ids=`, `attention_mask=`
    out of `kwargs`. A tokenizer's output (a mapping with input_ids) or an array of ids other than a NumPy vector
    gives TokenInputs; text, chat messages and lists of ids (or a NumPy vector) stay prtcore prompts."""
    given = {name: value for name, value in (("prompt", prompt), ("inputs", kwargs.pop("inputs", None)),
                                             ("input_ids", kwargs.pop("input_ids", None))) if value is not None}
    mask = kwargs.pop("attention_mask", None)
    _refuse_token_types(kwargs.pop("token_type_ids", None))
    if len(given) != 1:
        raise ConfigError("generate: give the prompt once (as prompt, inputs= or input_ids=)" if given else
                          "generate: no prompt given (text, chat messages, token ids or input_ids=)")
    value = next(iter(given.values()))
    if isinstance(value, Mapping):
        if "input_ids" not in value:
            raise ConfigError(f"generate: {shown(value)} has no 'input_ids'")
        for key in value:
            if key == "token_type_ids":
                _refuse_token_types(value[key])
            elif key not in ("input_ids", "attention_mask"):
                raise ConfigError(f"generate: the inputs' {key!r} is not supported (only input_ids and attention_mask)")
        if mask is not None and value.get("attention_mask") is not None:
            raise ConfigError("generate: attention_mask given twice (in the inputs and as attention_mask=)")
        mask = value.get("attention_mask") if mask is None else mask
        value = value["input_ids"]
    if _is_id_array(value):
        return None, TokenInputs(value, mask)
    if mask is not None:
        raise ConfigError("generate: attention_mask goes with an input_ids array, not with a text or list prompt")
    return value, None


def _refuse_token_types(value) -> None:
    if value is not None:
        raise ConfigError("generate: token_type_ids are not supported by causal LMs; encode with "
                          "return_token_type_ids=False")


def _is_id_array(value) -> bool:
    if isinstance(value, np.ndarray):
        return value.ndim == 2  # a NumPy vector is a prompt of ids, as before
    return not isinstance(value, (str, bytes, list, tuple, Mapping)) and hasattr(value, "shape")


def _host(array, name: str) -> np.ndarray:
    values = np.asarray(array if isinstance(array, np.ndarray) else to_numpy(array))
    if values.ndim not in (1, 2) or 0 in values.shape:
        raise ConfigError(f"{name}: expected a non-empty (batch, length) or (length,) array, got shape {values.shape}")
    if not (np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_):
        raise ConfigError(f"{name}: expected integers, got dtype {values.dtype}")
    return values.astype(np.int64)


def id_rows(inputs: TokenInputs, rows: int) -> tuple[np.ndarray, list[list[int]]]:
    """The ids as a (B, T) NumPy array, and each row's tokens (the positions its attention mask keeps; padding may
    be on either side), checked against the model's `rows` embedding rows."""
    ids = _host(inputs.ids, "input_ids")
    ids = ids[None] if ids.ndim == 1 else ids
    if inputs.attention_mask is None:
        mask = np.ones_like(ids)
    else:
        mask = _host(inputs.attention_mask, "attention_mask")
        mask = mask[None] if mask.ndim == 1 else mask
        if mask.shape != ids.shape or not np.isin(mask, (0, 1)).all():
            raise ConfigError(f"attention_mask: expected 0s and 1s of the input_ids' shape {ids.shape}, got shape "
                              f"{mask.shape}")
    out = []
    for i, (row, keep) in enumerate(zip(ids, mask.astype(bool))):
        if not keep.any():
            raise GenerationError(f"input_ids row {i} is empty: its attention_mask is all 0")
        check_token_ids(row[keep].tolist(), rows, f"input_ids row {i}")
        out.append(row[keep].tolist())
    return ids, out


# ---------------------------------------------------------------------------------------------- generation
def hf_generate(model, prompt, kwargs: dict):
    """`Generative.generate`: text for a prtcore prompt, or prompt + generated ids for TokenInputs."""
    kwargs = dict(kwargs)
    prompt, inputs = split_inputs(prompt, kwargs)
    options = decoding_options(kwargs)
    if inputs is None:
        return "".join(step.text for step in text_steps(model, prompt, options))
    return generate_ids(model, inputs, options)


def text_steps(model, prompt, options: DecodingOptions):
    """prtcore.sampling.GenerationStep per generated token of a prtcore prompt, fed to the streamer as transformers
    feeds it: the prompt's ids (1, T) first, then each new id (1,), the final eos included, then end()."""
    ids, images = model.prepare(prompt, options.images)
    streamer = options.streamer
    if streamer is not None:
        streamer.put(model.backend.asarray([ids]))
    steps = model.decode_ids(ids, images, max_tokens=options.budget(len(ids)), stop=options.stop,
                             eos_ids=options.eos(model), **attrs.asdict(options.sampler))
    for step in steps:
        if streamer is not None:
            streamer.put(model.backend.asarray([[step.token]])[:, 0])
        yield step
    if streamer is not None:
        streamer.end()


def generate_ids(model, inputs: TokenInputs, options: DecodingOptions):
    """transformers' result for token-id inputs: (B, T + new) ids, each row its input as given followed by its new
    ids (the eos that ended it included), rows that ended early padded with pad_token_id (default: the tokenizer's
    pad, else eos). A (T,) input gives a (T + new,) result; a NumPy input a NumPy result, any other the backend's
    array. Rows decode together where the backend has capability "batched" (greedy rows as each would alone)."""
    ids, rows = id_rows(inputs, model.rows)
    if options.images is not None:
        raise ConfigError("images: give them with a text or chat prompt (see prepare), not with an input_ids array")
    if options.streamer is not None and len(rows) > 1:
        raise ConfigError(f"streamer: streamers take one row, as transformers' do; input_ids has {len(rows)}")
    budget = options.budget(ids.shape[1])  # transformers' max_length counts the padded width
    window = model.context_window()
    budgets = []
    for i, row in enumerate(rows):
        if window is not None and len(row) >= window:
            raise GenerationError(f"input_ids row {i} has {len(row)} tokens, the context window "
                                  f"(max_position_embeddings) is {window}: shorten it")
        budgets.append(budget if window is None else min(budget, window - len(row)))
    generated = [[] for _ in rows]
    streamer, extra_eos = options.streamer, set(options.eos_ids) - set(model.target.eos_token_ids)
    if streamer is not None:
        streamer.put(model.backend.asarray(ids.tolist()))
    jobs = [_job(model, row, n, options, generated[i], extra_eos) for i, (row, n) in enumerate(zip(rows, budgets)) if n]
    lock = threading.Lock()
    for batch in ([jobs] if model.backend.supports("batched") else [[job] for job in jobs]):
        if batch:
            decode_jobs(batch, lock)
    if streamer is not None:
        streamer.end()
    return _result(model, inputs, ids, generated, options.pad_token_id)


def _job(model, row: list[int], max_tokens: int, options: DecodingOptions, out: list[int], extra_eos: set[int]) -> Job:
    """A decoding job whose tokens go to `out` (and the streamer); an id of `extra_eos` ends it like an eos."""
    job = Job(model=model, key=(), prompt=row, sampler=options.sampler, max_tokens=max_tokens, stop=options.stop)

    def emit(event):
        if not isinstance(event, Token):
            return
        out.append(event.token)
        if options.streamer is not None:
            options.streamer.put(model.backend.asarray([[event.token]])[:, 0])
        if event.token in extra_eos:
            job.cancelled.set()

    job.emit = emit
    return job


def _result(model, inputs: TokenInputs, ids: np.ndarray, generated: list[list[int]], pad: int | None):
    pad = pad_id_of(model.tokenizer, None) if pad is None else pad
    width = max(len(g) for g in generated)
    out = np.full((ids.shape[0], ids.shape[1] + width), pad, dtype=np.int64)
    out[:, :ids.shape[1]] = ids
    for i, tokens in enumerate(generated):
        out[i, ids.shape[1]:ids.shape[1] + len(tokens)] = tokens
    vector = np.ndim(inputs.ids) == 1
    if isinstance(inputs.ids, np.ndarray):
        out = out.astype(inputs.ids.dtype)
        return out[0] if vector else out
    out = model.backend.asarray(out.tolist())
    return out[0] if vector else out


def call_ids(ids, input_ids=None, attention_mask=None):
    """The token ids of `model(ids)`, also under transformers' names (`model(**tok(text, return_tensors="pt"))`).
    An attention mask must keep every position: padded rows have different lengths, so score them one by one."""
    if (ids is None) == (input_ids is None):
        raise ConfigError("model(ids): give the token ids once (as ids or input_ids=)")
    ids = input_ids if ids is None else ids
    if attention_mask is not None and not (_host(attention_mask, "attention_mask") == 1).all():
        raise ConfigError("attention_mask: model(ids) scores unpadded rows only; call it on each row without its "
                          "padding")
    return ids
