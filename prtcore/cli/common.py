"""What the model-using commands (generate, chat, eval, explain) share: flags, model loading, prompts, sampling.

Conventions follow mlx-lm's CLI (`mlx_lm.generate`): `--model`, `--prompt` ('-' reads stdin), `--max-tokens`,
`--temp`, `--top-p`, `--top-k`, `--min-p`, `--seed`, `--system-prompt`, `--ignore-chat-template`,
`--max-kv-size`; prtcore adds `--reward DIR[:λ]` (repeatable) and `--compose {prt,eft,proxy,base}`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..config import LAM_RULE, SEED_RULE, is_lam, is_seed
from ..errors import ConfigError

# sampling flag -> prtcore.sampling.Sampler field (so a bad value is reported under the flag's name)
SAMPLING_FLAGS = {"temperature": "--temp", "top_p": "--top-p", "top_k": "--top-k", "min_p": "--min-p",
                  "repetition_penalty": "--repetition-penalty"}


def add_model_arguments(parser) -> None:
    """Flags shared by generate, chat, eval and explain."""
    parser.add_argument("--model", "--base", dest="model", required=True,
                        help="target base model directory (an adapter directory loads as its base + the adapter)")
    parser.add_argument("--reward", action="append", default=[], metavar="DIR[:λ]",
                        help="reward artifact, optionally with its λ; repeat to compose several")
    parser.add_argument("--source", help="the base model the reward (or --ft) was trained from, if it moved")
    parser.add_argument("--ft", help="fine-tuned source model for --compose eft/proxy: a checkpoint or an adapter "
                                     "directory (its base: --source)")
    parser.add_argument("--alpha", type=float, default=1.0, help="proxy-tuning weight")
    parser.add_argument("--backend", help="backend name (default: PRT_BACKEND, else mlx on Apple silicon, else torch)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own Python code")
    parser.add_argument("--max-kv-size", type=int, metavar="N",
                        help="bound each KV cache to N tokens (a rotating cache: backends with capability "
                             "rotating_cache, such as mlx)")


def add_compose_argument(parser) -> None:
    parser.add_argument("--compose", choices=("prt", "eft", "proxy", "base"), default="prt",
                        help="prt: base + rewards (default); eft / proxy: target + (ft − source); base: the target alone")


def add_sampling_arguments(parser, *, max_tokens: int = 256) -> None:
    parser.add_argument("--max-tokens", "-m", type=int, default=max_tokens)
    parser.add_argument("--temp", type=float, default=0.0, help="sampling temperature (0: greedy)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--min-p", type=float, default=0.0)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--system-prompt", help="system message when a chat template is used")
    parser.add_argument("--ignore-chat-template", action="store_true", help="feed the prompt as raw text")


def parse_reward(spec: str) -> tuple[str, float | None]:
    """'DIR' or 'DIR:λ'."""
    path, sep, lam = spec.rpartition(":")
    if not sep or Path(spec).exists():
        return spec, None
    try:
        value = float(lam)
    except ValueError:
        return spec, None
    if not is_lam(value):
        raise ConfigError(f"--reward {spec}: λ={lam} must be {LAM_RULE}")
    return path, value


def check_seed(value, flag: str = "--seed") -> None:
    """A --seed every framework accepts (prtcore.config's rule for seeds), or a ConfigError naming the flag."""
    if value is not None and not is_seed(value):
        raise ConfigError(f"{flag} {value}: must be {SEED_RULE}")


def check_sampling(args):
    """The Sampler of the sampling flags, built before any model loads; errors name the flag."""
    from ..sampling import Sampler

    if args.max_tokens < 0:
        raise ConfigError(f"--max-tokens {args.max_tokens}: must be >= 0")
    check_seed(args.seed)
    try:
        return Sampler(temperature=args.temp, top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
                       repetition_penalty=args.repetition_penalty, seed=args.seed)
    except ConfigError as e:
        text = str(e)
        for field, flag in SAMPLING_FLAGS.items():
            if text.startswith(f"sampling: {field}="):
                value = text.split("=", 1)[1].split(" ", 1)
                raise ConfigError(f"{flag} {value[0]}: {value[1] if len(value) > 1 else 'invalid'}") from None
        raise


def load_options(args) -> dict:
    return {"trust_remote_code": True} if getattr(args, "trust_remote_code", False) else {}


def load_model(args, compose: str | None = None):
    """PRTForCausalLM or ComposedLM from the shared flags (`compose` overrides --compose)."""
    from ..model import ComposedLM, PRTForCausalLM
    from ..plugins import get_backend

    compose = compose or getattr(args, "compose", "prt")
    options = load_options(args)
    if args.max_kv_size is not None and args.max_kv_size < 1:
        raise ConfigError(f"--max-kv-size {args.max_kv_size}: must be >= 1")
    if compose == "prt":
        from ..artifacts import RewardArtifact

        rewards = [parse_reward(r) for r in args.reward]
        if not rewards:
            raise ConfigError("--compose prt needs at least one --reward DIR (use --compose base for the base alone)")
        if args.ft:
            raise ConfigError("--ft is only used with --compose eft or proxy")
        for path, _ in rewards:  # a missing or broken artifact fails before any model loads
            RewardArtifact.open(path)
    elif args.reward:
        raise ConfigError(f"--reward is only used with --compose prt, not --compose {compose}")
    elif compose != "base" and (not args.ft or not args.source):
        raise ConfigError(f"--compose {compose}: EFT and proxy-tuning need --ft FINETUNED (a checkpoint or an adapter "
                          "directory) and --source BASE (the model it was fine-tuned from)")
    backend = get_backend(args.backend)
    check_max_kv_size(backend, args.max_kv_size)
    if compose == "prt":
        model = PRTForCausalLM.from_pretrained(args.model, [p for p, _ in rewards], backend=backend,
                                               source=args.source, **options)
        lams = [lam for _, lam in rewards]
        if any(lam is not None for lam in lams):
            model = PRTForCausalLM(model.backend, model.target, model.rewards,
                                   [lam if lam is not None else r.config.lam for lam, r in zip(lams, model.rewards)],
                                   model.sources)
    else:
        target = backend.load_base(args.model, **options)
        if compose == "base":
            model = ComposedLM(backend, [target], "base")
        else:
            model = ComposedLM(backend, [target] + load_finetuned(args, backend), compose, args.alpha)
    apply_max_kv_size(model, args.max_kv_size)
    return model


def load_finetuned(args, backend) -> list:
    """[fine-tuned, source] for EFT / proxy-tuning: --ft may be an adapter directory whose base is --source."""
    if not args.ft or not args.source:
        raise ConfigError("EFT and proxy-tuning need --ft FINETUNED (a checkpoint or an adapter directory) and "
                          "--source BASE (the model it was fine-tuned from)")
    options = load_options(args)
    return [backend.load_base(args.ft, adapter_base=args.source, **options), backend.load_base(args.source, **options)]


def check_max_kv_size(backend, size: int | None) -> None:
    """--max-kv-size needs a backend with capability "rotating_cache" (prtcore.capabilities)."""
    if size is not None and not backend.supports("rotating_cache"):
        having = backends_with("rotating_cache")
        raise ConfigError(f"--max-kv-size: the {backend.name!r} backend has no rotating KV cache (capability "
                          f"'rotating_cache'; installed backends with it: {', '.join(having) or 'none'})")


def backends_with(capability: str) -> list[str]:
    """The installed backends that have `capability` (each is instantiated: for messages, not for fast paths)."""
    from ..errors import PRTError
    from ..plugins import get_backend, installed_backend_names

    out = []
    for name in installed_backend_names():
        try:
            if get_backend(name).supports(capability):
                out.append(name)
        except (PRTError, ImportError):  # a backend that cannot start has no capability to offer
            continue
    return out


def apply_max_kv_size(model, size: int | None) -> None:
    """Give every model of `model` that caches token ids a rotating KV cache of `size` tokens
    (`backend.use_rotating_cache`, capability "rotating_cache": mlx-lm's RotatingKVCache on the mlx backend; a
    reward that reads the source's hidden states keeps its own full cache). A backend without one: a clear error
    rather than a silent no-op."""
    if size is None:
        return
    check_max_kv_size(model.backend, size)
    model.backend.use_rotating_cache(model, size)


def uses_template(model, args) -> bool:
    return not getattr(args, "ignore_chat_template", False) and bool(getattr(model.tokenizer, "chat_template", None))


def prompt_ids(model, text: str, args, history: list[dict] | None = None) -> list[int]:
    """Token ids of the prompt: through the chat template when the tokenizer has one."""
    if not uses_template(model, args):
        if history:
            raise ConfigError("a multi-turn chat needs a tokenizer with a chat template (not --ignore-chat-template)")
        return model.encode(text)
    messages = list(history or [])
    if args.system_prompt and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": args.system_prompt})
    messages.append({"role": "user", "content": text})
    return chat_ids(model, messages)


def chat_ids(model, messages: list[dict]) -> list[int]:
    """Token ids of a chat rendered with the template and a generation prompt (transformers 5 returns a
    BatchEncoding from apply_chat_template, which prtcore.data reads)."""
    from ..data import render_prompt

    return render_prompt(model.tokenizer, messages)


def stop_strings(model, args) -> list[str]:
    """--stop strings, plus the chat template's end-of-turn marker when the prompt went through the template."""
    from ..data import turn_end_marker

    stops = list(args.stop)
    if uses_template(model, args):
        marker = turn_end_marker(model.tokenizer)
        if marker and marker not in stops:
            stops.append(marker)
    return stops


def sampling_kwargs(args, model=None) -> dict:
    return {"max_tokens": args.max_tokens, "temperature": args.temp, "top_p": args.top_p, "top_k": args.top_k,
            "min_p": args.min_p, "repetition_penalty": args.repetition_penalty, "seed": args.seed,
            "stop": stop_strings(model, args) if model is not None else list(args.stop)}


def encode_continuation(tokenizer, text: str) -> list[int]:
    """Token ids of text that continues a prompt (no BOS or other special tokens added)."""
    try:
        ids = tokenizer.encode(text, add_special_tokens=False)
    except TypeError:
        ids = tokenizer.encode(text)
    return [int(i) for i in ids]


def check_output_file(path, flag: str) -> Path:
    """The file `flag` names, checked before any work so that none is lost at the end: not a directory, and a
    place where a file can be written (missing parent directories are created when it is written)."""
    path = Path(path)
    if "\0" in str(path):
        raise ConfigError(f"{flag} {str(path)!r}: a file name cannot hold a NUL byte")
    above = path.parent
    try:
        if path.is_dir():
            raise ConfigError(f"{flag} {path}: is a directory; give a file name")
        above = next(p for p in path.parents if p.exists())  # the parent, or where its creation would start
        if not above.is_dir():
            raise ConfigError(f"{flag} {path}: {above} is not a directory")
        with tempfile.TemporaryFile(dir=above):  # permissions, a read-only disk
            pass
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot write into {above} ({e.strerror or e})") from None
    return path


def write_output(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (the old file or the whole new one, never a part), making its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
