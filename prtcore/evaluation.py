"""Backend-neutral evaluation of a composed model on tokenised examples: NLL, perplexity, exact match."""

from __future__ import annotations

import math
import threading
from typing import Sequence

import attrs
import numpy as np

from .data import Example
from .errors import BackendError, GenerationError
from .model import Generative, PRTOutput
from .sampling import Generation, Sampler
from .tokens import check_token_ids

DEFAULT_BATCH_SIZE = 8


def token_nll(model: Generative, examples: Sequence[Example]) -> dict:
    """Mean negative log-likelihood per target token (mask == 1) and perplexity, one example at a time."""
    total, count, hits = 0.0, 0, 0
    for ex in examples:
        out = model([ex.ids], **({} if ex.images is None else {"images": [ex.images]}))
        logprobs = out.logprobs if isinstance(out, PRTOutput) else out
        lp = np.asarray(model.backend.to_numpy(logprobs), dtype=np.float64)[0, :-1]
        targets = np.asarray(ex.ids[1:])
        mask = np.asarray(ex.mask[1:], dtype=bool)
        chosen = lp[np.arange(len(targets)), targets]
        total -= float(chosen[mask].sum())
        count += int(mask.sum())
        hits += int((lp.argmax(-1) == targets)[mask].sum())
    nll = total / max(count, 1)
    return {"nll": nll, "perplexity": math.exp(min(nll, 700.0)), "token_accuracy": hits / max(count, 1), "tokens": count}


def exact_match(model: Generative, prompts: Sequence[list[int]], answers: Sequence[str], *, max_tokens: int = 32,
                stop: Sequence[str] = ("\n",), batch_size: int = DEFAULT_BATCH_SIZE) -> dict:
    """Greedy generation for each prompt (in batches, see `greedy_answers`); an answer counts when the stripped
    output equals it."""
    requests = [Request(list(p), max_tokens, tuple(stop)) for p in prompts]
    outputs = [g.text.strip() for g in greedy_answers(model, requests, batch_size=batch_size).generations]
    correct = [o == a.strip() for o, a in zip(outputs, answers)]
    return {"exact_match": sum(correct) / max(len(correct), 1), "outputs": outputs}


# ------------------------------------------------------------------------------------------------ greedy answers
@attrs.frozen
class Request:
    """One prompt to answer greedily: its token ids, token budget, stop strings and images (None: text only)."""

    ids: list[int]
    max_tokens: int
    stop: tuple[str, ...] = ()
    images: object = None


@attrs.frozen
class Answers:
    """The generations of `greedy_answers`, in request order, the batch size they ran at, and why batching was given
    up (None when it was not)."""

    generations: list[Generation]
    batch_size: int
    fallback: str | None = None


def greedy_answers(model: Generative, requests: Sequence[Request], *, batch_size: int = DEFAULT_BATCH_SIZE) -> Answers:
    """Greedy generations for `requests`, each as `model.generate` gives it alone.

    Text-only requests are decoded `batch_size` at a time, left-padded (backend capability "batched"; the rows of a
    batch are of similar lengths); a batched row's greedy tokens equal its tokens alone. Requests with images, models
    with a vision encoder, backends without "batched" and `batch_size` 1 decode one at a time. A model that refuses
    left-padded batches (a BackendError) is decoded one at a time, the reason given as `fallback`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GenerationError(f"batch_size={batch_size!r} must be an integer >= 1")
    out: list[Generation | None] = [None] * len(requests)
    batchable = batch_size > 1 and model.backend.supports("batched") and not model.vision_encoders()
    text = [i for i, r in enumerate(requests) if batchable and r.images is None]
    for i, r in enumerate(requests):
        if not (batchable and r.images is None):
            out[i] = _alone(model, r)
    fallback = None
    text.sort(key=lambda i: len(requests[i].ids))  # similar lengths: little padding
    for start in range(0, len(text), batch_size):
        chunk = text[start:start + batch_size]
        if fallback is None:
            try:
                for i, g in zip(chunk, _batched(model, [requests[i] for i in chunk])):
                    out[i] = g
                continue
            except BackendError as e:
                fallback = str(e)
        for i in chunk:
            out[i] = _alone(model, requests[i])
    used = batch_size if batchable and fallback is None and text else 1
    return Answers(out, used, fallback)


def _alone(model: Generative, request: Request) -> Generation:
    """One request through `model.stream_steps`, as `generate` decodes it."""
    eos = set(model.target.eos_token_ids)
    tokens, pieces, reason = [], [], "length"
    for step in model.stream_steps(request.ids, max_tokens=request.max_tokens, stop=request.stop,
                                   images=request.images):
        if step.token not in eos:
            tokens.append(step.token)
        pieces.append(step.text)
        reason = step.finish_reason or reason
    return Generation(tokens, "".join(pieces), reason)


def _batched(model: Generative, requests: Sequence[Request]) -> list[Generation]:
    """Requests decoded together by the server's batched loop (prtcore.serve.decoding), each with the budget
    `stream_steps` would give it (the context window's end included)."""
    from .serve.decoding import Job, decode_jobs

    window = model.context_window()
    eos = set(model.target.eos_token_ids)
    events: list[list] = [[] for _ in requests]
    jobs = []
    for row, request in enumerate(requests):
        if not request.ids:
            raise GenerationError("the prompt is empty: it encodes to no token ids")
        check_token_ids(request.ids, model.rows, "prompt")
        budget = request.max_tokens
        if window is not None:
            if len(request.ids) >= window:
                raise GenerationError(f"the prompt has {len(request.ids)} tokens, the context window "
                                      f"(max_position_embeddings) is {window}: shorten the prompt")
            budget = min(budget, window - len(request.ids))
        jobs.append(Job(model, ("eval",), list(request.ids), Sampler(), budget, tuple(request.stop),
                        emit=events[row].append))
    if any(job.max_tokens == 0 for job in jobs):
        return [_alone(model, r) for r in requests]
    decode_jobs(jobs, threading.Lock())
    results = []
    for emitted in events:
        tokens = [e.token for e in emitted if e.token not in eos]
        reason = emitted[-1].finish_reason if emitted else "length"
        results.append(Generation(tokens, "".join(e.text for e in emitted), reason or "length"))
    return results


# ------------------------------------------------------------------------------------------------ a data split
def evaluate_split(models: dict, path, *, mask_prompt: bool | None = None, max_seq_length: int = 2048,
                   max_tokens: int | None = None, max_examples: int | None = None, stop: Sequence[str] | None = None,
                   generate: bool = True, batch_size: int = DEFAULT_BATCH_SIZE) -> dict:
    """NLL, perplexity and token accuracy of every model in `models` (name → Generative, all sharing one
    tokenizer) on the jsonl file `path`, plus exact match of greedily generated answers when the rows have
    answers (prompt/completion, or chats ending with an assistant message).

    `mask_prompt` None: score the answers only whenever the format has them (prompt/completion, chat), every
    token of plain text. Answers are generated with the prompt rendered as in training (the chat template with a
    generation prompt), up to `max_tokens` (default: the answer's length + 8) and cut at `stop` (default: the
    template's end-of-turn marker, or a newline without a template when the answer has none). Answers are decoded
    `batch_size` at a time (`greedy_answers`: the same answers as one at a time).
    """
    from pathlib import Path

    from .data import parse_split, prompt_and_answer, render_prompt, tokenise_rows, turn_end_marker
    from .vision import Images, messages_with_placeholders

    path = Path(path)
    fmt, rows = parse_split(path)
    if max_examples is not None:
        rows = rows[:max_examples]
    mask = (fmt != "text") if mask_prompt is None else mask_prompt
    if mask and fmt == "text":
        from .errors import DataError

        raise DataError(f"{path}: scoring answers only needs prompt/completion or chat data, this file holds plain text")
    first = next(iter(models.values()))
    tokenizer = first.tokenizer
    encoders = first.vision_encoders()
    examples = tokenise_rows(path, fmt, rows, tokenizer, max_seq_length=max_seq_length, mask_prompt=mask,
                             vision=encoders[0] if encoders else None)
    images = {ex.line: ex.images for ex in examples}
    pairs = [(number, prompt_and_answer(fmt, obj), obj.get("tools")) for number, obj in rows]
    pairs = [(n, qa, tools) for n, qa, tools in pairs if qa is not None]
    marker = turn_end_marker(tokenizer)
    results, records = {}, [{"line": n, "answer": qa[1], "outputs": {}} for n, qa, _ in pairs]
    requests = []
    for n, (prompt, answer), tools in pairs if generate else ():
        row_images: Images | None = images[n]
        if row_images is not None:  # the prompt's images as placeholders, expanded by `generate`
            prompt = messages_with_placeholders(prompt, len(row_images), encoders[0].placeholder)
        limit = max_tokens if max_tokens is not None else len(list(tokenizer.encode(answer))) + 8
        stops = list(stop) if stop is not None else ([marker] if marker else ([] if "\n" in answer.strip() else ["\n"]))
        requests.append(Request(render_prompt(tokenizer, prompt, tools=tools), limit, tuple(stops), row_images))
    for name, model in models.items():
        scores = token_nll(model, examples)
        scores["examples"] = len(examples)
        if generate and pairs:
            answers = greedy_answers(model, requests, batch_size=batch_size)
            correct = 0
            for record, (n, (prompt, answer), tools), generation in zip(records, pairs, answers.generations):
                record["outputs"][name] = generation.text
                correct += generation.text.strip() == answer.strip()
            scores["exact_match"] = correct / len(pairs)
            scores["answered"] = len(pairs)
            scores["batch_size"] = answers.batch_size
            if answers.fallback:
                scores["batch_fallback"] = answers.fallback
        results[name] = scores
    return {"data": str(path), "format": fmt, "mask_prompt": mask, "results": results,
            "generations": records if generate and pairs else []}


def format_results(report: dict) -> str:
    """The results of `evaluate_split` as a table."""
    header = f"{'model':<8} {'NLL':>8} {'PPL':>10} {'tok acc':>8} {'exact':>8} {'tokens':>7} {'examples':>8}"
    lines = [f"{report['data']} ({report['format']}, {'answers only' if report['mask_prompt'] else 'all tokens'})",
             header, "-" * len(header)]
    for name, r in report["results"].items():
        exact = f"{r['exact_match']:.1%}" if "exact_match" in r else "-"
        lines.append(f"{name:<8} {r['nll']:>8.4f} {r['perplexity']:>10.2f} {r['token_accuracy']:>8.1%} {exact:>8} "
                     f"{r['tokens']:>7} {r['examples']:>8}")
    return "\n".join(lines)
