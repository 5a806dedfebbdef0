"""Atomic file output: write under a temporary name, then rename; and reading a file
from a folder nobody vouches for.

A reader (a later stage, DVC, a person) sees either the old file or the complete
new one, never a half-written one, even after a kill -9. The temporary name is
``.tmp-<name>.XXXXXXXX`` beside ``<name>``; what a killed write leaves there is
removed by the next write of ``<name>``. No one else can be using it then: only one
stage writes ``<name>`` (its output, or its own scratch), and while a stage runs DVC
holds a write lock on its outputs (``.dvc/tmp/rwlock``; two ``dvc repro`` processes
may run two stages at once, never the same one).

A full disk (or quota) stops a write with :class:`DiskFullError`, one line naming
the output and the space left.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from amazonia.common.errors import AmazoniaError

TEMP_PREFIX = ".tmp-"
# What ``tempfile`` appends to a prefix: 8 of these characters.
_TEMP_SUFFIX = r"[a-z0-9_]{8}"
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

# mkstemp/mkdtemp create private (0600/0700) entries; outputs get the usual permissions.
_UMASK = os.umask(0)
os.umask(_UMASK)

log = logging.getLogger(__name__)


class DiskFullError(AmazoniaError):
    """A write failed for want of space (or quota); the message names the output."""

    def __init__(self, message: str, code: int = errno.ENOSPC):
        super().__init__(message)
        self.code = code  # errno.ENOSPC or errno.EDQUOT


class RefusedFileError(AmazoniaError):
    """A file left unread: not a regular file (a symlink, a folder, a FIFO, a device, a
    socket), or larger than its reader allows."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.reason = reason


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsync'd temp file, then rename).

    Raises:
        DiskFullError: the filesystem (or the quota) is full; ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        full = disk_full_error(path, err)  # the space left when it failed, before cleaning up
        Path(tmp).unlink(missing_ok=True)
        if full is not None:
            raise full from err
        raise


def write_json_atomic(path: Path | str, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Build a directory under a temporary name; it replaces ``path`` only on success.

    Leftovers of an earlier killed run (``.tmp-<name>.*`` beside ``path``) are removed.

    Raises:
        DiskFullError: a write inside ran out of space (or quota); ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)
        yield tmp
        remove_path(path)
        os.replace(tmp, path)
    except BaseException as err:
        full = disk_full_error(path, err)
        shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            raise full from err
        raise


def remove_stale_temps(path: Path | str) -> None:
    """Remove what killed writes of ``path`` left beside it (``.tmp-<name>.XXXXXXXX``)."""
    path = Path(path)
    pattern = re.compile(re.escape(_temp_prefix(path)) + _TEMP_SUFFIX)
    try:
        entries = [e for e in os.scandir(path.parent) if pattern.fullmatch(e.name)]
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            remove_path(entry.path)
        except OSError as err:
            log.warning("cannot remove %s, left by a killed run: %s", entry.path, err)


def remove_path(path: Path | str) -> None:
    """Remove a file, a symlink or a whole folder; nothing when ``path`` does not exist."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def disk_full_error(path: Path | str | None, err: BaseException) -> DiskFullError | None:
    """A :class:`DiskFullError` naming ``path`` and the space left on its filesystem when
    ``err`` says the disk or the quota is full (an ``OSError``, or an earlier
    :class:`DiskFullError` for a file inside ``path``); None for any other error."""
    code = _disk_full_code(err)
    if code is None:
        return None
    # The folder written into (the nearest that exists), or the working one if unknown.
    folders = Path(path).parents if path is not None else [Path.cwd()]
    existing = next((p for p in folders if p.exists()), Path("/"))
    try:
        space = f"{_size(shutil.disk_usage(existing).free)} free"
    except OSError:
        space = "free space unknown"
    if code == errno.ENOSPC:
        reason, fix = "no space left on device", "free some space there"
    else:
        reason, fix = "disk quota exceeded", "free some space there or ask for a larger quota"
    subject = f"{path}: {reason} while writing it" if path is not None else f"a write failed: {reason}"
    return DiskFullError(f"{subject} ({space} on the filesystem of {existing}); {fix}, then rerun", code)


def _disk_full_code(err: BaseException) -> int | None:
    """``errno.ENOSPC`` or ``errno.EDQUOT`` if that is what ``err`` reports, else None."""
    if isinstance(err, DiskFullError):
        return err.code
    if isinstance(err, OSError):
        return err.errno if err.errno in DISK_FULL_ERRNOS else None
    if isinstance(err, AmazoniaError):  # says what it means already
        return None
    # TensorFlow's file systems (SavedModel, checkpoints) raise their own errors and give
    # the OS's reason only as text: "...tempstate123; No space left on device [Op:SaveV2]".
    if isinstance(err, Exception):
        return next((code for code in DISK_FULL_ERRNOS if os.strerror(code) in str(err)), None)
    return None


def read_regular_file(path: Path | str, max_bytes: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``.

    A symlink is not followed and a FIFO never blocks: anything but a regular file is
    refused, naming what it is, before a byte is read.

    Raises:
        RefusedFileError: ``path`` is a symlink, a folder, a FIFO, a device or a socket,
            or holds more than ``max_bytes``.
        FileNotFoundError: there is nothing at ``path``.
        OSError: it cannot be read (permissions, I/O).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENXIO):  # a symlink (O_NOFOLLOW); a socket
            kind = file_kind(os.lstat(path).st_mode)
            raise RefusedFileError(path, f"{kind}, not a regular file; not read") from None
        raise
    mode = os.fstat(fd)
    refusal = (
        f"{file_kind(mode.st_mode)}, not a regular file"
        if not stat.S_ISREG(mode.st_mode)
        else f"more than {_size(max_bytes)}"
        if mode.st_size > max_bytes
        else None
    )
    if refusal is not None:
        os.close(fd)
        raise RefusedFileError(path, f"{refusal}; not read")
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew while being read
        raise RefusedFileError(path, f"more than {_size(max_bytes)}; not read")
    return data


def file_kind(mode: int) -> str:
    """What ``st_mode`` says a path is, for a message: ``"a folder"``, ``"a FIFO"``, ..."""
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((name for test, name in kinds if test(mode)), "not a file")


def _temp_prefix(path: Path) -> str:
    return f"{TEMP_PREFIX}{path.name}."


def _size(n: float) -> str:
    """``n`` bytes for a person: ``"0 B"``, ``"512.0 KiB"``, ``"1.5 GiB"``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = 0
    while n >= 1024 and power < len(units) - 1:
        n, power = n / 1024, power + 1
    return f"{int(n)} B" if power == 0 else f"{n:.1f} {units[power]}"
