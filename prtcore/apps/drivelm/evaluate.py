"""`prt eval --task drivelm`: score predictions as the challenge's evaluation.py does, without the GPT judge.

Routing (evaluation.py): frame by frame, QAs in perception + prediction + planning + behavior order. The first QA
of a frame sets the frame's graph, the GT points its prediction matches; every later QA counts only if each (x, y)
in its *question* is in the graph (skipped otherwise, not scored 0). A counted QA goes to every bucket its tag
names: 0 accuracy, 1 GPT judge, 2 language (BLEU, ROUGE-L, CIDEr), 3 match (c-tag F1 and GPT judge).

Official final score: 0.4·GPT/100 + 0.2·language + 0.2·match/100 + 0.2·accuracy, with match = (mean F1·100 + GPT on
the tag-3 items)/2. The GPT judge needs an online LLM, so `chatgpt`, `match` and `final_score` are reported as
null and `final_score_without_gpt` = 0.2·language + 0.2·(mean F1·100/2)/100 + 0.2·accuracy: the official score
with both GPT terms at 0, so final_score = final_score_without_gpt + 0.004·GPT + 0.001·GPT_tag3.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...artifacts import write_json_atomic
from ...data import read_jsonl
from ...errors import ConfigError, DataError
from .metrics import OddCoordinates, accuracy, bleu, cider_d, language_score, match, points, rouge_l
from .schema import load_annotations, read_json
from .tokenize import ptb_tokenize

BUCKETS = {0: "accuracy", 1: "gpt", 2: "language", 3: "match"}
UNK = "_UNK"  # CocoEvaluator writes "_UNKNOWN" for it in the ground truths


@dataclass(frozen=True)
class Reference:
    id: str
    question: str
    answer: str
    tag: tuple[int, ...]


# ------------------------------------------------------------------------------------------------ inputs
def evaluate_files(predictions, references, output=None) -> dict:
    """Score the predictions file against the references file; write the report to `output` (JSON) if given."""
    for flag, value in (("--predictions", predictions), ("--references", references)):
        if not value or "\x00" in str(value):
            raise ConfigError(f"{flag} {str(value)!r}: expected a file path")
    report = evaluate(load_references(references), load_predictions(predictions), str(references), str(predictions))
    report.update(predictions=str(predictions), references=str(references))
    if output is not None:
        try:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(Path(output), report)
        except (OSError, ValueError) as e:
            reason = getattr(e, "strerror", None) or e
            raise ConfigError(f"--output {str(output)!r}: cannot write the report ({reason})") from None
    return report


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    try:
        return read_jsonl(path)
    except (OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None


def load_references(path) -> list[list[Reference]]:
    """The QAs of each frame, in official order: from a tagged annotation file (test_eval.json style) or from the
    jsonl `prt data drivelm` writes (rows grouped by scene and frame, ordered by index)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return _jsonl_references(path)
    frames = []
    for frame in load_annotations(path, images=False):
        for qa in frame.qas:
            if qa.tag is None:
                raise DataError(f"{path}: QA {qa.id}: field 'tag' is missing (the official evaluation routes every QA "
                                "by its tag: use a tagged file such as test_eval.json)")
        frames.append([Reference(q.id, q.question, q.answer, q.tag) for q in frame.qas])
    return frames


def _jsonl_references(path: Path) -> list[list[Reference]]:
    frames: dict[tuple, list] = {}
    for number, row in _read_jsonl(path):
        where = f"{path}:{number}"
        for key, kind in (("id", str), ("scene", str), ("frame", str), ("index", int), ("messages", list)):
            if not isinstance(row.get(key), kind) or isinstance(row.get(key), bool):
                raise DataError(f"{where}: field {key!r} must be a {kind.__name__}, found {row.get(key)!r}"[:300])
        tag = row.get("eval_tag")
        if not isinstance(tag, list) or not all(type(t) is int and 0 <= t <= 3 for t in tag):
            raise DataError(f"{where}: field 'eval_tag' must be a list of integers 0-3, found {tag!r} (the official "
                            "evaluation routes every QA by its tag: convert a tagged file such as test_eval.json)"[:400])
        messages = row["messages"]
        roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
        if roles != ["user", "assistant"] or not all(isinstance(m.get("content"), str) for m in messages):
            raise DataError(f"{where}: field 'messages' must be a user question and an assistant answer (strings)")
        reference = Reference(row["id"], messages[0]["content"], messages[1]["content"], tuple(tag))
        frames.setdefault((row["scene"], row["frame"]), []).append((row["index"], number, reference))
    out = []
    for qas in frames.values():
        qas.sort(key=lambda item: item[:2])
        out.append([reference for _, _, reference in qas])
    return out


def load_predictions(path) -> dict[str, str]:
    """id → answer from the official output.json ([{"id", "question", "answer"}, ...]), a submission file
    ({"results": [...]}) or a jsonl of such objects; a repeated id keeps its last answer, as evaluation.py does."""
    path = Path(path)
    if path.suffix == ".jsonl":
        items = [(f"{path}:{number}", row) for number, row in _read_jsonl(path)]
    else:
        data = read_json(path, "predictions file")
        if isinstance(data, dict) and isinstance(data.get("results"), list):
            data = data["results"]
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of {{\"id\", \"answer\"}} objects (or a submission with "
                            f"\"results\"), found {type(data).__name__}")
        items = [(f"{path}: item {i}", item) for i, item in enumerate(data)]
    answers = {}
    for where, item in items:
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected an object, found {type(item).__name__}")
        for key in ("id", "answer"):
            if not isinstance(item.get(key), str):
                raise DataError(f"{where}: field {key!r} must be a string, found {item.get(key)!r}"[:300])
        answers[item["id"]] = item["answer"]
    return answers


# ------------------------------------------------------------------------------------------------ scoring
def evaluate(frames: list[list[Reference]], predictions: dict[str, str], where: str = "references",
             predictions_file: str = "predictions") -> dict:
    """The report: bucket sizes, accuracy, language metrics, match F1, the GPT parts as null, the final scores."""
    missing = [q.id for frame in frames for q in frame if q.id not in predictions]
    if missing:
        raise DataError(f"{predictions_file}: no answer for id {missing[0]!r} ({len(missing)} of "
                        f"{sum(map(len, frames))} reference QAs have none)")
    buckets = {name: [] for name in BUCKETS.values()}
    skipped = []
    for frame in frames:
        graph = None
        for qa in frame:
            answer = predictions[qa.id]
            try:
                if graph is None:
                    graph = match(answer, qa.answer)[0]
                elif not all(p in graph for p in points(qa.question)):
                    skipped.append(qa.id)
                    continue
                if 3 in qa.tag:
                    points(qa.answer)
            except OddCoordinates as e:
                raise DataError(f"{where}: QA {qa.id}: the question or answer holds {e} "
                                "(evaluation.py fails on it)") from None
            for tag in sorted(set(qa.tag)):
                buckets[BUCKETS[tag]].append((answer, qa.answer))
    return _report(buckets, skipped, sum(map(len, frames)))


def _report(buckets: dict, skipped: list[str], total: int) -> dict:
    acc = accuracy(*zip(*buckets["accuracy"])) if buckets["accuracy"] else None
    language = coco_scores(*zip(*buckets["language"])) if buckets["language"] else None
    f1s = [match(a, g)[1] * 100 for a, g in buckets["match"]]
    f1 = sum(f1s) / len(f1s) if f1s else None
    lang = language_score(language) if language else None
    parts = (acc, lang, f1)
    return {
        "task": "drivelm",
        "counts": {"qa": total, "skipped_by_graph": len(skipped), **{k: len(v) for k, v in buckets.items()}},
        "accuracy": acc, "language": language, "language_score": lang, "match_f1": f1,
        "chatgpt": None, "match": None, "final_score": None,
        "final_score_without_gpt": None if None in parts else 0.2 * lang + 0.2 * (f1 / 2) / 100 + 0.2 * acc,
        "final_score_formula": "final_score = final_score_without_gpt + 0.004*chatgpt + 0.001*chatgpt_on_match_items; "
                               "final_score_without_gpt = 0.2*language_score + 0.2*(match_f1/2)/100 + 0.2*accuracy",
        "skipped_ids": skipped,
    }


def coco_scores(predictions, ground_truths) -> dict:
    """Bleu_1..4, ROUGE_L and CIDEr as CocoEvaluator.run_evaluation(predictions, ground_truths): one reference per
    item, tokenised, in that key order (the language score depends on it)."""
    hyps = [ptb_tokenize(p) for p in predictions]
    refs = [[ptb_tokenize(g.replace(UNK, "_UNKNOWN"))] for g in ground_truths]
    b = bleu(hyps, refs)
    return {"Bleu_1": b[0], "Bleu_2": b[1], "Bleu_3": b[2], "Bleu_4": b[3], "ROUGE_L": rouge_l(hyps, refs),
            "CIDEr": cider_d(hyps, refs)}


def format_report(report: dict) -> str:
    """The report as a table: metric, value, the number of QAs it is computed on."""
    counts, language = report["counts"], report["language"] or {}
    rows = [("accuracy", report["accuracy"], counts["accuracy"]),
            *((k, language.get(k), counts["language"]) for k in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L")),
            ("CIDEr", language.get("CIDEr"), counts["language"]),
            ("language score", report["language_score"], counts["language"]),
            ("match F1 x100", report["match_f1"], counts["match"]),
            ("GPT score", None, counts["gpt"]),
            ("match (F1+GPT)/2", None, counts["match"]),
            ("final score", None, ""),
            ("final without GPT", report["final_score_without_gpt"], "")]
    lines = [f"DriveLM: {counts['qa']} QAs, {counts['skipped_by_graph']} skipped by graph gating",
             f"{'metric':<20} {'value':>10}  {'items':>5}", "-" * 38]
    lines += [f"{name:<20} {'absent' if v is None else f'{v:.4f}':>10}  {n:>5}" for name, v, n in rows]
    lines.append("GPT score: needs the online LLM judge, not computed. final without GPT = 0.2*language score + "
                 "0.2*(match F1/2)/100 + 0.2*accuracy; official final = that + 0.004*GPT + 0.001*GPT on match items")
    return "\n".join(lines)
