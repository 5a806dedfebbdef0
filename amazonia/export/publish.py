"""Publishing a checked export: swapping it into TF Serving's version folder atomically.

``amazonia serve`` and ``tensorflow_model_server`` poll ``models/<name>/`` for
integer-named folders and load each one once. So a version folder must appear whole
(never half-copied) and, when it is replaced, must never be missing: a poll that
finds no ``models/<name>/<version>/`` unloads the version and answers 404 for it
until the next poll loads it again.

:func:`publish` copies the candidate into a temporary sibling whose name is not an
integer (``.tmp-<version>.*``, skipped by every poller), then swaps it into place:

* first publication: one ``rename``;
* replacing a version (a re-export that a server may be serving): Linux's
  ``renameat2(RENAME_EXCHANGE)`` swaps both names in one step, then the old folder,
  now under the temporary name, is deleted. Where the exchange is unavailable (not
  Linux, glibc < 2.28, a filesystem without it), the old folder is renamed away and
  the new one renamed in: two steps, between which the version is briefly missing.

``amazonia serve`` loads a re-published version in place (loading before unloading);
TF Serving treats a version as immutable and keeps the one it loaded: for it, a changed
model wants a new version number.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from amazonia.common.errors import AmazoniaError
from amazonia.common.files import TEMP_PREFIX
from amazonia.export.contract import SAVED_MODEL_PB, VERSION_DIR_RE

log = logging.getLogger(__name__)

_AT_FDCWD = -100  # <fcntl.h>: paths relative to the working directory, as rename() takes them
_RENAME_EXCHANGE = 1 << 1  # <linux/fs.h>
# What renameat2 answers where it or its flag is unsupported: then rename twice instead.
_NO_EXCHANGE = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


class PublishError(AmazoniaError):
    """A checked export could not be copied into, or swapped into, its version folder."""


def publish(candidate: Path | str, published: Path | str) -> None:
    """Make ``published`` a copy of the folder ``candidate``; a poller sees the old or the new.

    Args:
        candidate: a checked SavedModel folder (``models/candidates/<name>/<version>/``).
        published: its version folder (``models/<name>/<version>/``), created or replaced.

    Raises:
        PublishError: ``candidate`` is no SavedModel folder, or copying or renaming
            failed; ``published`` is then as it was.
    """
    candidate, published = Path(candidate), Path(published)
    if not (candidate / SAVED_MODEL_PB).is_file():
        raise PublishError(f"{candidate}: no {SAVED_MODEL_PB} to publish; run 'dvc repro export'")
    parent = published.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(published)
        tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{published.name}.", dir=parent))
    except OSError as err:
        raise PublishError(f"cannot create a temporary folder in {parent}: {err.strerror}") from None
    # A poller must never take the temporary folder for a version.
    assert not VERSION_DIR_RE.fullmatch(tmp.name), tmp
    try:
        # Files, and at the end the folder itself, get the candidate's modes and times.
        shutil.copytree(candidate, tmp, dirs_exist_ok=True)
        # Durable before it becomes visible: after a crash, a renamed folder of empty files
        # would be served.
        _fsync_tree(tmp)
        _swap_in(tmp, published)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PublishError(
            f"cannot publish {candidate} to {published}: {err}; {published} is unchanged, "
            "fix the cause (disk space, permissions) and rerun 'dvc repro smoke_check'"
        ) from None
    # What is left under the temporary name is the replaced version, if any.
    shutil.rmtree(tmp, ignore_errors=True)
    _fsync_dir(parent)
    log.info("published %s to %s", candidate, published)


def exchange(a: Path | str, b: Path | str) -> bool:
    """Swap the names of two existing paths in one atomic step (``renameat2``, Linux >= 3.15).

    Returns:
        True when swapped; False where this system or filesystem cannot, with nothing changed.

    Raises:
        OSError: the exchange is supported but failed (a path missing, permissions).
    """
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _swap_in(new: Path, published: Path) -> None:
    """Rename ``new`` to ``published``; an existing ``published`` ends up at ``new``'s name."""
    if not published.exists():
        os.rename(new, published)
        return
    if exchange(new, published):
        return
    log.warning(
        "no atomic exchange of folders here (%s): replacing %s in two renames, "
        "between which a polling server may find it missing",
        sys.platform,
        published,
    )
    old = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{published.name}.", dir=published.parent))
    os.rmdir(old)  # a unique name; renaming onto an empty folder is not portable
    os.rename(published, old)
    try:
        os.rename(new, published)
    except OSError:
        os.rename(old, published)  # put the served version back
        raise
    os.rename(old, new)  # left for the caller to delete, as after an exchange


def _remove_leftovers(published: Path) -> None:
    """Temporary folders of a publication killed half-way (``.tmp-<version>.*``)."""
    for stale in published.parent.glob(f"{TEMP_PREFIX}{published.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)


def _renameat2():
    """libc's ``renameat2``, or None where this system has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
