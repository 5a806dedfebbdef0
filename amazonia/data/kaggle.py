"""Kaggle's on-disk layout: ``train_v2.csv`` beside ``train-jpg/<image_name>.jpg``.

Both data sources end up in this layout under ``data/raw``; every later stage
finds images through :func:`image_path`.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from amazonia.common.errors import AmazoniaError

TAGS_CSV = "train_v2.csv"
IMAGE_DIR = "train-jpg"
IMAGE_SUFFIX = ".jpg"

log = logging.getLogger(__name__)


class LayoutError(AmazoniaError):
    """A folder is not in Kaggle's layout."""


def image_path(root: Path | str, image_name: str) -> Path:
    """Where Kaggle keeps the chip called ``image_name``."""
    return Path(root) / IMAGE_DIR / f"{image_name}{IMAGE_SUFFIX}"


def check_layout(root: Path | str, param: str = "data.kaggle_dir") -> None:
    """Raise :class:`LayoutError` unless ``root`` holds ``train_v2.csv`` and ``train-jpg/``."""
    root = Path(root)
    hint = (
        f"set {param} to the folder where you extracted Kaggle's train_v2.csv and "
        f"train-jpg.tar.7z (it must hold {TAGS_CSV} and {IMAGE_DIR}/)"
    )
    if not root.is_dir():
        raise LayoutError(f"{root}: no such folder ({param}); {hint}")
    if not (root / TAGS_CSV).is_file():
        raise LayoutError(f"{root}: no {TAGS_CSV}; {hint}")
    if not (root / IMAGE_DIR).is_dir():
        raise LayoutError(f"{root}: no {IMAGE_DIR}/ folder; {hint}")


def find_missing_images(root: Path | str, image_names: Iterable[str]) -> list[str]:
    """The listed names whose ``train-jpg/<name>.jpg`` does not exist."""
    folder = Path(root) / IMAGE_DIR
    present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return [n for n in image_names if f"{n}{IMAGE_SUFFIX}" not in present]


def is_utf8_name(name: str) -> bool:
    """Whether a name from the filesystem was valid UTF-8 bytes (Python decodes invalid bytes
    to lone surrogates, which DVC cannot hash and no UTF-8 CSV row can match)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def link_download(source: Path | str, dest: Path | str) -> str:
    """Bring a Kaggle download into ``dest`` by hard links, copying only across filesystems.

    Files whose names are not UTF-8 are left out, with a warning naming them.
    Returns ``"hardlink"`` or ``"copy"``, whichever the filesystem allowed.
    """
    source, dest = Path(source), Path(dest)
    check_layout(source)
    (dest / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / TAGS_CSV, dest / TAGS_CSV)
    files, unreadable = [], []
    for path in sorted(p for p in (source / IMAGE_DIR).iterdir() if p.is_file()):
        (files if is_utf8_name(path.name) else unreadable).append(path)
    if unreadable:
        shown = ", ".join(repr(os.fsencode(p.name)) for p in unreadable[:5])
        more = f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        log.warning(
            "%s: skipped %d file(s) whose names are not UTF-8: %s%s; no row of %s can name them and "
            "DVC cannot track them; if they are chips, rename them to UTF-8 (convmv -f latin1 -t utf8)",
            source / IMAGE_DIR, len(unreadable), shown, more, TAGS_CSV,
        )  # fmt: skip
    method = "hardlink"
    for path in tqdm(files, desc="link chips", unit="img", leave=False):
        target = dest / IMAGE_DIR / path.name
        if method == "hardlink":
            try:
                os.link(path, target)
                continue
            except OSError as err:
                log.warning("hard links not possible (%s); copying %d files", err, len(files))
                method = "copy"
        shutil.copyfile(path, target)
    return method
