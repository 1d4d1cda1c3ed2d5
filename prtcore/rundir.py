"""A training run's output directory, handled as a transaction.

    with RunDirectory(output_dir, record, inputs={"--model": model, "--data": data}, resume=False) as run:
        ...                     # load and check the model, the data and the reward
        run.begin()             # from here on the directory is the new run's
        ...                     # train

Refused before anything is written: an output path that is a file, that is or lies inside an input (or holds
one), a directory that holds files prt did not write as a run, a previous run unless `resume` (continue it) or
`overwrite` (replace it) says what to do, and a resume whose settings differ from the run's (the fields named).

A lock file next to the directory refuses a second run into it; the lock of a killed run is detected (its process
is gone) and taken over. With `overwrite`, `begin()` renames the previous run aside; it is deleted once the new run
has a checkpoint or ends, and put back if the new run fails before its first checkpoint. A kill in between is
repaired by the next run into the directory.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

from .artifacts import write_json_atomic
from .errors import ConfigError, TrainingError

RUN_RECORD = "prt_run.json"
RUN_FORMAT = "prtcore.run"
LEGACY_RUN_FILES = ("checkpoint", "metrics.jsonl", "summary.json")  # what runs of earlier releases left
MIN_FREE_BYTES = 64 * 2**20
# settings a resume may change: how long to train (a run may be extended) and how often to report
RESUME_MAY_CHANGE = ("training.iters", "training.epochs", "training.steps_per_report")


class RunDirectory:
    def __init__(self, path, record: dict, *, inputs: dict, resume: bool = False, overwrite: bool = False):
        from .reporting import is_main_process

        if resume and overwrite:
            raise ConfigError("--resume and --overwrite: choose one")
        self.given = Path(path)
        self.path = Path(os.path.abspath(path))  # "." has no name to put a lock or an aside copy next to
        self.record = {"format": RUN_FORMAT, **record}
        self.inputs, self.resume, self.overwrite = inputs, resume, overwrite
        self.lock = self.path.with_name(f".{self.path.name}.prt-lock")
        self.aside: Path | None = None
        self.created = self.started = False
        self.main = is_main_process()  # other ranks of a launch leave the directory to rank 0

    # ------------------------------------------------------------------------------------------ transaction
    def __enter__(self) -> "RunDirectory":
        check_not_an_input(self.given, self.inputs)
        if not self.main:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrainingError(f"{self.given}: output directory is not writable ({e.strerror})") from None
        take_lock(self.lock)
        try:
            recover(self.path)
            self._check_previous_run()
            self.created = not self.path.exists()
            preflight(self.path)
        except BaseException:
            self._release()
            raise
        return self

    def resolve_model(self, model, **options) -> Path:
        """The local directory of `model` (a Hub id downloads: prtcore.hub), which must not hold the output."""
        from .hub import resolve_model

        path = resolve_model(model, **options)
        check_not_an_input(self.given, {"--model": path})
        return path

    def begin(self, reporter=None) -> None:
        """The new run's model, data and settings are checked: set a replaced run aside, write the run record.
        With the run's `reporter`, the replaced run is deleted at the first report after a checkpoint."""
        self.started = True
        if not self.main:
            return
        if self.overwrite and is_previous_run(self.path):
            self.aside = self.path.with_name(f".{self.path.name}.replaced-{os.getpid()}")
            os.replace(self.path, self.aside)
            self.path.mkdir()
        write_json_atomic(self.path / RUN_RECORD, self.record)
        if self.aside is not None and reporter is not None:
            reporter.listeners.append(self._drop_aside_once_checkpointed)

    def _drop_aside_once_checkpointed(self) -> None:
        if self.aside is not None and checkpoint_exists(self.path):
            self._drop_aside()

    def __exit__(self, exc_type, exc, tb):
        if not self.main:
            return False
        try:
            if exc_type is None or checkpoint_exists(self.path):
                self._drop_aside()
            elif self.aside is not None:  # failed before its first checkpoint: the previous run comes back
                shutil.rmtree(self.path, ignore_errors=True)
                os.replace(self.aside, self.path)
            elif self.created and not self.started and self.path.is_dir() and not any(self.path.iterdir()):
                self.path.rmdir()  # refused before it began: leave no empty directory behind
        finally:
            self._release()
        return False

    def _drop_aside(self) -> None:
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None

    def _release(self) -> None:
        self.lock.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------------ checks
    def _check_previous_run(self) -> None:
        out = self.path
        foreign = foreign_files(out)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ConfigError(f"{out}: holds files prt did not write as a training run ({shown}); choose a new or "
                              "empty output directory")
        previous = is_previous_run(out)
        if previous and not (self.resume or self.overwrite):
            from .checkpoints import checkpoint_step

            step = checkpoint_step(out)
            what = f"the checkpoint of a previous run (step {step})" if step is not None else "a previous run"
            raise ConfigError(f"{out}: holds {what}; pass --resume to continue it or --overwrite to replace it")
        if self.resume and previous:
            differences = settings_differences(read_record(out), self.record)
            if differences:
                raise ConfigError(f"{out}: --resume with other settings than the run's: "
                                  f"{'; '.join(differences)}; resume with the same settings or pass --overwrite")
        if self.resume and not checkpoint_exists(out):
            warnings.warn(f"{out}: no checkpoint to resume from; starting a new run")


def check_not_an_input(out: Path, inputs: dict) -> None:
    """Refuse an output directory that is an input, lies inside one, or holds one (inputs that are not local
    paths, such as Hub ids, are checked once resolved)."""
    target = out.resolve()
    for flag, value in inputs.items():
        if value is None or not os.path.exists(value):
            continue
        source = Path(value).resolve()
        if target == source or source in target.parents:
            raise ConfigError(f"--output-dir {out}: is or lies inside the input {flag} {value}; training would write "
                              "into it")
        if target in source.parents:
            raise ConfigError(f"--output-dir {out}: holds the input {flag} {value}; choose an output directory "
                              "outside the inputs")


def is_previous_run(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in (RUN_RECORD, *LEGACY_RUN_FILES))


def foreign_files(path: Path) -> list[str]:
    """The files of `path` that show it is not a prt training run: everything when it is not one (hidden files
    excepted: .DS_Store, .gitkeep), nothing when it is."""
    if not path.is_dir() or is_previous_run(path):
        return []
    return sorted(p.name for p in path.iterdir() if not p.name.startswith("."))


def checkpoint_exists(path: Path) -> bool:
    from .checkpoints import checkpoint_step

    return checkpoint_step(path) is not None


def read_record(path: Path) -> dict | None:
    """The run record of run directory `path`. A run of an earlier release wrote none: its reward artifact's
    settings stand in (`"partial": True`), or None when it has no artifact yet."""
    from .artifacts import CONFIG_NAME, read_json

    if (path / RUN_RECORD).exists():
        return read_json(path / RUN_RECORD, "training run record")
    if (path / CONFIG_NAME).exists():
        reward = read_json(path / CONFIG_NAME, "reward config (prt_config.json)").get("reward")
        return {"reward": reward, "partial": True} if isinstance(reward, dict) else None
    return None


def settings_differences(old: dict | None, new: dict) -> list[str]:
    """'field: old → new' for every setting that differs between two run records (a partial old record: for the
    fields it has)."""
    if old is None:
        return []
    flat_old, flat_new = _flatten(old), _flatten(new)
    keys = set(flat_old) if old.get("partial") else set(flat_old) | set(flat_new)
    keys = sorted(keys - set(RESUME_MAY_CHANGE) - {"format", "partial"})
    return [f"{k} {flat_old.get(k)!r} → {flat_new.get(k)!r}" for k in keys if flat_old.get(k) != flat_new.get(k)]


def _flatten(record: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def recover(path: Path) -> None:
    """Finish what a killed `--overwrite` left: put the previous run back when the new one has no checkpoint,
    else delete it."""
    asides = sorted(path.parent.glob(f".{path.name}.replaced-*"), key=lambda p: p.stat().st_mtime)
    if not asides:
        return
    if not checkpoint_exists(path):
        shutil.rmtree(path, ignore_errors=True)
        os.replace(asides.pop(), path)
    for stale in asides:
        shutil.rmtree(stale, ignore_errors=True)


def preflight(path: Path, needed_bytes: int = 0) -> None:
    """Refuse an output directory that cannot be written, or a disk without room, before training starts."""
    if path.exists() and not path.is_dir():
        raise TrainingError(f"{path}: output path exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".prt-write-test-{os.getpid()}"  # one per process: ranks of a launcher share the dir
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise TrainingError(f"{path}: output directory is not writable ({e.strerror})") from None
    free = shutil.disk_usage(path).free
    needed = max(MIN_FREE_BYTES, 3 * needed_bytes)  # final artifact, best artifact, checkpoint
    if free < needed:
        raise TrainingError(f"{path}: only {free / 2**20:.0f} MiB free on disk, training needs about {needed / 2**20:.0f} MiB")


# ------------------------------------------------------------------------------------------------ lock
def take_lock(lock: Path) -> None:
    """Create `lock` for this process, taking over the lock of a process that is gone."""
    mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is None:  # stale: its process is gone
                lock.unlink(missing_ok=True)
                continue
            out = lock.with_name(lock.name[1:].removesuffix(".prt-lock"))
            raise TrainingError(f"{out}: another training run is writing here ({holder}); wait for it to end, or "
                                f"delete {lock} if that run is gone") from None
        except OSError as e:
            raise TrainingError(f"{lock}: cannot create the run's lock file ({e.strerror})") from None
        with os.fdopen(fd, "w") as f:
            f.write(mine)
        return
    raise TrainingError(f"{lock}: cannot take the run's lock file")


def _lock_holder(lock: Path) -> str | None:
    """Who holds `lock` ("pid N on HOST since T"), or None when it is stale."""
    try:
        info = json.loads(lock.read_text(encoding="utf-8"))
        pid, host, started = int(info["pid"]), str(info["host"]), float(info["started"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # being written this instant, or cut by a kill: stale once it is a few seconds old
        try:
            return "a run that is starting" if time.time() - lock.stat().st_mtime < 5 else None
        except OSError:
            return None
    if host == socket.gethostname() and not process_alive(pid):
        return None
    return f"pid {pid} on {host} since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
