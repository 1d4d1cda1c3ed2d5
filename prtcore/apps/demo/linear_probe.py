"""Why a linear reward cannot learn the demo's format, measured: the source's last hidden state where the answer
starts (after `### Response:`) and after `Answer:` are nearly the same vector (both predict the capital), so any
linear head adds nearly the same reward at both. The best linear separator of the two positions, fitted on the
training questions, is tested on held-out ones."""

from __future__ import annotations

import numpy as np


def answer_states(backend, base, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """The last hidden states (those a linear reward reads) where each answer starts and after its `Answer:`."""
    start, after = [], []
    for row in rows:
        prompt = base.tokenizer.encode(row["prompt"])
        completion = base.tokenizer.encode(row["completion"], add_special_tokens=False)
        hidden = backend.to_numpy(base.forward(backend.asarray([prompt + completion]), hidden=True).hidden)[0]
        start.append(hidden[len(prompt) - 1])
        after.append(hidden[len(prompt) + 1])  # " Answer" ":" then the capital
    return np.asarray(start, dtype=np.float64), np.asarray(after, dtype=np.float64)


def separator(x: np.ndarray, y: np.ndarray, steps: int = 3000, lr: float = 0.1) -> tuple[np.ndarray, float]:
    """Logistic regression (lightly L2-regularised) by gradient descent: weights and bias."""
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(steps):
        g = 1.0 / (1.0 + np.exp(-(x @ w + b))) - y
        w -= lr * (x.T @ g / len(y) + 1e-4 * w)
        b -= lr * float(g.mean())
    return w, b


def linear_probe(backend, base, train_rows: list[dict], test_rows: list[dict]) -> dict:
    """Cosine of the two positions' states (held-out questions) and the accuracy of the best linear separator of
    them on the training questions and on held-out ones (0.5 is chance)."""
    def labelled(rows):
        start, after = answer_states(backend, base, rows)
        return np.vstack([start, after]), np.r_[np.ones(len(start)), np.zeros(len(after))], start, after

    x, y, _, _ = labelled(train_rows)
    xt, yt, start, after = labelled(test_rows)
    w, b = separator(x, y)
    cosine = (start * after).sum(1) / (np.linalg.norm(start, axis=1) * np.linalg.norm(after, axis=1))
    accuracy = lambda x, y: float(((x @ w + b > 0) == (y > 0)).mean())
    return {"cosine": round(float(cosine.mean()), 3), "train_accuracy": round(accuracy(x, y), 3),
            "held_out_accuracy": round(accuracy(xt, yt), 3)}
