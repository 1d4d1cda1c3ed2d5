"""The metrics against values worked out by hand from the formulas (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest

from prtcore.apps.drivelm.evaluate import coco_scores
from prtcore.apps.drivelm.metrics import accuracy, bleu, cider_d, language_score, match, points, rouge_l
from prtcore.apps.drivelm.tokenize import ptb_tokenize

TINY, SMALL = 1e-15, 1e-9  # pycocoevalcap's smoothing constants


# ------------------------------------------------------------------------------------------------ BLEU
def test_bleu_one_sentence():
    # hyp "a b c d", ref "a b c e": equal lengths (no brevity penalty)
    # 1-grams: a b c match of 4; 2-grams: ab bc of 3; 3-grams: abc of 2; 4-grams: 0 of 1
    b = bleu(["a b c d"], [["a b c e"]])
    p1, p2, p3, p4 = (3 + TINY) / (4 + SMALL), (2 + TINY) / (3 + SMALL), (1 + TINY) / (2 + SMALL), TINY / (1 + SMALL)
    assert b[0] == pytest.approx(0.75, rel=1e-9)                     # 3/4
    assert b[1] == pytest.approx(math.sqrt(0.5), rel=1e-9)           # sqrt(3/4 · 2/3)
    assert b[2] == pytest.approx(0.25 ** (1 / 3), rel=1e-9)          # (3/4 · 2/3 · 1/2)^(1/3) = 0.6299605
    assert b[3] == pytest.approx((p1 * p2 * p3 * p4) ** 0.25, rel=1e-9)  # (0.25 · 1e-15)^(1/4) = 1.2574e-4
    assert b[3] == pytest.approx(1.2574334e-4, rel=1e-6)


def test_bleu_is_corpus_level_with_brevity_penalty():
    # item 1: hyp "x y" (2 words), ref "x y z w" (4); item 2: hyp "p q r" = ref (3)
    # summed: correct/guess 1-grams 5/5, 2-grams 3/3 (1 + 2), 3-grams 1/1 (0 + 1), 4-grams 0/0
    # hyp length 5 < ref length 7: BP = exp(1 - 7/5) = exp(-0.4) = 0.6703200
    # BLEU-4 = (1 · 1 · 1 · (1e-15 / 1e-9))^(1/4) · BP = 1e-6^(1/4) · BP = 0.0316228 · 0.6703200 = 0.0211974
    b = bleu(["x y", "p q r"], [["x y z w"], ["p q r"]])
    bp = math.exp(-0.4)
    assert b[0] == pytest.approx(bp, rel=1e-8)
    assert b[1] == pytest.approx(bp, rel=1e-8)
    assert b[2] == pytest.approx(bp, rel=1e-8)
    assert b[3] == pytest.approx((TINY / SMALL) ** 0.25 * bp, rel=1e-6)
    assert b[3] == pytest.approx(0.0211974, rel=1e-5)


def test_bleu_closest_reference_length_shorter_on_tie():
    # hyp "a b c" (3); refs "a b" (2) and "a b c d" (4): both 1 away, the shorter (2) wins: no brevity penalty
    # 1-grams: a b c, max ref counts a1 b1 c1 → 3/3 → BLEU-1 = 1
    assert bleu(["a b c"], [["a b", "a b c d"]])[0] == pytest.approx(1.0, rel=1e-9)
    # with ref "a b c d e" (5) alone: BP = exp(1 - 5/3) = 0.5134171
    # refs "a" (1) and "a b c d e" (5): both 2 away, the shorter (1) wins: no penalty, BLEU-1 = 3/3 = 1
    assert bleu(["a b c"], [["a b c d e"]])[0] == pytest.approx(math.exp(1 - 5 / 3), rel=1e-9)
    assert bleu(["a b c"], [["a", "a b c d e"]])[0] == pytest.approx(1.0, rel=1e-9)


def test_bleu_clips_repeated_words():
    # hyp "the the the" vs ref "the cat": 'the' counts min(3, 1) = 1 of 3 guesses; lengths 3 vs 2, no BP
    assert bleu(["the the the"], [["the cat"]])[0] == pytest.approx(1 / 3, rel=1e-9)


# ------------------------------------------------------------------------------------------------ ROUGE-L
def test_rouge_l():
    # cand "a b c d e", ref "a x c e": LCS "a c e" = 3; P = 3/5, R = 3/4
    # F = (1 + 1.44)·0.6·0.75 / (0.75 + 1.44·0.6) = 1.098 / 1.614 = 0.6802974
    assert rouge_l(["a b c d e"], [["a x c e"]]) == pytest.approx(1.098 / 1.614, rel=1e-12)


def test_rouge_l_takes_best_precision_and_best_recall_separately():
    # cand "a b"; ref "a": LCS 1, P 1/2, R 1/1; ref "a b c d": LCS 2, P 2/2, R 2/4 → P = 1, R = 1 → F = 1
    assert rouge_l(["a b"], [["a", "a b c d"]]) == pytest.approx(1.0, rel=1e-12)
    # mean over items: the item above (1.0) and a disjoint one (0.0) → 0.5
    assert rouge_l(["a b", "x"], [["a", "a b c d"], ["y"]]) == pytest.approx(0.5, rel=1e-12)


# ------------------------------------------------------------------------------------------------ CIDEr-D
def test_cider_exact_match_and_no_overlap():
    # 2 items, so idf = log 2 - log(max(1, df)); every n-gram here has df 1 or 0, weight l = log 2
    # item 1 "a b" vs "a b": order 1: (l² + l²)/(√2 l · √2 l) = 1; order 2: l²/(l · l) = 1; orders 3, 4: 0
    #   bigram counts 1 and 1: penalty exp(0) = 1 → 10 · (1 + 1 + 0 + 0)/4 = 5.0
    # item 2 "c d" vs "e f": nothing shared → 0; CIDEr = (5.0 + 0)/2 = 2.5
    assert cider_d(["a b", "c d"], [["a b"], ["e f"]]) == pytest.approx(2.5, rel=1e-12)


def test_cider_length_penalty_counts_bigrams():
    # item 1 "a b c" vs "a b" (item 2 "c d" vs "e f" scores 0), every weight l = log 2:
    # order 1: hyp a b c (norm √3 l), ref a b (norm √2 l): (l² + l²)/(√3 √2 l²) = 2/√6 = 0.8164966
    # order 2: hyp "a b" "b c" (norm √2 l), ref "a b" (norm l): l²/(√2 l²) = 1/√2 = 0.7071068
    # order 3: "a b c" not in ref → 0; bigram counts 2 vs 1: δ = 1, penalty exp(-1/72) = 0.9862071
    # item 1 = 10 · (0.8164966 + 0.7071068)/4 · 0.9862071 = 3.7564712; CIDEr = 3.7564712/2 = 1.8782356
    expected = 10 * (2 / math.sqrt(6) + 1 / math.sqrt(2)) / 4 * math.exp(-1 / 72) / 2
    assert expected == pytest.approx(1.8782356, rel=1e-7)
    assert cider_d(["a b c", "c d"], [["a b"], ["e f"]]) == pytest.approx(expected, rel=1e-12)


def test_cider_clips_hypothesis_weights():
    # item 1 "a a" vs "a b", item 2 "x" vs "y"; l = log 2
    # order 1: hyp a: tf 2 → 2l (norm 2l); ref a l, b l (norm √2 l); min(2l, l)·l / (2l · √2 l) = 1/(2√2) = 0.3535534
    #   (unclipped it would be 2l·l/(2√2 l²) = 0.7071068); order 2: "a a" not in ref → 0; bigram counts 1 and 1
    # item 1 = 10 · 0.3535534/4 = 0.8838835; CIDEr = 0.8838835/2 = 0.4419417
    assert cider_d(["a a", "x"], [["a b"], ["y"]]) == pytest.approx(10 / (2 * math.sqrt(2)) / 4 / 2, rel=1e-12)


def test_cider_is_zero_on_a_single_item():
    # one item: idf = log 1 - log 1 = 0 for every n-gram, so every vector is 0
    assert cider_d(["a b c"], [["a b c"]]) == 0.0


def test_coco_scores_tokenise_like_the_coco_tools():
    # "A b." / "C d!" lower-cased, punctuation dropped → the first CIDEr example: "a b" vs "a b", "c d" vs "e f"
    scores = coco_scores(["A b.", "C d!"], ["a b", "E, f"])
    assert list(scores) == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"]
    assert scores["CIDEr"] == pytest.approx(2.5, rel=1e-12)
    # ROUGE-L: item 1 = 1, item 2 = 0 → 0.5; BLEU-1: 2 of 4 unigrams, lengths equal → 0.5
    assert scores["ROUGE_L"] == pytest.approx(0.5, rel=1e-12)
    assert scores["Bleu_1"] == pytest.approx(0.5, rel=1e-9)


def test_language_score():
    # (0.4 + 0.3 + 0.2 + 0.1)/4/3 + 0.6/3 + 2.5/10/3 = 0.0833333 + 0.2 + 0.0833333 = 0.3666667
    scores = {"Bleu_1": 0.4, "Bleu_2": 0.3, "Bleu_3": 0.2, "Bleu_4": 0.1, "ROUGE_L": 0.6, "CIDEr": 2.5}
    assert language_score(scores) == pytest.approx(1.0 / 12 + 0.2 + 2.5 / 30, rel=1e-12)


# ------------------------------------------------------------------------------------------------ tokenizer
@pytest.mark.parametrize("text,tokens", [
    ("The IDs are <c1,CAM_FRONT,800.0,450.0>, and <c3,CAM_BACK,1200.0,520.0>.",
     "the ids are <c1,cam_front,800.0,450.0> and <c3,cam_back,1200.0,520.0>"),
    ("Don't stop; the ego's car can't turn left-ward...", "do n't stop the ego 's car ca n't turn left-ward"),
    ('A "red" light (front), e.g. at 674.86: yes!', "a red light front e.g. at 674.86 yes"),
    ("line one\nline two", "line one line two"),
])
def test_ptb_tokenize(text, tokens):
    assert ptb_tokenize(text) == tokens


# ------------------------------------------------------------------------------------------------ accuracy, match
def test_accuracy_is_exact_string_equality():
    # "A" = "A"; "A." ≠ "A" (no normalisation); "No." = "No." → 2/3
    assert accuracy(["A", "A.", "No."], ["A", "A", "No."]) == pytest.approx(2 / 3, rel=1e-12)


def eps_f1(tp: int, fp: int, fn: int) -> float:
    """F1 with evaluation.py's 1e-8 terms, written out."""
    p, r = tp / (tp + fp + 1e-8), tp / (tp + fn + 1e-8)
    return 2 * p * r / (p + r + 1e-8)


def test_match_nearest_l1_below_16():
    # pred (810.0, 455.0): L1 to (800.0, 450.0) = 10 + 5 = 15 < 16 → TP
    # pred (100.0, 100.0): nearest remaining (300.5, 200.0) at 200.5 + 100 = 300.5 → FP
    # TP 1, FP 1, FN 2 - 1 = 1: P = R = 1/2, F1 = 1/2 (less the 1e-8 terms)
    matched, f1 = match("<c1,CAM_FRONT,810.0,455.0> and <c9,CAM_BACK,100.0,100.0>",
                        "<c1,CAM_FRONT,800.0,450.0>, <c2,CAM_FRONT_LEFT,300.5,200.0>")
    assert matched == [(800.0, 450.0)]
    assert f1 == pytest.approx(eps_f1(1, 1, 1), rel=1e-12)
    assert f1 == pytest.approx(0.5, abs=2e-8)


def test_match_distance_16_is_not_a_match():
    # L1 = 10 + 6 = 16, not < 16: TP 0 → P = R = 0 → F1 = 0
    assert match("(810.0, 456.0)", "(800.0, 450.0)") == ([], 0.0)


def test_match_each_gt_point_once_first_on_tie():
    # GT (10.0, 0.0), (0.0, 0.0); pred (5.0, 0.0) is 5 from both: the first GT is taken;
    # pred (5.5, 0.0) then takes (0.0, 0.0) at 5.5; pred (6.0, 0.0) finds no GT left → FP
    # TP 2, FP 1, FN 0: P = 2/3, R = 1, F1 = 2·(2/3)/(5/3) = 0.8
    matched, f1 = match("5.0 0.0 5.5 0.0 6.0 0.0", "10.0 0.0 0.0 0.0")
    assert matched == [(10.0, 0.0), (0.0, 0.0)]
    assert f1 == pytest.approx(eps_f1(2, 1, 0), rel=1e-12)
    assert f1 == pytest.approx(0.8, abs=2e-8)


def test_match_ignores_integers_and_an_odd_last_value():
    # "800, 450" has no decimals → no predicted points: TP 0 → F1 0
    assert match("<c1,CAM_FRONT,800,450>", "<c1,CAM_FRONT,800.0,450.0>")[1] == 0.0
    # "800.0 450.0 7.5": the unpaired 7.5 is dropped; one exact match: TP 1, FP 0, FN 0
    assert match("800.0 450.0 7.5", "800.0 450.0")[1] == pytest.approx(eps_f1(1, 0, 0), rel=1e-12)
    assert points("1.5 2 2.5 3.5", drop_odd=True) == [(1.5, 2.5)]
