"""OpenAI's response objects: a whole completion or chat completion, or its server-sent chunks, built token by
token from the engine's `Token`s."""

from __future__ import annotations

import time
import uuid

from .decoding import Token


class Reply:
    """One request's answer as it grows. `kind`: "completion" or "chat"; `token_text(id)`: a token's text (for
    log-probs); `logprobs`: whether they were asked for."""

    def __init__(self, kind: str, model: str, prompt_tokens: int, token_text, logprobs: bool):
        self.kind, self.model, self.prompt_tokens = kind, model, prompt_tokens
        self.token_text, self.with_logprobs = token_text, logprobs
        self.id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.texts: list[str] = []
        self.tokens: list[Token] = []
        self.finish_reason: str | None = None

    def add(self, token: Token) -> None:
        self.tokens.append(token)
        self.texts.append(token.text)
        self.finish_reason = token.finish_reason or self.finish_reason

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def usage(self) -> dict:
        n = len(self.tokens)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": n, "total_tokens": self.prompt_tokens + n}

    # ---------------------------------------------------------------------------------------------- whole
    def response(self) -> dict:
        if self.kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": self.text},
                      "logprobs": self._logprobs(self.tokens), "finish_reason": self.finish_reason or "length"}
        else:
            choice = {"index": 0, "text": self.text, "logprobs": self._logprobs(self.tokens),
                      "finish_reason": self.finish_reason or "length"}
        return {**self._head(), "choices": [choice], "usage": self.usage()}

    # ---------------------------------------------------------------------------------------------- streamed
    def opening(self) -> list[dict]:
        """The chunks before any token: a chat names the assistant's role."""
        if self.kind != "chat":
            return []
        return [self._chunk({"role": "assistant", "content": ""}, None, None)]

    def chunks(self, token: Token) -> list[dict]:
        """The chunks of one new token (after `add`): its text and log-prob, then the finish reason."""
        out = []
        logprobs = self._logprobs([token], len(self.text) - len(token.text))
        if token.text or logprobs is not None:
            content = {"content": token.text} if self.kind == "chat" else token.text
            out.append(self._chunk(content, logprobs, None))
        if token.finish_reason:
            out.append(self._chunk({} if self.kind == "chat" else "", None, token.finish_reason))
        return out

    def usage_chunk(self) -> dict:
        return {**self._head(chunk=True), "choices": [], "usage": self.usage()}

    # ---------------------------------------------------------------------------------------------- parts
    def _head(self, chunk: bool = False) -> dict:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.kind == "chat" else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _chunk(self, content, logprobs, finish_reason) -> dict:
        key = "delta" if self.kind == "chat" else "text"
        choice = {"index": 0, key: content, "logprobs": logprobs, "finish_reason": finish_reason}
        return {**self._head(chunk=True), "choices": [choice]}

    def _logprobs(self, tokens: list[Token], offset: int = 0) -> dict | None:
        """OpenAI's log-probs of `tokens` (the completions API's text offsets start at `offset`)."""
        if not self.with_logprobs:
            return None
        if self.kind == "chat":
            return {"content": [{**self._entry(t.token, t.logprob),
                                 "top_logprobs": [self._entry(i, lp) for i, lp in t.top]} for t in tokens]}
        out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for t in tokens:
            out["tokens"].append(self.token_text(t.token))
            out["token_logprobs"].append(t.logprob)
            out["top_logprobs"].append({self.token_text(i): lp for i, lp in t.top} or None)
            out["text_offset"].append(offset)
            offset += len(t.text)
        return out

    def _entry(self, token: int, logprob: float) -> dict:
        text = self.token_text(token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}
