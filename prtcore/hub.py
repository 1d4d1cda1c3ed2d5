"""Models and reward artifacts named by Hugging Face Hub id, and where a reward's source model came from.

Users name models as mlx-lm, transformers and peft accept them: a local directory, or a Hub id `org/name` with an
optional `@revision` (a branch, a tag or a commit). `resolve_model` turns either into a local directory:

- an existing local path wins (a directory `org/name` in the current directory is that directory);
- a string shaped like a Hub id is fetched through `huggingface_hub.snapshot_download`, which brings its cache,
  `HF_HUB_OFFLINE`, `HF_HOME` / `HF_HUB_CACHE`, `HF_ENDPOINT` and the token (`HF_TOKEN`, `hf auth login`) exactly
  as huggingface_hub reads them. Only configuration, tokenizer, safetensors, JSON, chat-template and model-card
  files are fetched (`ALLOW_PATTERNS`): never pickled weights (*.bin, *.pt, *.pth, *.pkl); a model's own Python
  code (*.py) only when the caller allows remote code;
- anything else is one line of error, as is every failure of the Hub (offline and not cached, no such repo,
  gated, no such revision, no network), naming the id and what to do.

A directory of the Hub cache (`.../models--org--name/snapshots/<commit>/`) knows its id and commit:
`hub_origin(path)`. Loaded base models remember them (`BaseLM.hub_id`, `BaseLM.revision`, set by the backends'
`load_base` through `accepts_hub_ids`), and a reward artifact records them for its source model, with a cheap
fingerprint of the source's weights (`weights_fingerprint`) that loading checks.

Importing this module imports no huggingface_hub: it is imported when a Hub id is actually resolved.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import struct
from pathlib import Path

from .errors import ConfigError, ModelLoadError

# What is fetched from a Hub repo: configs, tokenizers, safetensors weights, chat templates, the model card.
ALLOW_PATTERNS = (
    "*.json", "*.safetensors", "*.jinja", "*.txt", "*.tiktoken", "tiktoken.model", "tokenizer.model",
    "spiece.model", "sentencepiece*.model", "README.md",
)
# Fetched only when remote code is allowed (trust_remote_code=True): the model's own Python modules.
CODE_PATTERNS = ("*.py",)

_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
HUB_ID = re.compile(rf"(?P<repo>{_PART}/{_PART})(?:@(?P<revision>[^\s@]+))?")
COMMIT = re.compile(r"[0-9a-f]{40}")
ID_FORM = "org/name[@revision]"


def parse_hub_id(name) -> tuple[str, str | None] | None:
    """(repo id, revision or None) when `name` is a string shaped like a Hub id `org/name[@revision]`, else None.

    A `pathlib.Path` is always a local path. The rules are the Hub's: letters, digits, `-`, `_`, `.`, at most 96
    characters a part, no `--` or `..`, no leading or trailing `-` / `.`, no `.git` ending."""
    if not isinstance(name, str):
        return None
    match = HUB_ID.fullmatch(name)
    if match is None:
        return None
    repo, revision = match.group("repo"), match.group("revision")
    if "--" in repo or ".." in repo or repo.endswith(".git"):
        return None
    if revision is not None and (".." in revision or revision.startswith("/") or revision.endswith("/")):
        return None
    return repo, revision


def resolve_model(name_or_path, *, revision: str | None = None, what: str = "model",
                  error: type[Exception] = ModelLoadError, remote_code: bool = False) -> Path:
    """The local directory of `name_or_path`: a local path as it is (when it exists), else the Hub id's snapshot
    in the Hugging Face cache (downloaded when online and not cached yet).

    `revision` (a branch, a tag or a commit) applies to a Hub id; `org/name@revision` says the same. `what` names
    the thing in messages ("model", "reward artifact", ...) and `error` is the PRTError class raised for a missing
    local path or a failure of the Hub. `remote_code` also fetches the repo's *.py files (for trust_remote_code)."""
    text = os.fspath(name_or_path)
    if _exists(Path(text)):
        return Path(text)
    parsed = parse_hub_id(name_or_path)
    if parsed is None:
        raise error(f"{text}: {what} directory not found (and not a Hugging Face Hub id, {ID_FORM})")
    repo_id, named = parsed
    if named is not None and revision is not None and named != revision:
        raise ConfigError(f"{text}: names revision {named!r}, but revision={revision!r} was also given")
    return _snapshot(repo_id, named or revision, what=what, error=error, remote_code=remote_code)


def resolved_commit(name_or_path, *, revision: str | None = None, what: str = "model") -> str | None:
    """The commit a Hub id (at `revision`, default main) resolves to, from its snapshot directory; None for a
    local directory outside the Hub cache."""
    origin = hub_origin(resolve_model(name_or_path, revision=revision, what=what))
    return origin[1] if origin else None


def hub_origin(path) -> tuple[str, str] | None:
    """(repo id, commit) of a snapshot directory of the Hub cache (`.../models--org--name/snapshots/<commit>`),
    else None."""
    if path is None:
        return None
    path = Path(path)
    parent, repo = path.parent, path.parent.parent.name
    if parent.name != "snapshots" or not COMMIT.fullmatch(path.name) or not repo.startswith("models--"):
        return None
    repo_id = repo[len("models--"):].replace("--", "/")
    return (repo_id, path.name) if parse_hub_id(repo_id) else None


def accepts_hub_ids(load_base):
    """Decorates a backend's `load_base(self, path, **options)`: `path` and the `adapter_base` option may be Hub
    ids (resolved with `resolve_model`, *.py fetched only with trust_remote_code), and the loaded model
    remembers where it came from: `hub_id` and `revision` (the commit), both None for a local directory."""

    @functools.wraps(load_base)
    def wrapper(self, path, **options):
        remote = bool(options.get("trust_remote_code"))
        local = resolve_model(path, remote_code=remote)
        if options.get("adapter_base") is not None:
            options["adapter_base"] = resolve_model(options["adapter_base"], remote_code=remote)
        lm = load_base(self, local, **options)
        origin = hub_origin(local)
        try:
            lm.hub_id, lm.revision = origin if origin else (None, None)
        except AttributeError:  # a model class with fixed attributes: it keeps no origin
            pass
        return lm

    return wrapper


# ------------------------------------------------------------------------------------------------ the Hub
def _snapshot(repo_id: str, revision: str | None, *, what: str, error, remote_code: bool) -> Path:
    label = repo_id if revision is None else f"{repo_id}@{revision}"
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise error(f"{label}: no such local directory; a Hugging Face Hub id needs huggingface_hub "
                    "(pip install huggingface_hub)") from None
    patterns = list(ALLOW_PATTERNS) + (list(CODE_PATTERNS) if remote_code else [])
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as e:  # huggingface_hub's and httpx's errors: each becomes one line
        raise error(_hub_failure(label, repo_id, revision, what, e)) from None
    if not any(folder.glob("*.safetensors")):
        raise error(f"{label}: the Hugging Face Hub snapshot {folder} has no *.safetensors weights (prtcore never "
                    "loads pickled *.bin / *.pt weights)")
    return folder


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _hub_failure(label: str, repo_id: str, revision: str | None, what: str, e: Exception) -> str:
    """One line for an error of snapshot_download."""
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    cache = constants.HF_HUB_CACHE
    login = "log in with `hf auth login` or set HF_TOKEN"
    if isinstance(e, hf.IncompleteSnapshotError):
        return (f"{label}: the cached snapshot {e.snapshot_path} is incomplete ({_first_line(e).split(': ', 1)[-1]}); "
                "run once online (HF_HUB_OFFLINE=0) to complete it")
    if isinstance(e, hf.LocalEntryNotFoundError):
        cause = e.__cause__
        missing = f"the {what} is not in the Hugging Face cache {cache}"
        if revision is not None and (Path(cache) / ("models--" + repo_id.replace("/", "--"))).is_dir():
            missing = f"revision {revision!r} of {repo_id} is not in the Hugging Face cache {cache}"
        if isinstance(cause, hf.OfflineModeIsEnabled) or (cause is None and constants.HF_HUB_OFFLINE):
            return (f"{label}: no such local directory, and {missing} while offline (HF_HUB_OFFLINE=1): run once "
                    "online to download it, or set HF_HUB_OFFLINE=0")
        if cause is None:
            return f"{label}: no such local directory, and {missing}"
        return (f"{label}: no such local directory, {missing}, and the Hub cannot be reached "
                f"({type(cause).__name__}: {_first_line(cause)}): check the network (or HF_ENDPOINT)")
    if isinstance(e, hf.GatedRepoError):
        return (f"{label}: the Hugging Face Hub repo {repo_id} is gated: accept its conditions on "
                f"https://huggingface.co/{repo_id}, then {login}")
    if isinstance(e, hf.RepositoryNotFoundError):
        return (f"{label}: no such local directory, and no Hugging Face Hub repo {repo_id} (if it is private, "
                f"{login})")
    if isinstance(e, hf.RevisionNotFoundError):
        return f"{label}: the Hugging Face Hub repo {repo_id} has no revision {revision!r} (a branch, a tag or a commit)"
    if isinstance(e, hf.DisabledRepoError):
        return f"{label}: the Hugging Face Hub repo {repo_id} is disabled"
    if isinstance(e, hf.HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            return f"{label}: the Hugging Face Hub refused access (HTTP {status}): {login}"
        return f"{label}: the Hugging Face Hub request failed (HTTP {status}: {_first_line(e)})"
    if isinstance(e, hf.HFValidationError):
        return f"{label}: not a valid Hugging Face Hub id ({_first_line(e)})"
    if isinstance(e, (ConnectionError, TimeoutError)) or type(e).__module__.startswith(("httpx", "httpcore")):
        return (f"{label}: cannot reach the Hugging Face Hub ({type(e).__name__}: {_first_line(e)}): check the "
                "network (or HF_ENDPOINT), or set HF_HUB_OFFLINE=1 to use the cache only")
    if isinstance(e, OSError):
        return f"{label}: cannot download from the Hugging Face Hub into {cache} ({_first_line(e)})"
    return f"{label}: cannot fetch from the Hugging Face Hub ({type(e).__name__}: {_first_line(e)})"


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


# ------------------------------------------------------------------------------------------------ provenance
FINGERPRINT_SCHEME = "st1"
FINGERPRINT_SAMPLES = 16
FINGERPRINT_SAMPLE_BYTES = 4096


def weights_fingerprint(path) -> str | None:
    """A cheap fingerprint of the weights in model directory `path`: "st1:" + a sha256, or None without any
    *.safetensors file.

    Reading multi-GB checkpoints whole at every load would cost seconds to minutes, so the hash covers, for each
    top-level *.safetensors file in name order: its name, its size, its header (the 8-byte length and the JSON
    that gives every tensor's name, dtype, shape and offsets) and 16 samples of 4 KiB at evenly spaced offsets of
    its data, the first at the data's start and the last at its end (a data part under 64 KiB is read whole).
    That is at most 64 KiB plus the header per file. A different model, another shape or dtype, a re-sharded or
    re-saved checkpoint, or weights trained further (which change nearly every value) all change it; a change
    confined to bytes between the samples does not."""
    files = sorted(p for p in Path(path).glob("*.safetensors") if p.is_file())
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        with open(file, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            n = min(n, max(size - len(head), 0))
            header = f.read(n)
            start = len(head) + n
            length = size - start
            samples, span = FINGERPRINT_SAMPLES, FINGERPRINT_SAMPLE_BYTES
            if length <= samples * span:
                offsets, span = [start], length
            else:
                offsets = [start + (length - span) * i // (samples - 1) for i in range(samples)]
            name = file.name.encode()
            digest.update(struct.pack("<QQ", len(name), size) + name + head + header)
            for offset in offsets:
                f.seek(offset)
                digest.update(f.read(span))
    return f"{FINGERPRINT_SCHEME}:{digest.hexdigest()}"


def source_provenance(source) -> dict:
    """What a reward artifact records about its source model (a BaseLM), besides its path and shape: `hub_id` and
    `revision` (the commit) when it came from the Hub, and `fingerprint` (`weights_fingerprint`) when its
    directory holds safetensors weights."""
    path = getattr(source, "path", None)
    out: dict = {}
    hub_id, revision = getattr(source, "hub_id", None), getattr(source, "revision", None)
    if not hub_id:
        origin = hub_origin(path)
        hub_id, revision = origin if origin else (None, None)
    if hub_id:
        out.update(hub_id=hub_id, revision=revision)
    if path is not None and Path(path).is_dir():
        fingerprint = weights_fingerprint(path)
        if fingerprint is not None:
            out["fingerprint"] = fingerprint
    return out


SKIP_CHECK_VARIABLE = "PRT_SKIP_SOURCE_CHECK"


def check_source_weights(recorded: dict, path, *, reward) -> None:
    """Refuse source model directory `path` when the reward at `reward` recorded a fingerprint of other weights.

    Rewards without a fingerprint (written before it existed, or from a source without safetensors) and
    fingerprints of another scheme are not checked; `PRT_SKIP_SOURCE_CHECK=1` skips the check (a source known to
    be the same model saved differently)."""
    expected = recorded.get("fingerprint")
    if not isinstance(expected, str) or not expected.startswith(f"{FINGERPRINT_SCHEME}:"):
        return
    if os.environ.get(SKIP_CHECK_VARIABLE, "") not in ("", "0"):
        return
    found = weights_fingerprint(path)
    if found == expected:
        return
    if recorded.get("hub_id"):
        trained_on = f"{recorded['hub_id']}@{recorded.get('revision')}"
    else:
        trained_on = recorded.get("path")
    raise ConfigError(
        f"{path}: the weights differ from those the reward {reward} was trained on ({trained_on}; fingerprint "
        f"{expected[:16]}, found {found[:16] if found else 'no safetensors'}): pass its own source model with "
        f"source=PATH (CLI: --source PATH), or set {SKIP_CHECK_VARIABLE}=1 if this is the same model saved differently"
    )
