"""Atomic file writes: a kill during a save never leaves a truncated file behind."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable

from medft.runs.layout import RELATIVE
from medft.util.errors import MedftError

NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


class WriteError(MedftError, OSError):
    """A file of the run could not be written (disk full, read-only): one line, the earlier files stay whole."""


# What a full disk's message advises: resume= where the run has a checkpoints/last.ckpt, else to start again
RESUME_ADVICE = "and resume=RUN_DIR; files saved before are whole"
RESTART_ADVICE = f"and run the command again (the run saved no {RELATIVE.last_ckpt} yet: there is nothing to resume)"


def write_error(err: BaseException, path: str | Path | None = None) -> WriteError | None:
    """The one-line error for a failed write (full disk, quota, read-only place), or None for other errors."""
    code = getattr(err, "errno", None)
    rust = re.search(r"\(os error (\d+)\)", str(err)) if code is None else None  # safetensors: "... (os error 28)"
    if rust:
        code = int(rust.group(1))
        err = OSError(code, os.strerror(code))
    where = path or getattr(err, "filename", None) or "a file"
    if code in NO_SPACE or (isinstance(err, RuntimeError) and any(
            m in str(err) for m in ("unexpected pos", "PytorchStreamWriter failed", "file write failed"))):
        free = ""
        try:
            free = f", {shutil.disk_usage(Path(where).parent).free / 2**20:.0f} MiB free there"
        except (OSError, TypeError, ValueError):
            pass
        return WriteError(
            f"cannot write {where}: no space left on the device{free} — free some space (or point MEDFT_LOG_DIR at "
            f"another disk) {RESUME_ADVICE}"
        )
    if code in READ_ONLY:
        return WriteError(
            f"cannot write {where}: {getattr(err, 'strerror', None) or err} (read-only or not yours) — make it writable, "
            "or work on a copy of the run dir"
        )
    return None


def ensure_dir(path: str | Path, what: str, fix: str) -> Path:
    """Create the folder ``path`` (and its parents) or say in one line why it cannot be: a file in the way,
    no permission, a read-only disk. ``what`` names it for the user, ``fix`` says what to change."""
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        raise MedftError(f"{what} {path} cannot be created: {blocker} is a file, not a folder — {fix}") from None
    except OSError as err:
        raise MedftError(f"{what} {path} cannot be created ({err.strerror or err}) — {fix}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise MedftError(f"{what} {path} is not writable — {fix}")
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # 0-d tensors and numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _umask() -> int:
    """This process's umask (Linux: read, not set; elsewhere: set and put back)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from ``open()`` under this process's umask (0644 for umask 022)."""
    return 0o666 & ~_umask()


def _replace_atomic(path: str | Path, fill: Callable[[int, str], Any]) -> Path:
    """``fill(fd, tmp)`` writes and fsyncs a temp file beside ``path`` (mode by the umask), then it replaces ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise (write_error(err, path) or err) from None
    try:
        os.fchmod(fd, file_mode())  # mkstemp's 0600 would hide results from the group (shared clusters)
        fill(fd, tmp)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        one_line = write_error(err, path)
        if one_line is not None:
            raise one_line from None
        raise
    return path


def write_atomic(path: str | Path, write: Callable[[IO], Any], binary: bool = False) -> Path:
    """Call ``write(fh)`` on a temp file beside ``path``, fsync it, then rename it over ``path``."""

    def fill(fd: int, tmp: str) -> None:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())

    return _replace_atomic(path, fill)


def write_named_atomic(path: str | Path, write: Callable[[str], Any]) -> Path:
    """:func:`write_atomic` for writers that open the file by name themselves (safetensors' ``save_file``):
    ``write(tmp)``, then the umask's mode (the writer may have made it 0600 anew), fsync, rename."""

    def fill(fd: int, tmp: str) -> None:
        os.close(fd)
        write(tmp)
        os.chmod(tmp, file_mode())
        done = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(done)
        finally:
            os.close(done)

    return _replace_atomic(path, fill)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda fh: fh.write(data), binary=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda fh: fh.write(text))


def write_json_atomic(path: str | Path, obj: dict[str, Any]) -> Path:
    clean = {k: _jsonable(v) for k, v in obj.items()}
    return write_text_atomic(path, json.dumps(clean, indent=2, sort_keys=True) + "\n")


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    lines = (json.dumps({k: _jsonable(v) for k, v in row.items()}, ensure_ascii=False) for row in rows)
    return write_text_atomic(path, "".join(line + "\n" for line in lines))
