"""Kaggle's on-disk layout: ``train_v2.csv`` beside ``train-jpg/<image_name>.jpg``.

Both data sources end up in this layout under ``data/raw``; every later stage
finds images through :func:`image_path`.
"""

from __future__ import annotations

import csv
import itertools
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


def first_rows(root: Path | str, n: int) -> list[tuple[str, str]]:
    """The first ``n`` ``(image_name, tags)`` rows of ``train_v2.csv``, unvalidated."""
    with (Path(root) / TAGS_CSV).open(newline="") as handle:
        return [(r["image_name"], r["tags"]) for r in itertools.islice(csv.DictReader(handle), n)]


def link_download(source: Path | str, dest: Path | str) -> str:
    """Bring a Kaggle download into ``dest`` by hard links, copying only across filesystems.

    Returns ``"hardlink"`` or ``"copy"``, whichever the filesystem allowed.
    """
    source, dest = Path(source), Path(dest)
    check_layout(source)
    (dest / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / TAGS_CSV, dest / TAGS_CSV)
    files = sorted(p for p in (source / IMAGE_DIR).iterdir() if p.is_file())
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
