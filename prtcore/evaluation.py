"""Backend-neutral evaluation of a composed model on tokenised examples: NLL, perplexity, exact match."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .data import Example
from .model import Generative, PRTOutput


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
                stop: Sequence[str] = ("\n",)) -> dict:
    """Greedy generation for each prompt; an answer counts when the stripped output equals it."""
    outputs = [model.generate(p, max_tokens=max_tokens, stop=stop).strip() for p in prompts]
    correct = [o == a.strip() for o, a in zip(outputs, answers)]
    return {"exact_match": sum(correct) / max(len(correct), 1), "outputs": outputs}


# ------------------------------------------------------------------------------------------------ a data split
def evaluate_split(models: dict, path, *, mask_prompt: bool | None = None, max_seq_length: int = 2048,
                   max_tokens: int | None = None, max_examples: int | None = None, stop: Sequence[str] | None = None,
                   generate: bool = True) -> dict:
    """NLL, perplexity and token accuracy of every model in `models` (name → Generative, all sharing one
    tokenizer) on the jsonl file `path`, plus exact match of greedily generated answers when the rows have
    answers (prompt/completion, or chats ending with an assistant message).

    `mask_prompt` None: score the answers only whenever the format has them (prompt/completion, chat), every
    token of plain text. Answers are generated with the prompt rendered as in training (the chat template with a
    generation prompt), up to `max_tokens` (default: the answer's length + 8) and cut at `stop` (default: the
    template's end-of-turn marker, or a newline without a template when the answer has none).
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
    for name, model in models.items():
        scores = token_nll(model, examples)
        scores["examples"] = len(examples)
        if generate and pairs:
            correct = 0
            for record, (n, (prompt, answer), tools) in zip(records, pairs):
                row_images: Images | None = images[n]
                if row_images is not None:  # the prompt's images as placeholders, expanded by `generate`
                    prompt = messages_with_placeholders(prompt, len(row_images), encoders[0].placeholder)
                ids = render_prompt(tokenizer, prompt, tools=tools)
                limit = max_tokens if max_tokens is not None else len(list(tokenizer.encode(answer))) + 8
                stops = list(stop) if stop is not None else ([marker] if marker else ([] if "\n" in answer.strip() else ["\n"]))
                output = model.generate(ids, max_tokens=limit, stop=stops, images=row_images)
                record["outputs"][name] = output
                correct += output.strip() == answer.strip()
            scores["exact_match"] = correct / len(pairs)
            scores["answered"] = len(pairs)
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
