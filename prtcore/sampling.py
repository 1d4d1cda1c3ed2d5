"""Composition of several models' next-token distributions, samplers, and the decoding loop (Algorithm 2).

Everything here runs on a backend's arrays through its namespace; the only value the loop moves to the host
per generated token is the sampled id.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable, Iterable, Iterator, Sequence

import attrs
import numpy

from .arrays import ArrayNamespace, namespace
from .errors import ConfigError, GenerationError, TokenizerMismatchError
from .tokens import shown

NEG_INF = float("-inf")


# ---------------------------------------------------------------------------------------------- vocabulary
def align_vocab(logits, vocab_size: int, *, fill: float = NEG_INF, xp=numpy):
    """Slice or pad the last axis of `logits` to `vocab_size` (padding with `fill`)."""
    ops = namespace(xp)
    width = logits.shape[-1]
    if width == vocab_size:
        return logits
    if width > vocab_size:
        return logits[..., :vocab_size]
    pad = ops.full_like(logits[..., :1], fill)
    return ops.concatenate([logits] + [pad] * (vocab_size - width), axis=-1)


def tokenizer_vocab(tokenizer) -> list[str]:
    """The tokenizer's tokens ordered by id (holes shown as '')."""
    vocab = tokenizer.get_vocab()
    tokens = [""] * (max(vocab.values()) + 1 if vocab else 0)
    for token, index in vocab.items():
        tokens[index] = token
    return tokens


def check_same_tokenizer(tokenizers: dict[str, object]) -> int:
    """Refuse tokenizers that differ; return the shared vocabulary length.

    `tokenizers` maps a role ("target", "reward", ...) to a tokenizer with `get_vocab()`.
    """
    (first_name, first), *rest = tokenizers.items()
    reference = tokenizer_vocab(first)
    for name, tok in rest:
        tokens = tokenizer_vocab(tok)
        for index, (a, b) in enumerate(zip(reference, tokens)):
            if a != b:
                raise TokenizerMismatchError(
                    f"tokenizers of {first_name!r} and {name!r} differ first at id {index}: {a!r} vs {b!r}; "
                    "PRT needs one shared tokenizer"
                )
        if len(reference) != len(tokens):
            shorter, longer = sorted([(first_name, reference), (name, tokens)], key=lambda t: len(t[1]))
            raise TokenizerMismatchError(
                f"tokenizers of {first_name!r} ({len(reference)} tokens) and {name!r} ({len(tokens)} tokens) differ: "
                f"{longer[0]!r} has extra id {len(shorter[1])} = {longer[1][len(shorter[1])]!r}"
            )
    return len(reference)


# ---------------------------------------------------------------------------------------------- composers
class Composer(ABC):
    """Combines the next-token logits of `n_models` models into normalised log-probabilities.

    Call as `composer(*logits, xp=...)`; each input is `(..., V_i)` and is aligned to `vocab_size` first
    when that is set.
    """

    n_models: int
    vocab_size: int | None = None

    def __call__(self, *logits, xp=numpy):
        if len(logits) != self.n_models:
            raise ConfigError(f"{type(self).__name__} combines {self.n_models} models, got {len(logits)} logits")
        ops = namespace(xp)
        if self.vocab_size is not None:
            logits = [align_vocab(x, self.vocab_size, fill=self.fill(i), xp=ops) for i, x in enumerate(logits)]
        return ops.log_softmax(self.combine(list(logits), ops))

    def fill(self, index: int) -> float:
        """Value used when padding model `index`'s logits to the shared vocabulary."""
        return NEG_INF

    @abstractmethod
    def combine(self, logits: list, ops: ArrayNamespace):
        """Unnormalised combined logits."""


# ---------------------------------------------------------------------------------------------- arguments
def number(value, name: str, kind: type = float, *, positive: bool = False):
    """`value` as a finite float (or an int, for `kind=int`), else a ConfigError naming `name`: bools, strings,
    nan and inf are refused, and so is a float where an int is expected; `positive`: also refuse values <= 0."""
    allowed = (int, numpy.integer) if kind is int else (int, float, numpy.integer, numpy.floating)
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, allowed):
        raise ConfigError(f"{name}={shown(value)} must be {'an integer' if kind is int else 'a number'}")
    value = kind(value)
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{name}={shown(value)} must be a finite number")
    if positive and not value > 0:
        raise ConfigError(f"{name}={shown(value)} must be > 0")
    return value


def check_vocab_size(instance, attribute, value):
    if value is not None:
        number(value, f"{type(instance).__name__}.vocab_size", int, positive=True)


def _lams(value):
    """λ, or a tuple of λs for several rewards (each a finite number > 0)."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError("PRTComposer.lam=(): give one λ per reward")
        return tuple(number(v, f"PRTComposer.lam[{i}]", positive=True) for i, v in enumerate(value))
    return number(value, "PRTComposer.lam", positive=True)


def generation_args(max_tokens, stop) -> tuple[int, tuple[str, ...]]:
    """`max_tokens` (an int >= 0) and the stop strings (None, one string or a list of strings) as a tuple."""
    max_tokens = number(max_tokens, "max_tokens", int)
    if max_tokens < 0:
        raise GenerationError(f"max_tokens={max_tokens} must be >= 0")
    if stop is None or isinstance(stop, str):
        return max_tokens, (stop,) if stop else ()
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        raise ConfigError(f"stop={shown(stop)} must be a string or a list of strings")
    return max_tokens, tuple(s for s in stop if s)


@attrs.frozen
class PRTComposer(Composer):
    """log_softmax(base) + Σ_i reward_i / λ_i. Inputs: base logits, then one reward logits per λ."""

    lam: float | tuple[float, ...] = attrs.field(default=1.0, converter=_lams)
    vocab_size: int | None = attrs.field(default=None, validator=check_vocab_size)

    @property
    def lams(self) -> tuple[float, ...]:
        return self.lam if isinstance(self.lam, tuple) else (self.lam,)

    @property
    def n_models(self):
        return 1 + len(self.lams)

    def fill(self, index):
        return NEG_INF if index == 0 else 0.0

    def combine(self, logits, ops):
        out = ops.log_softmax(logits[0])
        for reward, lam in zip(logits[1:], self.lams):
            out = out + reward / lam
        return out


@attrs.frozen
class EFTComposer(Composer):
    """Emulated fine-tuning: log p_target + log p_finetuned − log p_source. Inputs in that order."""

    vocab_size: int | None = attrs.field(default=None, validator=check_vocab_size)
    n_models = 3

    def combine(self, logits, ops):
        target, finetuned, source = (ops.log_softmax(x) for x in logits)
        # A token the source excludes (−inf) but the fine-tuned model allows would give +inf; keep it excluded.
        delta = ops.where(ops.isfinite(source), finetuned - source, ops.full_like(source, NEG_INF))
        return target + delta


@attrs.frozen
class ProxyTuningComposer(Composer):
    """Proxy-tuning on raw logits: base + α·(expert − anti-expert). Inputs: base, expert, anti-expert."""

    alpha: float = attrs.field(default=1.0, converter=lambda a: number(a, "ProxyTuningComposer.alpha"))
    vocab_size: int | None = attrs.field(default=None, validator=check_vocab_size)
    n_models = 3

    def combine(self, logits, ops):
        base, expert, anti = logits
        delta = ops.where(ops.isfinite(anti), expert - anti, ops.full_like(anti, NEG_INF))
        # A token the expert or anti-expert excludes stays excluded whatever α (0·−inf or −α·−inf would be nan/+inf).
        return base + ops.where(ops.isfinite(delta), self.alpha * delta, delta)


@attrs.frozen
class BaseComposer(Composer):
    """The base model alone (for comparisons)."""

    vocab_size: int | None = attrs.field(default=None, validator=check_vocab_size)
    n_models = 1

    def combine(self, logits, ops):
        return logits[0]


# ---------------------------------------------------------------------------------------------- sampler
def _check_range(low, high, *, open_low=False):
    def check(instance, attribute, value):
        bad = not low <= value <= high or (open_low and value == low)  # also refuses nan
        if bad:
            bounds = f"{'(' if open_low else '['}{low}, {high}]"
            raise ConfigError(f"sampling: {attribute.name}={value!r} must be in {bounds}")

    return check


def _to(kind, name):
    """Converter to `kind` whose failures are ConfigErrors naming the field (see `number`)."""
    return lambda value: number(value, f"sampling: {name}", kind)


def _check_seed(instance, attribute, value):
    from .config import SEED_RULE, is_seed

    if value is not None and not is_seed(number(value, "sampling: seed", int)):
        raise ConfigError(f"sampling: seed={value!r} must be {SEED_RULE}")


@attrs.frozen
class Sampler:
    """Turns composed log-probs into a token id: repetition penalty, temperature, top-k, top-p, min-p.

    `temperature == 0` is greedy. `filtered(logprobs)` gives the normalised distribution that `sample` draws
    from, so seeded sampling can be compared across backends through probabilities.
    """

    temperature: float = attrs.field(default=0.0, converter=_to(float, "temperature"), validator=_check_range(0.0, 100.0))
    top_k: int = attrs.field(default=0, converter=_to(int, "top_k"), validator=_check_range(0, 10**9))
    top_p: float = attrs.field(default=1.0, converter=_to(float, "top_p"), validator=_check_range(0.0, 1.0, open_low=True))
    min_p: float = attrs.field(default=0.0, converter=_to(float, "min_p"), validator=_check_range(0.0, 1.0))
    repetition_penalty: float = attrs.field(default=1.0, converter=_to(float, "repetition_penalty"), validator=_check_range(0.0, 100.0, open_low=True))
    repetition_context: int = attrs.field(default=64, converter=_to(int, "repetition_context"), validator=_check_range(1, 10**9))
    seed: int | None = attrs.field(default=None, validator=_check_seed)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def filtered(self, logprobs, history: Sequence[int] = (), *, xp=numpy):
        """(B, V) log-probs after every transformation, renormalised."""
        ops = namespace(xp)
        x = logprobs
        if self.repetition_penalty != 1.0 and len(history):
            seen = ops.token_mask(list(history)[-self.repetition_context:], x.shape[-1])
            # Log-probs are ≤ 0: scaling by the penalty lowers seen tokens as mlx-lm and transformers do.
            x = ops.where(seen, x * self.repetition_penalty, x)
        if self.greedy:
            return ops.log_softmax(x)
        x = ops.log_softmax(x / self.temperature)
        neg = ops.full_like(x, NEG_INF)
        if self.top_k and self.top_k < x.shape[-1]:
            kth = ops.sort(x)[..., -self.top_k][..., None]
            x = ops.where(x < kth, neg, x)
        if self.min_p > 0.0:
            floor = ops.max(x, axis=-1, keepdims=True) + float(numpy.log(self.min_p))
            x = ops.where(x < floor, neg, x)
        if self.top_p < 1.0:
            ascending = ops.sort(x)
            probs = ops.exp(ascending)
            # Mass strictly above each sorted entry; an entry stays while that mass is below top_p of the mass left
            # by top-k / min-p (i.e. top-p acts on the renormalised distribution, as in transformers and vLLM).
            total = ops.sum(probs, axis=-1, keepdims=True)
            above = total - ops.cumsum(probs)
            kept = ops.where(above < self.top_p * total, ascending, ops.full_like(ascending, float("inf")))
            threshold = -ops.max(-kept, axis=-1, keepdims=True)
            # The most likely token always stays, even where rounding puts the mass above it at or over top_p.
            top = ops.max(x, axis=-1, keepdims=True)
            threshold = ops.where(threshold > top, top, threshold)
            x = ops.where(x < threshold, neg, x)
        return ops.log_softmax(x)

    def sample(self, logprobs, rng, *, xp=numpy):
        """(B,) token ids from filtered log-probs."""
        ops = namespace(xp)
        if self.greedy:
            return ops.argmax(logprobs, axis=-1)
        return ops.categorical(logprobs, rng)


# ---------------------------------------------------------------------------------------------- decoding loop
class Scorer(ABC):
    """One model taking part in decoding, with its own cache.

    `__call__(ids)` consumes new token ids `(B, n)` (the prompt on the first call, then one token) and returns
    the logits of the last position, `(B, V)`, as a backend array.
    """

    @abstractmethod
    def __call__(self, ids): ...


@attrs.frozen
class GenerationStep:
    """One generated token: its id, the text it makes visible, and why decoding stopped (None while going on)."""

    token: int
    text: str
    finish_reason: str | None = None



@attrs.frozen
class Generation:
    """One generated sequence: its token ids (without the EOS), its text and why it ended ("stop" or "length")."""

    tokens: list[int]
    text: str
    finish_reason: str


class BatchProgress:
    """The host side of batched decoding: each row's ids so far (`histories`), generated ids, text and end."""

    def __init__(self, rows, tokenizer, eos: set[int], stop: Sequence[str]):
        self.histories, self.out = [list(r) for r in rows], [[] for _ in rows]
        self.texts, self.reasons = [""] * len(rows), [None] * len(rows)
        self.tokenizer, self.eos, self.stop = tokenizer, eos, stop

    def add(self, tokens: Sequence[int], last: bool) -> bool:
        """Take one sampled id per row (rows already ended ignore theirs); `last`: the final step allowed.
        Returns whether every row has ended."""
        for i, token in enumerate(tokens):
            if self.reasons[i] is not None:
                continue
            self.histories[i].append(token)
            if token in self.eos:
                self.reasons[i] = "stop"
                continue
            self.out[i].append(token)
            text = self.texts[i] = self.tokenizer.decode(self.out[i])
            hits = [text.find(s) for s in self.stop if s in text]
            if hits:
                self.texts[i], self.reasons[i] = text[:min(hits)], "stop"
            elif last:
                self.reasons[i] = "length"
        return all(r is not None for r in self.reasons)

    def results(self) -> list[Generation]:
        return [Generation(o, t, r or "length") for o, t, r in zip(self.out, self.texts, self.reasons)]

# ---------------------------------------------------------------------------------------------- pipelining
class Pipeline:
    """How a backend overlaps the next decoding step with reading the current token off the device.

    `decode` asks `active(token)` once; when True, it builds (and `start`s) step t+1 from the sampled ids of step t
    while they are still on the device, then `finish`es step t's ids, so the device computes step t+1 while the
    host handles token t. A backend's array namespace declares its own as `ArrayNamespace.pipeline` (None: no
    overlap): mlx evaluates asynchronously (`mx.async_eval`), torch copies the ids to pinned memory behind a CUDA
    event. Nothing registers one at import time.
    """

    def active(self, token) -> bool:
        return False

    def start(self, token):
        """Begin computing `token` and moving it to the host; returns a handle for `finish`."""
        return None

    def finish(self, token, handle) -> numpy.ndarray:
        raise NotImplementedError


def decode(
    scorers: Sequence[Scorer],
    composer: Composer,
    sampler: Sampler,
    prompt_ids: Sequence[int],
    *,
    xp,
    max_tokens: int,
    to_backend: Callable,
    eos_ids: Iterable[int] = (),
    tokenizer=None,
    stop: Sequence[str] = (),
    pipeline: bool | None = None,
) -> Iterator[GenerationStep]:
    """Algorithm 2 for one sequence: prefill every scorer, then one step of each per generated token.

    `to_backend(list_of_lists)` turns ids into the backend's (B, n) integer array. Decoding stops on an EOS id,
    on a stop string (the text is cut before it; stop strings may span tokens) or after `max_tokens`. Text that
    could still become a stop string is held back until it cannot.

    The only value moved to the host per token is the sampled id. `pipeline` (default: when the namespace declares
    a Pipeline (`xp.pipeline`) that is active for these arrays, and no repetition penalty needs the host's history)
    feeds the sampled ids back to the scorers on the device and starts step t+1 before token t is read, as
    mlx-lm's generate_step does; the draws and tokens are the same, and a generation that stops early has
    computed one step more.
    """
    ops = namespace(xp)
    max_tokens, stop = generation_args(max_tokens, stop)
    if len(prompt_ids) == 0:
        raise GenerationError("the prompt is empty: give at least one token (a BOS token or some text)")
    if max_tokens == 0:
        return
    eos = {int(i) for i in eos_ids}
    rng = ops.make_rng(sampler.seed)
    history = [int(i) for i in prompt_ids]
    # The composer's output is normalised: for greedy decoding without a penalty, `filtered` would only
    # renormalise it, and the argmax is the same.
    plain = sampler.greedy and sampler.repetition_penalty == 1.0

    def next_ids(logits):
        logprobs = composer(*logits, xp=ops)
        if not plain:
            logprobs = sampler.filtered(logprobs, history, xp=ops)
        return sampler.sample(logprobs, rng, xp=ops)

    pending = next_ids([scorer(to_backend([history])) for scorer in scorers])
    pipe = ops.pipeline
    if pipeline is None:
        pipeline = pipe is not None and sampler.repetition_penalty == 1.0 and pipe.active(pending)
    elif pipeline and (pipe is None or sampler.repetition_penalty != 1.0):
        pipeline = False
    handle = pipe.start(pending) if pipeline else None
    text = TextStream(tokenizer, eos, stop, max_tokens)
    for index in range(max_tokens):
        ahead = ahead_handle = None
        if pipeline and index < max_tokens - 1:
            ahead = next_ids([scorer(pending[:, None]) for scorer in scorers])
            ahead_handle = pipe.start(ahead)
        values = pipe.finish(pending, handle) if pipeline else ops.to_numpy(pending)
        token = int(numpy.asarray(values).reshape(-1)[0])
        history.append(token)
        piece, reason = text.add(token)
        yield GenerationStep(token, piece, reason)
        if reason is not None:
            return
        if pipeline:
            pending, handle = ahead, ahead_handle
        else:
            pending = next_ids([scorer(to_backend([[token]])) for scorer in scorers])


class TextStream:
    """The text of one generation as it streams: each new id gives the text it makes visible and the finish reason
    ("stop" on an EOS id or a stop string, "length" at `max_tokens`; None while it goes on). Text that could still
    become a stop string (stop strings may span tokens) or an incomplete character is held back until it cannot."""

    def __init__(self, tokenizer, eos: set[int], stop: Sequence[str], max_tokens: int):
        self.tokenizer, self.eos, self.stop, self.max_tokens = tokenizer, eos, tuple(stop), max_tokens
        self.generated: list[int] = []
        self.emitted = 0

    def text(self) -> str:
        return self.tokenizer.decode(self.generated) if self.tokenizer is not None and self.generated else ""

    def add(self, token: int) -> tuple[str, str | None]:
        if token in self.eos:
            return self.text()[self.emitted:], "stop"
        self.generated.append(token)
        text = self.text()
        hit = _find_stop(text, self.stop, self.emitted)
        if hit is not None:
            return text[self.emitted:hit], "stop"
        if len(self.generated) >= self.max_tokens:
            return text[self.emitted:], "length"
        visible = _visible_end(text, self.stop)
        piece = text[self.emitted:visible]
        self.emitted = max(self.emitted, visible)
        return piece, None


def _visible_end(text: str, stop: Sequence[str]) -> int:
    """End of the text that can be shown: before an incomplete character or a possible stop-string prefix."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    for s in stop:
        for k in range(min(len(s) - 1, end), 0, -1):
            if text[:end].endswith(s[:k]):
                end -= k
                break
    return end


def _find_stop(text: str, stop: Sequence[str], start: int) -> int | None:
    """Earliest position of a stop string in `text` that was not yet shown before `start`."""
    hits = [pos for s in stop if (pos := text.find(s, max(0, start - len(s) + 1))) != -1]
    return min(hits) if hits else None
