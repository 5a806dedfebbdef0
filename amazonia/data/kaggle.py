"""Kaggle's on-disk layout: ``train_v2.csv`` beside ``train-jpg/<image_name>.jpg``.

Both data sources end up in this layout under ``data/raw``; every later stage
finds images through :func:`image_path`. A download is checked before a byte of it
is read (:func:`check_download`): ``data/raw``, and so DVC's cache and remotes, only
ever get regular files from inside ``data.kaggle_dir``, never what a symlink in it
points to elsewhere (a private key), nor a FIFO or a device.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from amazonia.common.errors import AmazoniaError
from amazonia.common.files import DISK_FULL_ERRNOS, file_kind, read_regular_file

TAGS_CSV = "train_v2.csv"
IMAGE_DIR = "train-jpg"
IMAGE_SUFFIX = ".jpg"
# Kaggle's train_v2.csv is 1.5 MB; a hundred times that is no tags file.
MAX_TAGS_CSV_BYTES = 256 * 2**20
# Entries named in one message; the rest are counted.
_SHOWN = 5

log = logging.getLogger(__name__)


class LayoutError(AmazoniaError):
    """A folder is not in Kaggle's layout."""


class UnsafeChipError(LayoutError):
    """An entry of ``train-jpg/`` is not a regular file inside the download."""


@dataclass(frozen=True)
class ChipFile:
    """An entry of ``train-jpg/`` that is safe to bring into ``data/raw``."""

    name: str  # its name in train-jpg/
    source: Path  # its bytes: the entry itself, or the file inside the download its symlink names
    device: int  # source's st_dev and st_ino when checked: what is linked or copied must be that file
    inode: int


@dataclass(frozen=True)
class Download:
    """A Kaggle download, checked by :func:`check_download`; nothing of it read yet."""

    root: Path  # data.kaggle_dir, as given
    tags_csv: Path  # train_v2.csv, symlinks resolved: a regular file inside the download
    chips: tuple[ChipFile, ...]
    unsafe: tuple[tuple[str, str], ...]  # (entry name, why it is left out), with on_unsafe='skip'


@dataclass(frozen=True)
class LinkResult:
    method: str  # "hardlink" or "copy", whichever the filesystem allowed
    left_out: tuple[str, ...]  # image names whose chip, and row of train_v2.csv, were left out


def image_path(root: Path | str, image_name: str) -> Path:
    """Where Kaggle keeps the chip called ``image_name``."""
    return Path(root) / IMAGE_DIR / f"{image_name}{IMAGE_SUFFIX}"


def check_layout(root: Path | str, param: str = "data.kaggle_dir") -> tuple[Path, Path]:
    """Raise :class:`LayoutError` unless ``root`` holds ``train_v2.csv`` and ``train-jpg/``,
    each inside ``root`` once symlinks are resolved (``root`` itself may be a symlink).

    Returns ``train_v2.csv`` and ``train-jpg/`` with symlinks resolved.
    """
    root = Path(root)
    hint = (
        f"set {param} to the folder where you extracted Kaggle's train_v2.csv and "
        f"train-jpg.tar.7z (it must hold {TAGS_CSV} and {IMAGE_DIR}/)"
    )
    if not root.is_dir():
        raise LayoutError(f"{root}: no such folder ({param}); {hint}")
    real_root = root.resolve(strict=True)
    found = {}
    for name, want in ((TAGS_CSV, stat.S_ISREG), (IMAGE_DIR, stat.S_ISDIR)):
        kind = "file" if want is stat.S_ISREG else "folder"
        path = root / name
        if not os.path.lexists(path):
            raise LayoutError(f"{root}: no {name}{'/' if kind == 'folder' else ''}; {hint}")
        where = _inside(path, real_root)
        if isinstance(where, str):
            raise LayoutError(
                f"{path}: {where}; not read. Put the {kind} itself inside {root}, or set {param} to "
                "the folder that really holds the download"
            )
        real, mode = where
        if not want(mode.st_mode):
            raise LayoutError(f"{path}: {file_kind(mode.st_mode)}, not a {kind}; {hint}")
        found[name] = real
    return found[TAGS_CSV], found[IMAGE_DIR]


def check_download(root: Path | str, on_unsafe: str = "error", param: str = "data.kaggle_dir") -> Download:
    """Check a Kaggle download without reading a byte of it.

    Every entry of ``train-jpg/`` must be a regular file inside ``root`` once symlinks
    are resolved (a symlink to another file of the download is fine). Any other (a
    symlink out of the download, or to nothing; a folder, a FIFO, a device, a socket)
    stops here with :class:`UnsafeChipError` naming each and why (``on_unsafe='error'``),
    or is left out with a warning (``'skip'``). Entries whose names are not UTF-8 are
    left out with a warning either way.

    Raises:
        LayoutError: ``root`` is not in Kaggle's layout, or ``train_v2.csv`` or
            ``train-jpg/`` is not inside it.
        UnsafeChipError: an unsafe entry, with ``on_unsafe='error'``.
    """
    root = Path(root)
    tags_csv, chip_dir = check_layout(root, param)
    real_root = root.resolve(strict=True)
    chips, unsafe, unreadable = [], [], []
    for entry in sorted(os.scandir(chip_dir), key=lambda e: e.name):
        if not is_utf8_name(entry.name):
            unreadable.append(entry.name)
            continue
        # A plain entry of the resolved train-jpg/ is inside; only a symlink needs resolving.
        where = (
            _inside(Path(entry.path), real_root)
            if entry.is_symlink()
            else (Path(entry.path), entry.stat(follow_symlinks=False))
        )
        if isinstance(where, str):
            unsafe.append((entry.name, where))
        elif not stat.S_ISREG(where[1].st_mode):
            unsafe.append((entry.name, file_kind(where[1].st_mode) + _linked(entry)))
        else:
            chips.append(ChipFile(entry.name, where[0], where[1].st_dev, where[1].st_ino))
    if unreadable:
        log.warning(
            "%s: skipped %d file(s) whose names are not UTF-8: %s; no row of %s can name them and "
            "DVC cannot track them; if they are chips, rename them to UTF-8 (convmv -f latin1 -t utf8)",
            root / IMAGE_DIR, len(unreadable), _listing([repr(os.fsencode(n)) for n in unreadable]), TAGS_CSV,
        )  # fmt: skip
    listing = _listing([f"{name} ({why})" for name, why in unsafe])
    if unsafe and on_unsafe == "error":
        raise UnsafeChipError(
            f"{root / IMAGE_DIR}: {_entries(len(unsafe))} not a regular file inside the download "
            f"({param}: {root}), so nothing of it was read: {listing}; "
            "put the chips' own files there, or set data.on_unsafe_chip: skip to leave such entries, "
            f"and their rows of {TAGS_CSV}, out of data/raw"
        )
    if unsafe:
        log.warning(
            "%s: %s not a regular file inside the download; left out of data/raw with its row of %s "
            "(data.on_unsafe_chip: skip), nothing of it read: %s",
            root / IMAGE_DIR, _entries(len(unsafe)), TAGS_CSV, listing,
        )  # fmt: skip
    return Download(root, tags_csv, tuple(chips), tuple(unsafe))


def link_download(
    download: Download, dest: Path | str, rows: Mapping[str, int], on_unsafe: str = "error"
) -> LinkResult:
    """Bring a checked download into ``dest`` by hard links, copying only across filesystems.

    ``rows`` maps each image name of ``train_v2.csv`` to its row (as
    :func:`amazonia.data.labels.read_tags_csv` numbers them): ``dest``'s copy of the
    file lacks the rows of chips left out. A chip that is no longer the file
    :func:`check_download` saw (replaced meanwhile) is unsafe too, per ``on_unsafe``.

    Raises:
        UnsafeChipError: a chip changed since it was checked, with ``on_unsafe='error'``.
    """
    dest = Path(dest)
    (dest / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    left_out = list(download.unsafe)
    method = "hardlink"
    for chip in tqdm(download.chips, desc="link chips", unit="img", leave=False):
        target = dest / IMAGE_DIR / chip.name
        if method == "hardlink":
            try:
                # follow_symlinks=False: were source swapped for a symlink, the link is to it,
                # and the check below refuses it.
                os.link(chip.source, target, follow_symlinks=False)
            except OSError as err:
                if err.errno in DISK_FULL_ERRNOS:
                    raise
                log.warning("hard links not possible (%s); copying %d files", err, len(download.chips))
                method = "copy"
        changed = not _copy_checked(chip, target) if method == "copy" else not _is_checked(target, chip)
        if changed:
            target.unlink(missing_ok=True)
            why = "replaced while ingest was reading the download"
            if on_unsafe == "error":
                raise UnsafeChipError(
                    f"{download.root / IMAGE_DIR / chip.name}: {why}; nothing of it was kept. "
                    "Rerun once the download is no longer being changed"
                )
            log.warning(
                "%s: %s; left out (data.on_unsafe_chip: skip)", download.root / IMAGE_DIR / chip.name, why
            )
            left_out.append((chip.name, why))
    names = tuple(n.removesuffix(IMAGE_SUFFIX) for n, _ in left_out if n.endswith(IMAGE_SUFFIX))
    dropped = {rows[n] for n in names if n in rows}
    tags = read_regular_file(download.tags_csv, MAX_TAGS_CSV_BYTES)
    (dest / TAGS_CSV).write_bytes(_without_rows(tags, dropped) if dropped else tags)
    if dropped:
        log.warning(
            "%s: %d row(s) left out of data/raw with their chips: %s",
            download.root / TAGS_CSV, len(dropped), _listing([n for n in names if n in rows]),
        )  # fmt: skip
    return LinkResult(method, tuple(n for n in names if n in rows))


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


def _inside(path: Path, real_root: Path) -> tuple[Path, os.stat_result] | str:
    """``path`` with symlinks resolved and its ``stat``, if that is inside ``real_root``;
    else why not (a symlink out of it, to nothing, or in a loop). Reads no file."""
    try:
        real = Path(os.path.realpath(path, strict=True))
    except OSError as err:
        target = os.readlink(path) if os.path.islink(path) else path
        return f"a symlink to {target}, which " + (
            "does not exist" if err.errno == errno.ENOENT else "is a loop of symlinks"
        )
    if not real.is_relative_to(real_root):
        return f"a symlink to {real}, outside the download"
    return real, os.lstat(real)


def _linked(entry: os.DirEntry) -> str:
    return f" (a symlink to {os.readlink(entry.path)})" if entry.is_symlink() else ""


def _is_checked(target: Path, chip: ChipFile) -> bool:
    """Whether ``target`` (a hard link just made) is the regular file that was checked."""
    mode = os.lstat(target)
    return stat.S_ISREG(mode.st_mode) and (mode.st_dev, mode.st_ino) == (chip.device, chip.inode)


def _copy_checked(chip: ChipFile, target: Path) -> bool:
    """Copy ``chip`` to ``target`` if its source is still the regular file that was
    checked (opened without following a symlink or blocking on a FIFO); else False."""
    try:
        fd = os.open(chip.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENXIO, errno.ENOENT):
            return False
        raise
    mode = os.fstat(fd)
    if not stat.S_ISREG(mode.st_mode) or (mode.st_dev, mode.st_ino) != (chip.device, chip.inode):
        os.close(fd)
        return False
    with os.fdopen(fd, "rb") as source, open(target, "xb") as copy:
        shutil.copyfileobj(source, copy)
    return True


def _without_rows(data: bytes, rows: set[int]) -> bytes:
    """``train_v2.csv``'s bytes less the given rows (1 = the header), lines counted as
    :func:`amazonia.data.labels.read_tags_csv` counts them; every other byte kept."""
    bom = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""
    lines = io.StringIO(data[len(bom) :].decode("utf-8"), newline="")
    return bom + "".join(line for number, line in enumerate(lines, 1) if number not in rows).encode("utf-8")


def _entries(count: int) -> str:
    """``"1 entry is"``, ``"3 entries are"``: the subject of "... not a regular file"."""
    return "1 entry is" if count == 1 else f"{count} entries are"


def _listing(items: list[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more
