"""The reward artifact: a directory that either backend reads, whichever wrote it.

    prt_config.json            self-identifying ("format": "prtcore.reward", "format_version"), reward kind and
                               settings, λ, shared vocabulary length, tokenizer fingerprint, source model, training
    reward.safetensors         kinds stored as tensors (linear, transformer, ...): backend-neutral tensor names
                               (the kind's `tensor_shapes`, prtcore.kinds)
    adapter_config.json +      a LoRA twin, in PEFT's layout (loads with PeftModel.from_pretrained)
      adapter_model.safetensors
    config.json +              a fully fine-tuned twin: a checkpoint transformers and mlx-lm load as is
      model.safetensors
    (which files a kind needs, its RewardKind.files says)
    tokenizer files            copied from the source model
    README.md                  the model card, in the Hugging Face Hub's format (prtcore.modelcard)

Writes go to a temporary sibling directory that replaces the target only when complete, so an interrupted
save never leaves a half-written artifact and an existing one survives until the new one is whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import attrs
import numpy as np

from .config import RewardConfig
from .errors import ArtifactError, ConfigError
from .kinds import REWARD_WEIGHTS
from .rewards import check_reward_tensors, shape_fits  # noqa: F401  (shape_fits: importable from here as before)
from .tokens import shown

FORMAT = "prtcore.reward"
FORMAT_VERSION = 1
CONFIG_NAME = "prt_config.json"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
)


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's tokens in id order: equal fingerprints mean the same vocabulary."""
    from .sampling import tokenizer_vocab

    return hashlib.sha256(json.dumps(tokenizer_vocab(tokenizer)).encode()).hexdigest()


def read_json_value(path, what: str, error: type[Exception] = ArtifactError):
    """The parsed JSON value of file `path`; every failure is one `error` naming the file (and the line and column
    of invalid JSON)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, expected a {what}") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise error(f"{path}: cannot read the {what} ({getattr(e, 'strerror', None) or e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg})") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply") from None


def read_json(path: Path, what: str = "JSON file") -> dict:
    """Parse a JSON object; errors name the file, line and column."""
    data = read_json_value(path, what)
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def write_json_atomic(path: Path, data) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_safetensors(path: Path, dtypes: tuple[str, ...] | None = None) -> dict:
    """Validate a safetensors file's header and size without loading it (and, given `dtypes`, that every tensor
    has one of them, e.g. "F32"); return the header."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ArtifactError(f"{path}: truncated safetensors file ({size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100_000_000):
                raise ArtifactError(f"{path}: corrupt safetensors header (declares {n} header bytes, file has {size})")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: weights file not found") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path}: is a directory, expected a safetensors file") from None
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read the weights file ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArtifactError(f"{path}: corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{path}: corrupt safetensors header")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = info["data_offsets"]
            end = max(end, stop)  # TypeError for non-numeric offsets
        except (TypeError, KeyError, ValueError):
            raise ArtifactError(f"{path}: corrupt safetensors header entry {name!r}") from None
        if dtypes is not None and info.get("dtype") not in dtypes:
            raise ArtifactError(f"{path}: tensor {name!r} has dtype {info.get('dtype')}, expected {' or '.join(dtypes)}")
    if 8 + n + end != size:
        raise ArtifactError(f"{path}: truncated or corrupt safetensors file (expects {8 + n + end} bytes, has {size})")
    return header


FLOAT_DTYPES = ("F32", "F16", "BF16")  # what an artifact's weights may be stored as (safetensors' names)
NUMPY_DTYPES = ("F32", "F16")  # those NumPy reads


def load_numpy_tensors(path: Path) -> dict[str, np.ndarray]:
    """Load the weights of a reward or adapter as NumPy arrays (header validated first); every tensor must be
    float32 or float16 and finite, or an ArtifactError names the file and the tensor."""
    from safetensors.numpy import load_file

    check_safetensors(path, NUMPY_DTYPES)
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactError(f"{path}: cannot read tensors ({e})".splitlines()[0]) from None
    for name, value in tensors.items():
        if not np.isfinite(value).all():
            raise non_finite_error(path, name)
    return tensors


def non_finite_error(path, tensor: str) -> ArtifactError:
    """The error for a weight holding NaN or inf: a reward that diverged in training or a corrupted file. `path`: the
    file, or a checkpoint directory, whose model*.safetensors file holding `tensor` is then named."""
    path = Path(path)
    if path.is_dir():
        path = next((f for f in sorted(path.glob("model*.safetensors")) if tensor in check_safetensors(f)), path)
    return ArtifactError(f"{path}: tensor {tensor!r} holds NaN or inf values (a diverged or corrupted reward)")


def save_numpy_tensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)


@attrs.define
class RewardArtifact:
    """A validated reward artifact directory."""

    path: Path
    meta: dict
    config: RewardConfig

    @classmethod
    def open(cls, path) -> "RewardArtifact":
        """The artifact in directory `path`, or of Hugging Face Hub id `org/name[@revision]` (prtcore.hub)."""
        from .hub import resolve_model

        if not isinstance(path, (str, os.PathLike)):
            raise ArtifactError(f"reward artifact path {shown(path)}: expected a directory or a Hub id (a str or a Path)")
        path = resolve_model(path, what="reward artifact", error=ArtifactError)
        if not path.is_dir():
            raise ArtifactError(f"{path}: reward artifact directory not found")
        meta = read_json(path / CONFIG_NAME, "reward config (prt_config.json)")
        where = path / CONFIG_NAME
        if meta.get("format") != FORMAT:
            raise ArtifactError(f"{where}: field 'format' is {meta.get('format')!r}, expected {FORMAT!r}")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise ArtifactError(
                f"{where}: format_version {version!r} is not supported (this prtcore reads version {FORMAT_VERSION})"
            )
        for field, kind in (("reward", dict), ("vocab_size", int), ("weights", list), ("source", dict)):
            if not isinstance(meta.get(field), kind):
                raise ArtifactError(f"{where}: field {field!r} must be a {kind.__name__}, found {meta.get(field)!r}")
        try:
            config = RewardConfig.from_dict(meta["reward"], where=f"{where}: field 'reward'")
        except ConfigError as e:
            raise ArtifactError(f"{where}: {e}") from None
        artifact = cls(path, meta, config)
        for name in meta["weights"]:
            weights = artifact.file(name)
            if weights.suffix == ".safetensors":
                artifact._check_header(weights)
            elif not _exists(weights):
                raise ArtifactError(f"{where}: file {name!r} named in field 'weights' is missing")
        kind = config.reward_kind
        for names in kind.files(config):  # what the kind reads, whatever field 'weights' lists
            if not any(_exists(path / name) for name in names):
                raise ArtifactError(f"{path / names[0]}: missing; a {config.kind} reward ({kind.storage(config)}) "
                                    "needs it")
        return artifact

    def file(self, name: str) -> Path:
        """A file of the artifact; names that would leave the directory are refused."""
        if not isinstance(name, str) or not name:
            raise ArtifactError(f"{self.path / CONFIG_NAME}: invalid file name {name!r}")
        if not name.isprintable():  # control characters, a NUL byte, line breaks
            raise ArtifactError(f"{self.path / CONFIG_NAME}: invalid file name {name!r}")
        root = self.path.resolve()
        try:
            target = (root / name).resolve()
        except (OSError, ValueError, RuntimeError) as e:  # a name too long, a symlink loop
            raise ArtifactError(f"{self.path / CONFIG_NAME}: invalid file name {name[:80]!r} ({e})") from None
        if os.path.isabs(name) or (root not in target.parents and not _hub_blob(root, name, target)):
            raise ArtifactError(f"{self.path / CONFIG_NAME}: file {name!r} lies outside the artifact directory")
        return target

    def tensors(self, name: str = REWARD_WEIGHTS) -> dict[str, np.ndarray]:
        """The tensors of weights file `name` (see load_numpy_tensors); those of a kind stored as tensors checked
        by name and shape against prt_config.json."""
        path = self.file(name)
        tensors = load_numpy_tensors(path)
        if self.config.reward_kind.stored_as == "tensors" and path == self.file(REWARD_WEIGHTS):
            check_reward_tensors(tensors, self.config, *self._sizes(), str(path))
        return tensors

    def _sizes(self) -> tuple[int | None, int | None]:
        """(hidden size, output rows) that prt_config.json records (None where it does not say)."""
        return _size(self.source.get("hidden_size")), _size(self.meta.get("output_size"))

    def _check_header(self, path: Path) -> None:
        """A weights file's header: floating dtypes, and an output layer of (output_size, hidden_size)."""
        hidden, rows = self._sizes()
        for key, info in check_safetensors(path, FLOAT_DTYPES).items():
            if not key.endswith("lm_head.weight"):
                continue
            shape = tuple(info["shape"]) if isinstance(info.get("shape"), list) else None
            if not shape_fits(shape or (), (rows, hidden)):
                raise ArtifactError(f"{path}: tensor {key!r} has shape {shape}, expected ({rows}, {hidden}) "
                                    "(prt_config.json: output_size, source.hidden_size)")

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def source(self) -> dict:
        return self.meta["source"]

    @property
    def has_tokenizer(self) -> bool:
        return any((self.path / f).exists() for f in ("tokenizer.json", "tokenizer.model", "vocab.json"))


class ArtifactWriter:
    """Builds an artifact in a temporary sibling directory; `commit(meta)` moves it into place atomically.

        with ArtifactWriter(out_dir) as w:
            save_numpy_tensors(w.dir / REWARD_WEIGHTS, tensors)
            w.copy_tokenizer(source_dir)
            w.commit(meta)
    """

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".partial"))
        self.committed = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.committed:
            shutil.rmtree(self.dir, ignore_errors=True)
        return False

    def copy_tokenizer(self, source_dir) -> None:
        for name in TOKENIZER_FILES:
            src = Path(source_dir) / name
            if src.is_file():
                shutil.copy2(src, self.dir / name)

    def commit(self, meta: dict) -> Path:
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
        write_model_card(self.dir, meta, name=self.path.parent.name if self.path.name == WRITE_INTO_STAGING else self.path.name)
        write_json_atomic(self.dir / CONFIG_NAME, meta)
        _fsync_dir(self.dir)
        replace_dir(self.dir, self.path)
        self.committed = True
        return self.path


def write_model_card(directory: Path, meta: dict, *, name: str) -> None:
    """README.md, the artifact's model card in the Hub's format (prtcore.modelcard); part of every artifact. A
    card that cannot be rendered is a warning, never a lost save."""
    import warnings

    from .modelcard import CARD_NAME, render_model_card

    try:
        text = render_model_card(meta, name=name)
    except Exception as e:  # documentation only: the weights must still be written
        warnings.warn(f"{directory}: no model card written ({type(e).__name__}: {e})", stacklevel=3)
        return
    (Path(directory) / CARD_NAME).write_text(text, encoding="utf-8")


WRITE_INTO_STAGING = ".final.partial"  # write_into's staging directory; the card names the directory it fills


def write_into(directory: Path, save) -> None:
    """Write an artifact with `save(staging_dir)`, then move its files into `directory`, keeping the other files
    there (a training run's best/, checkpoint/, metrics). prt_config.json moves last, so a reader never sees a
    config whose weights are not yet in place."""
    directory = Path(directory)
    staging = directory / WRITE_INTO_STAGING
    shutil.rmtree(staging, ignore_errors=True)
    save(staging)
    names = sorted(p.name for p in staging.iterdir())
    for name in [n for n in names if n != CONFIG_NAME] + [CONFIG_NAME]:
        os.replace(staging / name, directory / name)
    staging.rmdir()


def replace_dir(new: Path, target: Path) -> None:
    """Put directory `new` at `target`; an existing `target` is kept until the new one is in place."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(new, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _hub_blob(root: Path, name: str, target: Path) -> bool:
    """`name` is a file of a Hugging Face Hub cache snapshot `root`: a link in the snapshot to its repo's blobs/."""
    from .hub import hub_origin

    return (hub_origin(root) is not None and root in Path(os.path.normpath(root / name)).parents
            and target.parent == root.parent.parent / "blobs")


def _size(value) -> int | None:
    """A positive size recorded in prt_config.json, else None (any size)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system
        return False


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def reward_meta(config: RewardConfig, *, source, tokenizer, vocab_size: int, output_size: int,
                weights: list[str], backend: str, extra: dict | None = None) -> dict:
    """The prt_config.json content every backend writes (source: the BaseLM the reward was trained on; its
    absolute path, and its Hub id and commit or a fingerprint of its weights: prtcore.hub.source_provenance)."""
    from .version import __version__
    from .hub import source_provenance

    src_config = source.config
    meta = {
        "reward": config.to_dict(),
        "vocab_size": int(vocab_size),
        "output_size": int(output_size),
        "tokenizer": {"fingerprint": tokenizer_fingerprint(tokenizer), "length": int(vocab_size)},
        "source": {
            "path": os.path.abspath(source.path) if source.path is not None else None,
            "model_type": src_config.get("model_type"),
            "hidden_size": int(source.hidden_size),
            "num_hidden_layers": src_config.get("num_hidden_layers"),
            "vocab_size": int(source.vocab_size),
            **source_provenance(source),
        },
        "weights": list(weights),
        "created_by": {"prtcore": __version__, "backend": backend},
    }
    meta.update(extra or {})
    return meta
