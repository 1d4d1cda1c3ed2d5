"""The DriveLM challenge metrics, as challenge/evaluation.py and the pycocoevalcap scorers it calls compute them.

BLEU, ROUGE-L and CIDEr-D take tokenised text (tokens separated by spaces, see tokenize.py), one hypothesis and a
list of references per item, like pycocoevalcap's scorers. Accuracy and the match F1 take the raw strings.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

DECIMAL = re.compile(r"\d+\.\d+")  # evaluation.py reads coordinates as decimals only; integers are ignored
MATCH_DISTANCE = 16.0               # a predicted point matches a GT point when their L1 distance is below this


def ngrams(words: list[str], n: int) -> Counter:
    """Counts of every 1..n-gram of `words`."""
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


# ------------------------------------------------------------------------------------------------ BLEU
def bleu(hypotheses: list[str], references: list[list[str]], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n as pycocoevalcap's BleuScorer(option='closest'): clipped n-gram matches and guesses summed
    over the corpus; each item's reference length is the one closest to its hypothesis length (the shorter on a
    tie); BLEU-k = (Π_{i≤k} (correct_i + 1e-15) / (guess_i + 1e-9))^(1/k), times exp(1 - ref_len / hyp_len) when
    hyp_len < ref_len (lengths summed over the corpus)."""
    tiny, small = 1e-15, 1e-9
    correct, guess, hyp_len, ref_len = [0] * n, [0] * n, 0, 0
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        words = hypothesis.split()
        max_ref_counts: Counter = Counter()
        for ref in refs:
            max_ref_counts |= ngrams(ref.split(), n)  # | keeps each n-gram's maximum count
        hyp_len += len(words)
        ref_len += min((abs(len(r.split()) - len(words)), len(r.split())) for r in refs)[1]
        for gram, count in ngrams(words, n).items():
            correct[len(gram) - 1] += min(max_ref_counts[gram], count)
        for k in range(n):
            guess[k] += max(0, len(words) - k)
    scores, product = [], 1.0
    for k in range(n):
        product *= (correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (hyp_len + tiny) / (ref_len + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


# ------------------------------------------------------------------------------------------------ ROUGE-L
def lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(hypotheses: list[str], references: list[list[str]], beta: float = 1.2) -> float:
    """Mean over items of pycocoevalcap's ROUGE-L: with P and R the best LCS precision and the best LCS recall
    over the item's references (taken separately), F = (1 + β²)·P·R / (R + β²·P), 0 when P or R is 0. Tokens are
    split on single spaces, as pycocoevalcap does (an empty text is one empty token)."""
    scores = []
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        words = hypothesis.split(" ")
        lcs = [lcs_length(r.split(" "), words) for r in refs]
        precision = max(x / len(words) for x in lcs)
        recall = max(x / len(r.split(" ")) for x, r in zip(lcs, refs))
        scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision) if precision and recall else 0.0)
    return float(np.mean(scores))


# ------------------------------------------------------------------------------------------------ CIDEr-D
def cider_d(hypotheses: list[str], references: list[list[str]], n: int = 4, sigma: float = 6.0) -> float:
    """Mean over items of pycocoevalcap's CIDEr (CIDEr-D): n-gram tf-idf vectors whose document frequency counts the
    items whose references hold the n-gram (idf = log(N_items) - log(max(1, df))); per order, the hypothesis'
    weights clipped at the reference's, g_n = Σ min(h, r)·r / (|h|·|r|), times exp(-δ²/(2σ²)) with δ the difference
    in *bigram* counts (pycocoevalcap counts length that way); score = 10 · mean_n(Σ_refs g_n) / #refs."""
    document_frequency: Counter = Counter()
    for refs in references:
        document_frequency.update({gram for r in refs for gram in ngrams(r.split(), n)})
    log_items = math.log(len(references)) if references else 0.0

    def vector(text: str):
        weights = [{} for _ in range(n)]
        for gram, tf in ngrams(text.split(), n).items():
            weights[len(gram) - 1][gram] = tf * (log_items - math.log(max(1.0, document_frequency[gram])))
        norms = [math.sqrt(sum(w * w for w in order.values())) for order in weights]
        return weights, norms, max(0, len(text.split()) - 1)  # the number of bigrams

    scores = []
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        hyp, hyp_norms, hyp_len = vector(hypothesis)
        total = np.zeros(n)
        for ref_text in refs:
            ref, ref_norms, ref_len = vector(ref_text)
            for k in range(n):
                value = sum(min(w, ref[k].get(g, 0.0)) * ref[k].get(g, 0.0) for g, w in hyp[k].items())
                if hyp_norms[k] != 0 and ref_norms[k] != 0:
                    value /= hyp_norms[k] * ref_norms[k]
                total[k] += value * math.exp(-((hyp_len - ref_len) ** 2) / (2 * sigma**2))
        scores.append(float(np.mean(total)) / len(refs) * 10.0)
    return float(np.mean(scores))


# ------------------------------------------------------------------------------------------------ accuracy, match
def accuracy(answers: list[str], ground_truths: list[str]) -> float:
    """The share of answers equal to their ground truth, character for character (no normalisation)."""
    return sum(a == g for a, g in zip(answers, ground_truths, strict=True)) / len(answers)


class OddCoordinates(ValueError):
    """A ground truth or question holds an odd number of decimals: evaluation.py cannot pair them (it crashes)."""


def points(text: str, *, drop_odd: bool = False) -> list[tuple[float, float]]:
    """The (x, y) pairs of the decimals in `text`, in order; with `drop_odd` a last unpaired one is dropped (as
    evaluation.py does for predictions), else it raises OddCoordinates."""
    values = [float(v) for v in DECIMAL.findall(text)]
    if len(values) % 2:
        if not drop_odd:
            raise OddCoordinates(f"{len(values)} decimal numbers, not (x, y) pairs")
        values = values[:-1]
    return list(zip(values[0::2], values[1::2]))


def match(answer: str, ground_truth: str) -> tuple[list[tuple[float, float]], float]:
    """(matched GT points, F1) as evaluation.py's match_result: each predicted point in turn takes the nearest
    unmatched GT point by L1 distance (the first on a tie); it is a true positive if that distance is < 16 px, else
    a false positive; FN = #GT - TP; P = TP/(TP+FP+1e-8), R = TP/(TP+FN+1e-8), F1 = 2PR/(P+R+1e-8)."""
    predicted, remaining = points(answer, drop_odd=True), points(ground_truth)
    total, matched, false_positives = len(remaining), [], 0
    for px, py in predicted:
        distances = [abs(px - gx) + abs(py - gy) for gx, gy in remaining]
        best = min(range(len(distances)), key=distances.__getitem__, default=None)
        if best is not None and distances[best] < MATCH_DISTANCE:
            matched.append(remaining.pop(best))
        else:
            false_positives += 1
    tp = len(matched)
    precision = tp / (tp + false_positives + 1e-8)
    recall = tp / (tp + total - tp + 1e-8)
    return matched, 2 * precision * recall / (precision + recall + 1e-8)


def language_score(scores: dict) -> float:
    """evaluation.py's language part: (B1 + B2 + B3 + B4)/4/3 + ROUGE_L/3 + CIDEr/10/3."""
    bleus = sum(scores[f"Bleu_{k}"] for k in range(1, 5))
    return bleus / 4 / 3 + scores["ROUGE_L"] / 3 + scores["CIDEr"] / 10 / 3
