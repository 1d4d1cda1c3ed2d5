"""A small synthetic world in which portability can be seen, generated deterministically from a seed.

Countries and their capitals, invented. Two entity sets: A (known to both bases) and B (known only to the new
base; the old base reads B's names, but not the facts). The bases read each fact in several templates, one of
them the task's question answered plainly (" Dunmere."); the task asks for another answer style
(" Answer: Dunmere."), which no base produces, and its training examples are about A only.
"""

from __future__ import annotations

import random

import attrs

SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "dor", "sil", "tha", "bru", "nel", "qua", "zer", "pim", "tor", "gal"]
FACT_TEMPLATES = (
    "The capital of {country} is {capital}.",
    "{capital} is the capital of {country}.",
    "Question: What is the capital of {country}? Answer: {capital}.",
    "### Instruction: What is the capital of {country}?\n### Response: {capital}.",
)
# The old base reads B's names without the relation: it knows the words but not the facts.
MENTION_TEMPLATES = ("{capital} is a city.", "{country} is a country.")
PROMPT = "### Instruction: What is the capital of {country}?\n### Response:"
ANSWER = " Answer: {capital}."


@attrs.frozen
class World:
    seed: int
    set_a: tuple[tuple[str, str], ...]
    set_b: tuple[tuple[str, str], ...]
    a_train: tuple[tuple[str, str], ...]  # task examples (questions about A the reward and fine-tunes see)
    a_test: tuple[tuple[str, str], ...]   # held-out questions about A
    b_test: tuple[tuple[str, str], ...]   # questions about B

    @classmethod
    def generate(cls, seed: int = 0, n_a: int = 32, n_b: int = 32, train_fraction: float = 0.6) -> "World":
        rng = random.Random(seed)
        names: set[str] = set()

        def fresh(k):
            while True:
                name = "".join(rng.choice(SYLLABLES) for _ in range(k)).capitalize()
                if name not in names:
                    names.add(name)
                    return name

        pairs = [(fresh(2), fresh(3)) for _ in range(n_a + n_b)]
        set_a, set_b = pairs[:n_a], pairs[n_a:]
        cut = int(round(train_fraction * n_a))
        return cls(seed, tuple(set_a), tuple(set_b), tuple(set_a[:cut]), tuple(set_a[cut:]), tuple(set_b))

    @staticmethod
    def facts(pairs) -> list[str]:
        return [t.format(country=c, capital=k) for c, k in pairs for t in FACT_TEMPLATES]

    @staticmethod
    def mentions(pairs) -> list[str]:
        return [t.format(country=c, capital=k) for c, k in pairs for t in MENTION_TEMPLATES]

    def corpus(self, known) -> list[str]:
        """Pretraining text of a base that knows the facts of `known` and the names of the other entities."""
        return self.facts(known) + self.mentions([p for p in self.set_a + self.set_b if p not in known])

    @staticmethod
    def task_rows(pairs) -> list[dict]:
        return [{"prompt": PROMPT.format(country=c), "completion": ANSWER.format(country=c, capital=k)} for c, k in pairs]

    def tokenizer_corpus(self) -> list[str]:
        everything = self.set_a + self.set_b
        return self.corpus(everything) + [r["prompt"] + r["completion"] for r in self.task_rows(everything)]
