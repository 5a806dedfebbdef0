"""A folder's content as one small file: the MD5 of every file in it, as ``md5sum`` writes it.

``ingest`` writes the list of ``data/raw`` beside it (``data/raw.md5``), and the stages
after it depend on the list rather than on the folder. DVC builds the tree of a folder
dep once for every place the folder appears in dvc.yaml (treeverse/dvc#9085): for
Kaggle's 40,479 chips, about a second of every ``dvc status`` and no-op ``dvc repro``
each time; a small file's hash is one lookup. The list changes exactly when a file's
bytes, name or presence change, and ``md5sum -c data/raw.md5`` run in ``data/raw``
checks it.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

# md5sum's escape: a name holding one of these gets a backslash before its line.
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}


def list_files(folder: Path | str) -> list[str]:
    """Every file below ``folder`` (symlinks to files count, as DVC counts them), as a
    ``/``-separated path relative to it, in code point order."""
    folder = Path(folder)
    found = []
    for root, _, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        found.extend((rel / name).as_posix() for name in files)
    return sorted(found)


def md5_line(digest: str, name: str) -> str:
    """One line of ``md5sum``'s output (text mode): ``<digest>  <name>``, escaped as it escapes."""
    if not any(char in name for char in _ESCAPES):
        return f"{digest}  {name}\n"
    escaped = "".join(_ESCAPES.get(char, char) for char in name)
    return f"\\{digest}  {escaped}\n"


def content_list(folder: Path | str, workers: int = 0) -> str:
    """``md5sum``'s lines for every file below ``folder``, in path order (the same text for
    the same files, whatever their order on disk or their times).

    ``workers`` threads hash at once (0: one per core; hashlib lets go of the GIL).
    """
    folder = Path(folder)
    names = list_files(folder)

    def md5(name: str) -> str:
        with open(folder / name, "rb") as handle:
            return hashlib.file_digest(handle, "md5").hexdigest()

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        digests = tqdm(pool.map(md5, names), total=len(names), desc=f"md5 {folder}", unit="file", leave=False)
        return "".join(md5_line(digest, name) for digest, name in zip(digests, names))
