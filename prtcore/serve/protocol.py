"""The OpenAI API's request fields, validated, and its error shape.

A request body becomes a `Request` or an `APIError` (status, message, param) that the server returns as
{"error": {"message", "type", "param", "code"}}. Fields prtcore cannot honour are accepted only at their neutral
value (`n: 1`, `presence_penalty: 0`, ...); unknown fields are refused, so that a misspelt one is not ignored.
PRT's own fields: `compose` (prt, eft, proxy, base) and `rewards` (["NAME" or "NAME:λ", ...]); mlx-lm's sampling
extras `top_k`, `min_p` and `repetition_penalty` are accepted too.
"""

from __future__ import annotations

import json

import attrs

from ..config import SEED_RULE, is_seed
from ..errors import ConfigError
from ..sampling import Sampler, number

MAX_STOPS = 16
MAX_TOP_LOGPROBS = {"chat": 20, "completion": 5}
ROLES = ("system", "developer", "user", "assistant", "tool")
SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
COMMON = {"model", "max_tokens", "stop", "stream", "stream_options", "logprobs", "seed", "compose", "rewards", "user",
          "n", "presence_penalty", "frequency_penalty", "logit_bias", *SAMPLING}
FIELDS = {"completion": COMMON | {"prompt", "echo", "best_of", "suffix"},
          "chat": COMMON | {"messages", "tools", "tool_choice", "top_logprobs", "max_completion_tokens",
                            "parallel_tool_calls", "response_format"}}
NEUTRAL = {"n": 1, "best_of": 1, "presence_penalty": 0, "frequency_penalty": 0, "echo": False}


class APIError(Exception):
    """An error response: HTTP `status` and OpenAI's error object."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(param: str | None, message: str, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


@attrs.frozen
class Request:
    """A validated completion (`kind` "completion": `prompt` is text or token ids) or chat (`messages`) request."""

    kind: str
    model: str
    prompt: object
    tools: list | None
    max_tokens: int | None
    sampler: Sampler
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    logprobs: int | None
    compose: str | None
    rewards: tuple[str, ...] | None


def parse(raw: bytes, kind: str) -> Request:
    """The Request of a JSON body, or an APIError naming the field at fault."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise invalid(None, f"the body is not valid JSON: {e}") from None
    except RecursionError:
        raise invalid(None, "the body is not valid JSON here: its arrays or objects are nested too deeply") from None
    if not isinstance(body, dict):
        raise invalid(None, f"the body must be a JSON object, not {type(body).__name__}")
    unknown = sorted(set(body) - FIELDS[kind])
    if unknown:
        raise invalid(unknown[0], f"unknown field {unknown[0]!r} (this server accepts: {', '.join(sorted(FIELDS[kind]))})")
    for name, neutral in NEUTRAL.items():
        if name in body and body[name] is not None and body[name] != neutral:
            raise invalid(name, f"{name}={body[name]!r} is not supported (only {neutral!r})")
    if body.get("logit_bias"):
        raise invalid("logit_bias", "logit_bias is not supported")
    _string(body, "user", optional=True)
    model = _string(body, "model")
    if kind == "chat":
        prompt, tools = _messages(body.get("messages")), _tools(body)
        max_tokens = _integer(body, "max_completion_tokens", 1) if body.get("max_completion_tokens") is not None \
            else _integer(body, "max_tokens", 1)
    else:
        prompt, tools, max_tokens = _prompt(body.get("prompt")), None, _integer(body, "max_tokens", 1)
    stream = _boolean(body, "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise invalid("stream_options", "stream_options must be an object with 'include_usage'")
    if options is not None and not stream:
        raise invalid("stream_options", "stream_options is only allowed with stream: true")
    include_usage = _boolean(options or {}, "include_usage", "stream_options.include_usage")
    compose = _string(body, "compose", optional=True)
    rewards = body.get("rewards")
    if rewards is not None and (not isinstance(rewards, list) or not all(isinstance(r, str) for r in rewards)):
        raise invalid("rewards", 'rewards must be a list of reward names, each "NAME" or "NAME:λ"')
    return Request(kind, model, prompt, tools, max_tokens, _sampler(body), _stop(body.get("stop")), stream,
                   include_usage, _logprobs(body, kind), compose, None if rewards is None else tuple(rewards))


def _string(body: dict, name: str, *, optional: bool = False) -> str | None:
    value = body.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise invalid(name, f"{name} must be a non-empty string" + ("" if optional or name in body else " (missing)"))
    return value


def _boolean(body: dict, name: str, param: str | None = None) -> bool:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise invalid(param or name, f"{param or name} must be true or false, not {value!r}")
    return bool(value)


def _integer(body: dict, name: str, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    try:
        value = number(value, name, int)
    except ConfigError as e:
        raise invalid(name, str(e)) from None
    if value < low or (high is not None and value > high):
        raise invalid(name, f"{name}={value} must be >= {low}" + ("" if high is None else f" and <= {high}"))
    return value


def _sampler(body: dict) -> Sampler:
    fields = {name: body[name] for name in SAMPLING if body.get(name) is not None}
    seed = body.get("seed")
    if seed is not None and not is_seed(seed):
        raise invalid("seed", f"seed={seed!r} must be {SEED_RULE}")
    try:
        return Sampler(**fields, seed=seed)
    except ConfigError as e:
        text = str(e)
        param = next((name for name in SAMPLING if f" {name}=" in text), None)
        raise invalid(param, text) from None


def _stop(stop) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise invalid("stop", "stop must be a string or a list of strings")
    if len(stops) > MAX_STOPS:
        raise invalid("stop", f"stop: at most {MAX_STOPS} stop strings")
    return tuple(s for s in stops if s)


def _logprobs(body: dict, kind: str) -> int | None:
    most = MAX_TOP_LOGPROBS[kind]
    if kind == "completion":
        return _integer(body, "logprobs", 0, most)
    top = _integer(body, "top_logprobs", 0, most)
    if not _boolean(body, "logprobs"):
        if top:
            raise invalid("top_logprobs", "top_logprobs needs logprobs: true")
        return None
    return top or 0


def _prompt(prompt):
    """Text or token ids; a list holding one of them is taken as that one (one prompt per request)."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise invalid("prompt", "prompt is empty")
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
        return prompt
    if isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, (str, list)) for p in prompt):
        raise invalid("prompt", f"one prompt per request ({len(prompt)} given); send them as separate requests")
    raise invalid("prompt", "prompt must be a non-empty string or a non-empty list of token ids")


def _content(value, where: str):
    """A message's content: text, or text parts joined (images are not served)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise invalid(where, f"{where}: only text content parts ({{'type': 'text', 'text': ...}}) are served")
            texts.append(part["text"])
        return "".join(texts)
    raise invalid(where, f"{where} must be a string or a list of text parts")


def _messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "messages must be a non-empty list of {'role', 'content'} objects")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(where, f"{where} must be an object with 'role' and 'content'")
        if message.get("role") not in ROLES:
            raise invalid(f"{where}.role", f"{where}.role must be one of {', '.join(ROLES)}")
        content = _content(message.get("content"), f"{where}.content")
        if content is None and not message.get("tool_calls"):
            raise invalid(f"{where}.content", f"{where}.content is missing")
        out.append({**message, "content": content or ""})
    return out


def _tools(body: dict) -> list | None:
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise invalid("tools", "tools must be a list of objects")
    choice = body.get("tool_choice")
    if choice is not None and choice not in ("auto", "none"):
        raise invalid("tool_choice", "tool_choice: only 'auto' and 'none' are supported")
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise invalid("response_format", "response_format: only {'type': 'text'} is supported")
    _boolean(body, "parallel_tool_calls")
    return None if choice == "none" else tools or None
