"""Routing, graph gating and the final score on the invented fixture (test_eval.json style), against hand-worked
values and the official script's behaviour recorded in docs/drivelm.md §7."""

from __future__ import annotations

import json

import pytest

from prtcore.apps.drivelm.convert import convert
from prtcore.apps.drivelm.evaluate import evaluate, evaluate_files, load_predictions, load_references
from prtcore.errors import DataError

from .conftest import C1, C2, FRAME, SCENE, annotation, tagged_qas, write_dataset

ID = f"{SCENE}_{FRAME}"


def perfect(references) -> dict:
    return {qa.id: qa.answer for frame in references for qa in frame}


def f1_x100(n: int) -> float:
    """100 · F1 of n exact matches with evaluation.py's 1e-8 terms: P = R = n/(n + 1e-8), F1 = 2PR/(P + R + 1e-8)."""
    p = n / (n + 1e-8)
    return 100 * 2 * p * p / (2 * p + 1e-8)


def test_perfect_predictions(tagged_file):
    refs = load_references(tagged_file)
    report = evaluate(refs, perfect(refs))
    # tags: [2] importance, [0] moving MCQ, [3] graph, [0] yes/no, [1] ×3 planning, [0] behavior MCQ
    assert report["counts"] == {"qa": 8, "skipped_by_graph": 0, "accuracy": 3, "gpt": 3, "language": 1, "match": 1}
    assert report["accuracy"] == 1.0
    # one language item equal to its GT: BLEU-k = Π (g_i + 1e-15)/(g_i + 1e-9) ≈ 1, ROUGE-L 1, CIDEr 0 (one item:
    # idf = log 1 - log 1 = 0); language score = 4·1/4/3 + 1/3 + 0/10/3 = 2/3
    for k in range(1, 5):
        assert report["language"][f"Bleu_{k}"] == pytest.approx(1.0, abs=1e-9)
    assert report["language"]["ROUGE_L"] == pytest.approx(1.0, rel=1e-12)
    assert report["language"]["CIDEr"] == 0.0
    assert report["language_score"] == pytest.approx(2 / 3, abs=1e-9)
    # the graph answer's 3 c-tags all matched: 100·F1 = 99.99999917 (the 1e-8 terms)
    assert report["match_f1"] == pytest.approx(f1_x100(3), rel=1e-12)
    assert report["match_f1"] == pytest.approx(99.99999917, abs=1e-8)
    # without GPT: 0.2·(2/3) + 0.2·(99.99999917/2)/100 + 0.2·1 = 0.1333333 + 0.1 + 0.2 = 0.4333333
    expected = 0.2 * (2 / 3) + 0.2 * (f1_x100(3) / 2) / 100 + 0.2 * 1.0
    assert report["final_score_without_gpt"] == pytest.approx(expected, abs=1e-9)
    assert report["final_score_without_gpt"] == pytest.approx(0.4333333, abs=1e-7)
    assert report["chatgpt"] is None and report["match"] is None and report["final_score"] is None


def test_gating_an_object_missing_from_the_first_answer(tagged_file):
    # c2 left out of the importance answer: only QA 4 (its question names c2) is skipped; the graph QA 2 still
    # counts (its c-tags are in the answer, not the question)
    refs = load_references(tagged_file)
    predictions = perfect(refs)
    predictions[f"{ID}_0"] = predictions[f"{ID}_0"].replace(f"{C2}, ", "")
    report = evaluate(refs, predictions)
    assert report["skipped_ids"] == [f"{ID}_4"]
    assert report["counts"]["gpt"] == 2 and report["counts"]["match"] == 1


@pytest.mark.parametrize("predicted,skipped", [
    ("<c1,CAM_FRONT,810.0,455.0>", []),                        # L1 = 10 + 5 = 15 < 16: matched
    ("<c1,CAM_FRONT,810.0,456.0>", [f"{ID}_1", f"{ID}_5"]),     # L1 = 16: not matched; QAs 1 and 5 name c1
])
def test_gating_on_the_match_distance(tagged_file, predicted, skipped):
    refs = load_references(tagged_file)
    predictions = perfect(refs)
    predictions[f"{ID}_0"] = predictions[f"{ID}_0"].replace(C1, predicted)
    report = evaluate(refs, predictions)
    assert report["skipped_ids"] == skipped
    assert report["counts"]["accuracy"] == 3 - len([s for s in skipped if s.endswith("_1")])


def test_wrong_mcq_letter(tagged_file):
    # "C." is not "C": accuracy 2 of 3
    refs = load_references(tagged_file)
    predictions = perfect(refs)
    predictions[f"{ID}_7"] = "C."
    assert evaluate(refs, predictions)["accuracy"] == pytest.approx(2 / 3, rel=1e-12)


def test_converter_jsonl_references_give_the_same_report(tagged_file, tmp_path):
    convert(tagged_file, tmp_path / "out", ratios=(1, 0, 0))
    refs_json, refs_jsonl = load_references(tagged_file), load_references(tmp_path / "out" / "train.jsonl")
    assert refs_json == refs_jsonl
    predictions = perfect(refs_json)
    predictions[f"{ID}_0"] = predictions[f"{ID}_0"].replace(C1, "<c1,CAM_FRONT,810.0,456.0>")
    assert evaluate(refs_jsonl, predictions) == evaluate(refs_json, predictions)


def test_prediction_formats(tmp_path):
    items = [{"id": "x_y_0", "question": "q", "answer": "A"}, {"id": "x_y_1", "question": "q", "answer": "B"}]
    (tmp_path / "output.json").write_text(json.dumps(items + [{"id": "x_y_0", "answer": "C"}]))
    (tmp_path / "submission.json").write_text(json.dumps({"method": "m", "team": "t", "results": items}))
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    # a repeated id keeps its last answer, as evaluation.py's dict comprehension does
    assert load_predictions(tmp_path / "output.json") == {"x_y_0": "C", "x_y_1": "B"}
    assert load_predictions(tmp_path / "submission.json") == {"x_y_0": "A", "x_y_1": "B"}
    assert load_predictions(tmp_path / "p.jsonl") == {"x_y_0": "A", "x_y_1": "B"}


def test_report_file(tagged_file, tmp_path):
    refs = load_references(tagged_file)
    (tmp_path / "p.json").write_text(json.dumps([{"id": k, "answer": v} for k, v in perfect(refs).items()]))
    report = evaluate_files(tmp_path / "p.json", tagged_file, tmp_path / "r" / "report.json")
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["accuracy"] == 1.0 and saved["chatgpt"] is None and saved["final_score"] is None
    assert saved["final_score_without_gpt"] == pytest.approx(report["final_score_without_gpt"], rel=1e-15)


# ------------------------------------------------------------------------------------------------ bad input
def test_missing_prediction_names_the_id(tagged_file):
    refs = load_references(tagged_file)
    predictions = perfect(refs)
    del predictions[f"{ID}_6"], predictions[f"{ID}_2"]
    with pytest.raises(DataError, match=rf"no answer for id '{ID}_2' \(2 of 8 reference QAs have none\)"):
        evaluate(refs, predictions)


def test_untagged_references_are_refused(raw_file, tmp_path):
    with pytest.raises(DataError, match=rf"QA {ID}_0: field 'tag' is missing"):
        load_references(raw_file)
    convert(raw_file, tmp_path / "out", ratios=(1, 0, 0))
    with pytest.raises(DataError, match=r"train.jsonl:1: field 'eval_tag' must be a list of integers 0-3, found None"):
        load_references(tmp_path / "out" / "train.jsonl")


def test_odd_decimals_in_a_question(tmp_path):
    qas = tagged_qas()
    qas["planning"][2]["Q"] = "Is 12.5 a safe speed?"  # one decimal: evaluation.py cannot pair it
    source = write_dataset(tmp_path, annotation(qas), images=False)
    refs = load_references(source)
    with pytest.raises(DataError, match=rf"QA {ID}_6: the question or answer holds 1 decimal numbers"):
        evaluate(refs, perfect(refs))


def test_references_need_no_image_paths(tmp_path):
    data = annotation(tagged_qas())
    del data[SCENE]["key_frames"][FRAME]["image_paths"]
    refs = load_references(write_dataset(tmp_path, data, images=False))
    assert [q.id for q in refs[0]] == [f"{ID}_{i}" for i in range(8)]


@pytest.mark.parametrize("content,message", [
    ('{"id": "a"}', r"expected a JSON list of \{\"id\", \"answer\"\} objects"),
    ('[{"id": "a", "answer": 3}]', r"p.json: item 0: field 'answer' must be a string, found 3"),
    ('[{"answer": "x"}]', r"p.json: item 0: field 'id' must be a string, found None"),
    ('[1]', r"p.json: item 0: expected an object, found int"),
    ('[{"id": "a",', r"p.json:1:\d+: invalid JSON"),
])
def test_bad_predictions(tmp_path, content, message):
    (tmp_path / "p.json").write_text(content)
    with pytest.raises(DataError, match=message):
        load_predictions(tmp_path / "p.json")
