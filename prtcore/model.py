"""The backend-neutral model API: `PRTForCausalLM`, `ComposedLM`, and the interfaces a backend implements
(defined in prtcore.interfaces, importable from here). A backend (a plugin, see prtcore.hookspecs) provides:
- `Backend`: loads base models (`BaseLM`), creates and loads rewards (`RewardModel`), converts arrays;
- `BaseLM`: a frozen causal LM with forward (logits and, on request, last hidden states), caches, tokenizer;
- `RewardModel`: reward logits for token ids (reading the source's hidden states for `linear`/`transformer`).

Vision-language bases also have `vision` (a prtcore.vision.VisionEncoder); their forward, and that of their
rewards, take `images=`: one prtcore.vision.Images (or None) per row, for ids whose image placeholders are
expanded (`Generative.prepare`). Text-only models never receive `images`.

Composition, sampling and the decoding loop are prtcore's own (prtcore.sampling), so every backend gives the
same distributions for the same logits.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .artifacts import RewardArtifact
from .errors import ConfigError, GenerationError
from .interfaces import Backend, BaseLM, ForwardOutput, PRTOutput, RewardModel  # noqa: F401 (public here)
from .tokens import as_id_rows, check_token_ids, shown
from .vision import (
    Images, VisionEncoder, as_images, expand_image_tokens, image_token_counts, messages_with_placeholders, with_placeholders,
)
from .sampling import (
    BaseComposer, EFTComposer, PRTComposer, ProxyTuningComposer, Sampler, Scorer, align_vocab, check_same_tokenizer,
    decode, generation_args, number,
)
from .hf_compat import call_ids, decoding_options, hf_generate, text_steps
from .quiet import quiet_loading


# ------------------------------------------------------------------------------------------------ scorers
def _image_kwargs(images) -> dict:
    """`images=` for a forward: one row's Images or one per row (nothing for text, so text-only models never
    see it)."""
    return {} if images is None else {"images": [images] if isinstance(images, Images) else list(images)}


class _BaseScorer(Scorer):
    """A base model with its cache; keeps the last chunk's hidden states when a reward reads them. `images`
    go with the first call (the prompt). `batch`: `attention_mask` and `position_ids` of a left-padded batch
    (backend capability "batched"), passed to every forward (prtcore.serve decodes batches so)."""

    def __init__(self, lm: BaseLM, keep_hidden: bool, images: Images | None = None):
        self.lm, self.keep_hidden, self.images = lm, keep_hidden, images
        self.cache = lm.make_cache()
        self.hidden = None

    def __call__(self, ids, **batch):
        out = self.lm.forward(ids, self.cache, hidden=self.keep_hidden, **_image_kwargs(self.images), **batch)
        self.images = None
        self.hidden = out.hidden
        return out.logits[:, -1, :]


class _RewardScorer(Scorer):
    def __init__(self, reward: RewardModel, source: _BaseScorer | None, runs_source: bool, images: Images | None = None):
        self.reward, self.source, self.runs_source, self.images = reward, source, runs_source, images
        self.cache = reward.make_cache()

    def __call__(self, ids, **batch):
        hidden = None
        if self.source is not None:
            if self.runs_source:
                self.source(ids, **batch)
            hidden = self.source.hidden
        logits = self.reward.forward(ids, self.cache, source_hidden=hidden, **_image_kwargs(self.images), **batch)
        self.images = None
        return logits[:, -1, :]


# ------------------------------------------------------------------------------------------------ generation
class Generative:
    """Text generation over `scorers()` and `composer` (shared by PRT and the EFT / proxy-tuning baselines)."""

    backend: Backend
    target: BaseLM
    vocab_size: int

    @property
    def tokenizer(self):
        return self.target.tokenizer

    def scorers(self, images: Images | None = None) -> list[Scorer]:
        raise NotImplementedError

    def active_composer(self):
        raise NotImplementedError

    def vision_encoders(self) -> list[VisionEncoder]:
        """The vision encoders of the models that run (empty for text-only models)."""
        return [m.vision for m in self.base_models() if m.vision is not None]

    def prepare(self, prompt: str | Sequence[int] | list[dict], images=None) -> tuple[list[int], Images | None]:
        """Token ids of `prompt` with each image's placeholder expanded to its feature tokens, and the images
        (prtcore.vision.Images). A text prompt gets a placeholder per "<image>" marker, or all of them in
        front; chat messages (rendered with the chat template and a generation prompt) likewise, or by
        {"type": "image"} content parts; token ids must hold one placeholder token per image."""
        encoders = self.vision_encoders()
        if _checked_images(images) is not None and not encoders:
            raise GenerationError(f"images were given, but {self.target.path or 'the model'} is not a vision-language model")
        images = as_images(images)
        messages = isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], dict)
        if images is None:
            return (self.apply_chat_template(prompt) if messages else self.encode(prompt)), None
        if messages:
            prompt = self.apply_chat_template(messages_with_placeholders(prompt, len(images), encoders[0].placeholder))
        elif isinstance(prompt, str):
            prompt = with_placeholders(prompt, len(images), encoders[0].placeholder)
        return expand_image_tokens(self.encode(prompt), encoders[0].image_token_id,
                                   image_token_counts(encoders, images)), images

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            return list(self.tokenizer.encode(prompt))
        if not isinstance(prompt, (list, tuple, np.ndarray)):
            raise ConfigError(f"prompt={shown(prompt)}: expected text, a list of token ids or chat messages")
        return as_id_rows([list(prompt)], self.rows)[0]

    def encode_batch(self, prompts: Sequence) -> list[list[int]]:
        """Token ids of each prompt (text or token ids) of a list, for batched decoding."""
        if not isinstance(prompts, (list, tuple)):
            raise ConfigError(f"prompts={shown(prompts)}: expected a list of prompts (texts or token ids)")
        return [self.encode(p) for p in prompts]

    @property
    def rows(self) -> int:
        """The fewest embedding rows among the models that read token ids: the largest id they can all take."""
        return min(m.vocab_size for m in self.id_readers())

    def id_readers(self) -> list:
        """The models that embed token ids (bases, and rewards with an embedding of their own)."""
        return self.base_models()

    def call_images(self, images) -> dict:
        """`images=` for a forward of __call__: None, one Images or one (or None) per row, for a vision model."""
        if images is None:
            return {}
        if not isinstance(images, Images) and not (
                isinstance(images, (list, tuple)) and all(i is None or isinstance(i, Images) for i in images)):
            raise ConfigError(f"images={shown(images)}: expected a prtcore.vision.Images, or one (or None) per row")
        if not self.vision_encoders():
            raise GenerationError(f"images were given, but {self.target.path or 'the model'} is not a vision-language model")
        return _image_kwargs(images)

    def as_batch(self, ids):
        """(B, T) token ids from the Python API as a backend array, checked (one line for a bad batch or id)."""
        ids = as_id_rows(ids, self.rows, self.backend.to_numpy)
        return ids if hasattr(ids, "shape") else self.backend.asarray(ids)

    def apply_chat_template(self, messages: list[dict], *, add_generation_prompt: bool = True) -> list[int]:
        """Token ids of a chat rendered with the tokenizer's template."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise GenerationError("the tokenizer has no chat template; pass a plain prompt instead")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), (str, list)):
                raise ConfigError(f"prompt[{i}]={shown(m)}: a chat message is a dict with 'role' and 'content'")
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
        if hasattr(ids, "keys"):  # a BatchEncoding in transformers 5
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    def stream(self, prompt: str | Sequence[int], **options) -> Iterator[str]:
        """Yield pieces of generated text as they are decoded. Options: max_tokens (256), temperature (0: greedy),
        top_p (1), top_k (0: off), min_p (0), repetition_penalty (1), seed, stop (strings), images (see `prepare`);
        and transformers' (max_new_tokens, do_sample, generation_config, eos_token_id, streamer, ...:
        prtcore.hf_compat). Any other is refused in one line."""
        options = decoding_options(options)
        for step in text_steps(self, prompt, options):
            if step.text:
                yield step.text

    def base_models(self) -> list[BaseLM]:
        return [self.target]

    def context_window(self) -> int | None:
        """The smallest `max_position_embeddings` of the models that run (None when no config says)."""
        windows = [m.config.get("max_position_embeddings") for m in self.base_models()]
        windows = [int(w) for w in windows if isinstance(w, int) and w > 0]
        return min(windows) if windows else None

    def stream_steps(self, prompt, *, max_tokens=256, stop=(), images=None, eos_ids=None, **sampling):
        """Like `stream` (prtcore's arguments only), yielding prtcore.sampling.GenerationStep (token id, text,
        finish reason)."""
        ids, images = self.prepare(prompt, images)
        yield from self.decode_ids(ids, images, max_tokens=max_tokens, stop=stop, eos_ids=eos_ids, **sampling)

    def decode_ids(self, ids: list[int], images: Images | None = None, *, max_tokens=256, stop=(), eos_ids=None,
                   **sampling):
        """`stream_steps` for ids (and images) that `prepare` made; `eos_ids` end it (default: the target's). A prompt
        that fills the context window is refused; else generation stops at the window's end (reason "length")."""
        max_tokens, stop = generation_args(max_tokens, stop)
        sampler = Sampler(**sampling)
        if not ids:
            raise GenerationError("the prompt is empty: it encodes to no token ids")
        check_token_ids(ids, self.rows, "prompt")
        window = self.context_window()
        if window is not None:
            if len(ids) >= window:
                raise GenerationError(f"the prompt has {len(ids)} tokens, the context window (max_position_embeddings) "
                                      f"is {window}: shorten the prompt")
            max_tokens = min(max_tokens, window - len(ids))
        yield from decode(self.scorers(images), self.active_composer(), sampler, ids, xp=self.backend.xp,
                          max_tokens=max_tokens, to_backend=self.backend.asarray, tokenizer=self.tokenizer, stop=stop,
                          eos_ids=self.target.eos_token_ids if eos_ids is None else eos_ids)

    def generate(self, prompt: str | Sequence[int] | None = None, **kwargs):
        """Generated text for `prompt` (arguments as `stream`). transformers' way, an array of token ids (`input_ids=`
        with its `attention_mask`, or `**tok(texts, return_tensors="pt", padding=True)`) gives the array of prompt +
        generated ids (B, T + new), as transformers does (prtcore.hf_compat.generate_ids)."""
        return hf_generate(self, prompt, kwargs)


# ------------------------------------------------------------------------------------------------ facade
class PRTForCausalLM(Generative):
    """A target base model with zero or more portable rewards added to its log-probs.

        model = PRTForCausalLM.from_pretrained("path/to/new-base", "path/to/reward", backend="mlx")
        print(model.generate("Question: ...", max_tokens=64))
    """

    def __init__(self, backend: Backend, target: BaseLM, rewards: Sequence[RewardModel] = (),
                 lams: Sequence[float] | None = None, sources: Sequence[BaseLM | None] | None = None):
        self.backend, self.target = backend, target
        self.rewards = list(rewards)
        self.lams = [r.config.lam for r in self.rewards] if lams is None else lam_list(list(lams), len(self.rewards))
        self.sources = list(sources) if sources is not None else [target] * len(self.rewards)
        if len(self.sources) != len(self.rewards):
            raise ConfigError(f"sources: {len(self.sources)} given for {len(self.rewards)} rewards")
        self.vocab_size = check_same_tokenizer(
            {"target": target.tokenizer, **{f"source {i}": s.tokenizer for i, s in enumerate(self.sources) if s}}
        )
        self.composer = PRTComposer(tuple(self.lams), self.vocab_size) if self.rewards else None

    def active_composer(self):
        return self.composer or BaseComposer(self.vocab_size)

    def base_models(self) -> list[BaseLM]:
        return [self.target] + [s for s in self.sources if s is not None and s is not self.target]

    def id_readers(self) -> list:
        return self.base_models() + [r for r in self.rewards if not r.reads_source_hidden]

    @classmethod
    def from_pretrained(cls, base, reward=None, backend: str | Backend | None = None, *, source=None,
                        lam: float | Sequence[float] | None = None, verbose: bool = False, **options) -> "PRTForCausalLM":
        """Load the target `base` and the reward artifact(s) `reward` (a path or a list of paths).

        `source`: the base model the reward was trained on, needed by `linear`/`transformer` rewards (their
        input is the source's hidden states) and LoRA twins (the adapter's frozen weights); defaults to the
        path the artifact records, or to `base` when that is the same model. `lam` overrides the trained λ.
        `options` go to the backend's loader (dtype, device, quantize, trust_remote_code, ...). Loading is quiet
        (prtcore.quiet); `verbose=True` shows the libraries' progress bars and warnings.
        """
        with quiet_loading(verbose):
            paths = [] if reward is None else [reward] if isinstance(reward, (str, os.PathLike)) else reward
            if not isinstance(paths, (list, tuple)):
                raise ConfigError(f"reward={shown(reward)}: expected a reward artifact path or a list of them")
            for i, path in enumerate(paths):
                _path_arg(path, f"reward[{i}]")
            _path_arg(base, "base")
            _path_arg(source, "source", optional=True)
            lams = lam_list(lam, len(paths))
            backend = _backend(backend)
            target = backend.load_base(base, **options)
            target_dir = target.path if target.path is not None else base  # a Hub id's snapshot directory
            loaded_sources: dict[str, BaseLM] = {str(Path(target_dir).resolve()): target}
            rewards, sources, used_sources, adapted = [], [], [], []
            for path in paths:
                artifact = RewardArtifact.open(path)
                check_artifact_tokenizer(artifact, target, backend)
                src = resolve_source(artifact, source, remote_code=bool(options.get("trust_remote_code")))
                kind = artifact.config.reward_kind
                source_lm = None
                if kind.needs_source(artifact.config):
                    key = str(Path(src).resolve())
                    if key not in loaded_sources:
                        loaded_sources[key] = backend.load_base(src, **options)
                    source_lm = loaded_sources[key]
                rewards.append(backend.load_reward(artifact, source_lm))
                sources.append(source_lm if kind.reads_source_hidden else None)
                if source_lm is not None:
                    used_sources.append(source_lm)
                    if not kind.reads_source_hidden:
                        adapted.append((rewards[-1], source_lm))
            # a LoRA twin alone on a source nothing else runs folds its adapter in: one plain model per token
            users = Counter(id(s) for s in used_sources)
            for reward, source_lm in adapted:
                if source_lm is not target and users[id(source_lm)] == 1 and source_lm.vision is None:
                    reward.fuse()
            return cls(backend, target, rewards, lams, [s for s in sources] or None)

    # ---------------------------------------------------------------------------------------- scoring
    def vision_encoders(self) -> list[VisionEncoder]:
        return super().vision_encoders() + [r.vision for r in self.rewards if r.vision is not None]

    def __call__(self, ids=None, images=None, *, input_ids=None, attention_mask=None) -> PRTOutput:
        """Composed log-probs for (B, T) token ids (a backend array or nested lists of ints; `input_ids=` as in
        transformers, with an all-ones `attention_mask`).

        `images`: for ids with expanded image placeholders (`prepare`), one prtcore.vision.Images (or None) per
        row (a single Images for one row)."""
        ops = self.backend.xp
        ids = self.as_batch(call_ids(ids, input_ids, attention_mask))
        extra = self.call_images(images)
        hidden_needed = {id(s) for r, s in zip(self.rewards, self.sources) if s is not None and r.reads_source_hidden}
        target_out = self.target.forward(ids, hidden=id(self.target) in hidden_needed, **extra)
        outputs = {id(self.target): target_out}
        base_logprobs = ops.log_softmax(align_vocab(target_out.logits, self.vocab_size, xp=ops))
        if not self.rewards:
            return PRTOutput(base_logprobs, base_logprobs, ops.full_like(base_logprobs, 0.0))
        reward_logits = []
        for reward, source in zip(self.rewards, self.sources):
            hidden = None
            if source is not None and reward.reads_source_hidden:
                if id(source) not in outputs:
                    outputs[id(source)] = source.forward(ids, hidden=True, **extra)
                hidden = outputs[id(source)].hidden
            reward_logits.append(reward.forward(ids, source_hidden=hidden, **extra))
        logprobs = self.composer(target_out.logits, *reward_logits, xp=ops)
        total = None
        for r, lam in zip(reward_logits, self.lams):
            term = align_vocab(r, self.vocab_size, fill=0.0, xp=ops) / lam
            total = term if total is None else total + term
        return PRTOutput(logprobs, base_logprobs, total)

    def scorers(self, images: Images | None = None) -> list[Scorer]:
        """Fresh scorers (each with its own cache) for the decoding loop: the target, then each reward."""
        reading = {id(s) for r, s in zip(self.rewards, self.sources) if s is not None and r.reads_source_hidden}
        target = _BaseScorer(self.target, id(self.target) in reading, images)
        base_scorers = {id(self.target): target}
        out: list[Scorer] = [target]
        for reward, source in zip(self.rewards, self.sources):
            feeder, runs = None, False
            if source is not None and reward.reads_source_hidden:
                if id(source) not in base_scorers:
                    base_scorers[id(source)] = _BaseScorer(source, True, images)
                    runs = True
                feeder = base_scorers[id(source)]
            out.append(_RewardScorer(reward, feeder, runs, images))
        return out

class ComposedLM(Generative):
    """Base models combined by a logit-arithmetic baseline: EFT or proxy-tuning (three models) or a base alone.

        eft = ComposedLM.from_pretrained("big-base", finetuned="small-ft", source="small-base", method="eft")
    """

    METHODS = ("eft", "proxy", "base")

    def __init__(self, backend: Backend, models: Sequence[BaseLM], method: str = "eft", alpha: float = 1.0):
        if method not in self.METHODS:
            raise ConfigError(f"composition method {method!r}: must be one of {', '.join(self.METHODS)}")
        needed = 1 if method == "base" else 3
        if len(models) != needed:
            raise ConfigError(f"composition {method!r} needs {needed} models (target, fine-tuned, source), got {len(models)}")
        self.backend, self.models, self.target = backend, list(models), models[0]
        roles = ("target", "fine-tuned", "source")
        self.vocab_size = check_same_tokenizer({role: m.tokenizer for role, m in zip(roles, self.models)})
        self.composer = {"eft": EFTComposer(self.vocab_size), "proxy": ProxyTuningComposer(alpha, self.vocab_size),
                         "base": BaseComposer(self.vocab_size)}[method]

    @classmethod
    def from_pretrained(cls, target, *, finetuned=None, source=None, method: str = "eft", alpha: float = 1.0,
                        backend: str | Backend | None = None, verbose: bool = False, **options) -> "ComposedLM":
        if method not in cls.METHODS:
            raise ConfigError(f"composition method {shown(method)}: must be one of {', '.join(cls.METHODS)}")
        alpha = number(alpha, "alpha")
        paths = [target] + ([] if method == "base" else [finetuned, source])
        if any(p is None for p in paths):
            raise ConfigError(f"composition {method!r} needs a fine-tuned model and its source (--ft and --source)")
        for name, path in zip(("target", "finetuned", "source"), paths):
            _path_arg(path, name)
        backend = _backend(backend)
        with quiet_loading(verbose):
            return cls(backend, [backend.load_base(p, **options) for p in paths], method, alpha)

    def active_composer(self):
        return self.composer

    def base_models(self) -> list[BaseLM]:
        return self.models

    def scorers(self, images: Images | None = None) -> list[Scorer]:
        return [_BaseScorer(m, False, images) for m in self.models]

    def __call__(self, ids, images=None):
        """Composed log-probs (B, T, N) for token ids (`images` as for PRTForCausalLM)."""
        ids = self.as_batch(ids)
        extra = self.call_images(images)
        return self.composer(*[m.forward(ids, **extra).logits for m in self.models], xp=self.backend.xp)


# ------------------------------------------------------------------------------------------------ arguments
def _path_arg(value, name: str, *, optional: bool = False) -> None:
    if not (isinstance(value, (str, os.PathLike)) or optional and value is None):
        raise ConfigError(f"{name}={shown(value)}: expected a directory or a Hugging Face Hub id (a str or a Path)")


def _backend(backend) -> Backend:
    """The Backend named `backend` (None: the default), or `backend` itself."""
    from .plugins import get_backend

    if isinstance(backend, Backend):
        return backend
    if backend is not None and not isinstance(backend, str):
        raise ConfigError(f"backend={shown(backend)}: expected a backend name such as 'mlx' or 'torch', or a Backend")
    return get_backend(backend)


def lam_list(lam, count: int) -> list[float] | None:
    """One λ per reward from `lam`: None (the trained ones), one number for all, or a list of `count`."""
    from .config import LAM_RULE, is_lam

    def one(value, name):
        if not is_lam(number(value, name, positive=True)):
            raise ConfigError(f"{name}={shown(value)}: must be a number {LAM_RULE}")
        return float(value)

    if lam is None:
        return None
    if not isinstance(lam, (list, tuple)):
        return [one(lam, "lam")] * count
    if len(lam) != count:
        raise ConfigError(f"lam={shown(lam)}: {len(lam)} values for {count} rewards")
    return [one(v, f"lam[{i}]") for i, v in enumerate(lam)]


def _checked_images(images):
    """`images` for `prepare`: None, an Images, an image (a path, a PIL image, an array) or a list of them."""
    def one(image):
        return isinstance(image, (str, os.PathLike, np.ndarray)) or hasattr(image, "convert")

    if images is None or isinstance(images, Images) or one(images) or (
            isinstance(images, (list, tuple)) and all(one(i) for i in images)):
        return images
    raise ConfigError(f"images={shown(images)}: expected an image (a path, a PIL image or an array) or a list of them")


def check_artifact_tokenizer(artifact: RewardArtifact, target: BaseLM, backend: Backend) -> None:
    from .artifacts import tokenizer_fingerprint

    recorded = artifact.meta.get("tokenizer", {}).get("fingerprint")
    if recorded and recorded == tokenizer_fingerprint(target.tokenizer):
        return
    if not artifact.has_tokenizer:
        raise ConfigError(f"{artifact.path}: the artifact has no tokenizer files to check the target's against")
    check_same_tokenizer({"target": target.tokenizer, f"reward {artifact.path}": backend.load_tokenizer(artifact.path)})


def resolve_source(artifact: RewardArtifact, source=None, *, remote_code: bool = False) -> str:
    """The local directory of the model the reward was trained on: `source` (a path or a Hub id) when given, else
    the path the artifact records, else the Hub id it records at the recorded commit (a fully fine-tuned twin,
    which needs no source, falls back to its own directory). When the artifact records a fingerprint of the
    source's weights, the directory found (`source` included) must match it (prtcore.hub.check_source_weights)."""
    from .errors import PRTError
    from .hub import check_source_weights, resolve_model

    recorded = artifact.source
    if not artifact.config.reward_kind.needs_source(artifact.config):  # a full twin: none is loaded
        if source is not None:
            return str(source)
        return recorded["path"] if recorded.get("path") and Path(recorded["path"]).exists() else str(artifact.path)
    if source is not None:
        path = resolve_model(source, what="source model", remote_code=remote_code)
    elif recorded.get("path") and Path(recorded["path"]).exists():
        path = Path(recorded["path"])
    elif isinstance(recorded.get("hub_id"), str):
        try:
            path = resolve_model(recorded["hub_id"], revision=recorded.get("revision"), what="source model",
                                 remote_code=remote_code)
        except PRTError as e:
            raise ConfigError(f"{artifact.path}: the reward needs its source model, which cannot be resolved ({e}); "
                              "pass source=PATH (CLI: --source PATH)") from None
    else:
        raise ConfigError(
            f"{artifact.path}: the reward needs its source model {recorded.get('path')!r}, which is not found; "
            "pass source=PATH (CLI: --source PATH)"
        )
    check_source_weights(recorded, path, reward=artifact.path)
    return str(path)
