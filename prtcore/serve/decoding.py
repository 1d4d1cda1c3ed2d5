"""Decoding for the server: the rows of several requests stepped together, each with its own sampler, stop
strings, token budget and log-probs.

Every row goes through the model's own scorers, as `PRTForCausalLM.stream_steps` decodes it; several rows are
left-padded into one batch, the scorers' forwards taking `attention_mask` and `position_ids` (backend capability
"batched"), and greedy rows then decode as each would alone. Text is released by prtcore.sampling.TextStream, as
prtcore.sampling.decode releases it: held back while it could still become a stop string, cut before one.
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

import attrs
import numpy as np

from ..sampling import Sampler, TextStream
from ..tokens import pad_id_of


@attrs.frozen
class Token:
    """One generated token as the server reports it: the text it makes visible, why decoding stopped (None while
    it goes on), and on request its log-prob under the composed distribution with the `top` alternatives."""

    token: int
    text: str
    finish_reason: str | None = None
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()


@attrs.frozen
class Failure:
    """The engine could not decode a job: `error` says why."""

    error: BaseException


@attrs.define(eq=False)
class Job:
    """One request for the engine. `key` names the composition: only jobs with the same key share a batch.
    `emit(event)` is called from the engine's thread with each Token, or one Failure."""

    model: object
    key: tuple
    prompt: list[int]
    sampler: Sampler
    max_tokens: int
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # alternatives to report per token (0: the chosen one only); None: no log-probs
    emit: Callable = print
    cancelled: threading.Event = attrs.Factory(threading.Event)


class _Row:
    """A job's decoding state: its ids so far, its text (prtcore.sampling.TextStream), its random generator."""

    def __init__(self, job: Job, ops, eos: set[int], tokenizer, lock):
        self.job, self.lock = job, lock
        self.history = list(job.prompt)
        self.stream = TextStream(tokenizer, eos, job.stop, job.max_tokens)
        self.rng = ops.make_rng(job.sampler.seed)
        self.plain = job.sampler.greedy and job.sampler.repetition_penalty == 1.0
        self.finished = False

    @property
    def done(self) -> bool:
        return self.finished or self.job.cancelled.is_set()

    def add(self, token: int) -> tuple[str, str | None]:
        """The text `token` makes visible and the finish reason (None while going on)."""
        self.history.append(token)
        with self.lock:  # the tokenizer is shared with the request handlers
            piece, reason = self.stream.add(token)
        self.finished = reason is not None
        return piece, reason


class _Steps:
    """The model's own scorers (PRTForCausalLM / ComposedLM `scorers()`: each model once per step, each with its
    cache, as `stream_steps` runs them) over the rows of a batch. Several rows are left-padded, and every forward
    also gets the batch's attention mask (B, past + new) and the new tokens' positions (B, new)."""

    def __init__(self, model, rows: int):
        self.backend, self.scorers = model.backend, model.scorers()
        self.pad = pad_id_of(model.tokenizer, model.rows) if rows > 1 else None
        self.mask = self.seen = None

    def __call__(self, rows: Sequence[Sequence[int]]) -> list:
        as_array = self.backend.asarray
        if self.pad is None:
            ids = as_array([list(r) for r in rows])
            return [scorer(ids) for scorer in self.scorers]
        width = max(len(r) for r in rows)
        new = np.array([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=np.int64)
        ids = as_array([[self.pad] * (width - len(r)) + list(r) for r in rows])
        seen = np.zeros((len(rows), 1), dtype=np.int64) if self.seen is None else self.seen
        positions = np.maximum(seen + np.cumsum(new, axis=1) - 1, 0)
        self.mask = new if self.mask is None else np.concatenate([self.mask, new], axis=1)
        self.seen = seen + new.sum(axis=1, keepdims=True)
        batch = {"attention_mask": as_array(self.mask), "position_ids": as_array(positions)}
        return [scorer(ids, **batch) for scorer in self.scorers]


def decode_jobs(jobs: Sequence[Job], lock) -> None:
    """Decode `jobs` (one composition) together until each has finished or been cancelled, emitting a Token per
    row and step. `lock` guards the tokenizer, which the request handlers share."""
    model = jobs[0].model
    ops = model.backend.xp
    rows = [_Row(job, ops, set(model.target.eos_token_ids), model.tokenizer, lock) for job in jobs]
    step = _Steps(model, len(jobs))
    composer = model.active_composer()
    logits = step([job.prompt for job in jobs])
    while True:
        logprobs = composer(*logits, xp=ops)
        tokens = _sample(rows, logprobs, ops)
        for i, (row, token) in enumerate(zip(rows, tokens)):
            if not row.done:
                text, reason = row.add(token)
                row.job.emit(Token(token, text, reason, *_logprobs(row.job.logprobs, logprobs[i], token, ops)))
        if all(row.done for row in rows):
            return
        logits = step([[t] for t in tokens])


def _sample(rows: list[_Row], logprobs, ops) -> list[int]:
    """One id per row: greedy rows from one argmax of the batch, the others through their own sampler and
    generator (so a seeded row draws as it would alone). A finished row repeats its last id (ignored)."""
    out = [row.history[-1] for row in rows]
    if any(row.plain and not row.done for row in rows):
        best = ops.to_numpy(ops.argmax(logprobs, axis=-1)).reshape(-1)
        out = [int(b) if row.plain else o for b, row, o in zip(best, rows, out)]
    for i, row in enumerate(rows):
        if not row.plain and not row.done:
            sampler = row.job.sampler
            filtered = sampler.filtered(logprobs[i:i + 1], row.history, xp=ops)
            out[i] = int(ops.to_numpy(sampler.sample(filtered, row.rng, xp=ops)).reshape(-1)[0])
    return out


def _logprobs(wanted: int | None, logprobs, token: int, ops) -> tuple:
    """(log-prob of `token`, its `wanted` best alternatives) from one row's composed log-probs, or ()."""
    if wanted is None:
        return ()
    values = ops.to_numpy(logprobs).astype(np.float64).reshape(-1)
    top = np.argsort(-values, kind="stable")[:wanted] if wanted else []
    return float(values[token]), tuple((int(i), float(values[i])) for i in top)
