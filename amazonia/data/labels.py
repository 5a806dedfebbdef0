"""The original article's encoding of Kaggle tags: ``train_v2.csv`` in, ``labels.csv`` out.

Which tags exist, and in which order they are encoded, is :mod:`amazonia.data.vocabulary`.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from amazonia.common.errors import AmazoniaError
from amazonia.data.vocabulary import ALL_LABELS, LABELS_GROUND, LABELS_WEATHER

SPLITS: tuple[str, ...] = ("train", "val", "test")
LABEL_MAP_VERSION = 1

CSV_COLUMNS = ("image_name", "tags")


class LabelError(AmazoniaError):
    """Bad tag data: the message names the file and row."""


@dataclass(frozen=True)
class TagRow:
    """One record of ``train_v2.csv``: its row in the file (the header is row 1), the image
    name and its tags as written (space-separated)."""

    row: int
    image_name: str
    tags: str


@dataclass(frozen=True)
class LabelRow:
    """One row of ``labels.csv``: the article's label vectors, as text, and the split."""

    image_name: str
    weather_labels: str  # format_vector's text: "[0, 0, 1, 0]"
    ground_labels: str
    split: str


ENCODED_COLUMNS = tuple(f.name for f in dataclasses.fields(LabelRow))


@dataclass(frozen=True)
class EncodedLabels:
    """``labels.csv`` rows plus what was dropped on the way."""

    table: list[LabelRow]
    dropped: list[dict[str, str]] = field(default_factory=list)


def format_vector(bits: Sequence[int]) -> str:
    """The article's text form of a label vector: ``"[0, 0, 1, 0]"``."""
    return "[" + ", ".join(str(int(b)) for b in bits) + "]"


def parse_vector(text: str, length: int) -> list[int]:
    """Inverse of :func:`format_vector`, checking the length."""
    try:
        bits = json.loads(text)
    except json.JSONDecodeError:
        bits = None
    if not isinstance(bits, list) or len(bits) != length or any(b not in (0, 1) for b in bits):
        raise LabelError(f"not a {length}-long 0/1 label vector: {text!r}")
    return [int(b) for b in bits]


def tags_to_vectors(tags: Iterable[str]) -> tuple[list[int], list[int]]:
    """Turn a tag set into (weather one-hot, ground multi-hot); no validation."""
    tagset = set(tags)
    return (
        [int(t in tagset) for t in LABELS_WEATHER],
        [int(t in tagset) for t in LABELS_GROUND],
    )


def vectors_to_tags(weather: Sequence[float], ground: Sequence[float]) -> list[str]:
    """The tags switched on in a pair of 0/1 vectors, in vocabulary order."""
    return [t for t, b in zip(LABELS_WEATHER, weather) if b] + [t for t, b in zip(LABELS_GROUND, ground) if b]


def assign_split(image_name: str, val: float, test: float) -> str:
    """Split by a stable hash of the name: adding images never moves existing ones."""
    digest = hashlib.sha256(image_name.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test:
        return "test"
    if u < test + val:
        return "val"
    return "train"


def read_tags_csv(path: Path | str) -> list[TagRow]:
    """Read Kaggle's ``train_v2.csv`` strictly: the ``image_name`` and ``tags`` of each
    record, with its row in the file (the header is row 1).

    UTF-8 with or without a byte-order mark (what Excel writes); blank lines are
    ignored. Raises :class:`LabelError` naming the file and row for text that is not
    UTF-8, a missing column, a row with too few or too many fields, a quote that is
    never closed, and an empty, duplicate or path-like image name. The tags themselves
    are checked by :func:`encode_tags`.
    """
    path = Path(path)
    header, columns, table = None, {}, []
    seen: dict[str, int] = {}
    for row, fields in _csv_records(path):
        if header is None:
            header = [f.strip() for f in fields]
            columns = _column_positions(path, header)
            continue
        if len(fields) != len(header):
            fix = (
                "remove the extra field, or quote a field that holds a comma"
                if len(fields) > len(header)
                else "add the missing field (empty tags are written 'train_1,')"
            )
            raise LabelError(
                f"{path}, row {row}: {len(fields)} field(s), expected {len(header)} "
                f"({','.join(header)}); {fix}"
            )
        name = fields[columns["image_name"]].strip()
        _check_image_name(path, row, name)
        if name in seen:
            raise LabelError(
                f"{path}, row {row}: duplicate image_name {name!r} (first seen at row {seen[name]}); "
                "each chip must be listed once"
            )
        seen[name] = row
        table.append(TagRow(row, name, fields[columns["tags"]]))
    if header is None:
        raise LabelError(f"{path}: the CSV is empty; expected a header 'image_name,tags' and rows")
    if not table:
        raise LabelError(f"{path}: the CSV has a header but no rows")
    return table


def _csv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(row, fields)`` for each non-blank record of the CSV at ``path``, ``row`` being
    its line in the file; :class:`LabelError` naming the row for text that is not UTF-8,
    bad quoting, or a quoted field running over lines."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise LabelError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        row = data[: err.start].count(b"\n") + 1
        raise LabelError(
            f"{path}, row {row}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
            "save the file as UTF-8, as Kaggle's train_v2.csv is"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        row = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise LabelError(f"{path}, row {row}: {_describe_csv_error(err)}") from None
        if not fields:
            continue
        if reader.line_num != row:
            raise LabelError(
                f"{path}, row {row}: a quoted field runs on to row {reader.line_num}; "
                "close the quote on its own row or remove it"
            )
        yield row, fields


def _column_positions(path: Path, header: list[str]) -> dict[str, int]:
    """Where each of :data:`CSV_COLUMNS` is in ``header``."""
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise LabelError(
            f"{path}: missing column(s) {', '.join(missing)}; found {header}, "
            f"expected {list(CSV_COLUMNS)} as in Kaggle's train_v2.csv"
        )
    doubled = sorted({c for c in header if header.count(c) > 1})
    if doubled:
        raise LabelError(
            f"{path}: column(s) {', '.join(doubled)} appear more than once in the header; keep one of each"
        )
    return {c: header.index(c) for c in CSV_COLUMNS}


def _check_image_name(path: Path, row: int, name: str) -> None:
    """An image name becomes ``train-jpg/<name>.jpg``: it must be a plain file name."""
    if not name:
        raise LabelError(f"{path}, row {row}: empty image_name")
    if any(c in name for c in "/\\\0") or name in (".", ".."):
        raise LabelError(
            f"{path}, row {row}: image_name {name!r} is not a plain file name (no /, \\ or NUL; "
            "not . or ..): it names train-jpg/<image_name>.jpg, so use the chip's file name without .jpg"
        )


def _describe_csv_error(err: csv.Error) -> str:
    """The csv module's complaint in the user's terms."""
    # An unclosed quote swallows the rest of the file: the end of it, or (in a file the
    # size of Kaggle's) the csv module's field size limit, comes first.
    if "unexpected end of data" in str(err) or "field larger than field limit" in str(err):
        return "a quote opened on this row is never closed; close it or remove it"
    return f"bad quoting ({err}); a field that holds a quote must be quoted whole, with the quote doubled"


def encode_tags(
    table: Sequence[TagRow],
    *,
    val: float,
    test: float,
    missing_weather: str = "drop",
    source: str = "train_v2.csv",
) -> EncodedLabels:
    """Encode the rows of ``train_v2.csv``, as :func:`read_tags_csv` returns them, into the
    article's label columns plus a split, in the same order.

    Raises :class:`LabelError` naming the row for unknown tags, two weather tags and
    (with ``missing_weather='error'``) rows with no weather tag.
    """
    known = set(ALL_LABELS)
    rows, dropped, no_weather = [], [], []
    for tag_row in table:
        idx, name, tags = tag_row.row, tag_row.image_name, tag_row.tags.split()
        unknown = [t for t in tags if t not in known]
        if unknown:
            raise LabelError(
                f"{source}, row {idx} ({name}): unknown tag(s) {', '.join(unknown)}; "
                f"known tags are {', '.join(ALL_LABELS)}"
            )
        weather = [t for t in tags if t in LABELS_WEATHER]
        if len(weather) > 1:
            raise LabelError(
                f"{source}, row {idx} ({name}): two weather tags ({', '.join(weather)}); "
                "a chip has exactly one of " + ", ".join(LABELS_WEATHER)
            )
        if not weather:
            no_weather.append((idx, name))
            dropped.append({"image_name": name, "reason": "no weather tag"})
            continue
        w, g = tags_to_vectors(tags)
        rows.append(LabelRow(name, format_vector(w), format_vector(g), assign_split(name, val, test)))
    if no_weather and missing_weather == "error":
        listed = ", ".join(f"row {i} ({n})" for i, n in no_weather[:10])
        more = f" and {len(no_weather) - 10} more" if len(no_weather) > 10 else ""
        raise LabelError(
            f"{source}: {len(no_weather)} row(s) have no weather tag: {listed}{more}; "
            "fix the tags or set labels.missing_weather: drop"
        )
    _check_splits(rows, len(table), len(dropped), val=val, test=test, source=source)
    return EncodedLabels(table=rows, dropped=dropped)


def _check_splits(
    encoded: Sequence[LabelRow], rows: int, dropped: int, *, val: float, test: float, source: str
) -> None:
    """Refuse a table that leaves a split empty: training, threshold tuning (val) and
    scoring (test) each need examples, and failing here costs seconds, not a training run."""
    if not encoded:
        why = (
            f"all {rows} row(s) were dropped for having no weather tag (labels.missing_weather: drop)"
            if rows and dropped == rows
            else "it has no rows"
        )
        raise LabelError(f"{source}: nothing to train on: {why}; every chip needs one weather tag")
    sizes = Counter(row.split for row in encoded)
    fractions = {"train": 1 - val - test, "val": val, "test": test}
    empty = [split for split in SPLITS if sizes.get(split, 0) == 0]
    if empty:
        param = {"train": "split.val + split.test", "val": "split.val", "test": "split.test"}
        named = "; ".join(f"{s} ({param[s]} = {fractions[s]:.3g})" for s in empty)
        raise LabelError(
            f"{source}: {len(encoded)} encoded row(s) leave no examples in split(s) {named}; "
            "every split needs examples: raise the fraction in params.yaml or add chips (data.n_images)"
        )


def labels_csv_text(rows: Iterable[LabelRow]) -> str:
    """``labels.csv``'s text: a header of :data:`ENCODED_COLUMNS`, then one line per row,
    ``\n``-terminated, a field quoted only where it holds a comma, a quote or a line break."""
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    out.writerow(ENCODED_COLUMNS)
    out.writerows([getattr(row, column) for column in ENCODED_COLUMNS] for row in rows)
    return buffer.getvalue()


def read_split_rows(labels_csv: Path | str, split: str) -> list[LabelRow]:
    """The rows of ``labels.csv`` (as written by encode_labels) assigned to ``split``, in
    file order; every field as the text written (an empty field stays ``""``)."""
    labels_csv = Path(labels_csv)
    try:
        handle = labels_csv.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise LabelError(f"{labels_csv}: not found; run 'dvc repro encode_labels' first") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        missing = [c for c in ENCODED_COLUMNS if c not in header]
        if missing:
            raise LabelError(
                f"{labels_csv}: missing column(s) {', '.join(missing)}; rerun 'dvc repro encode_labels'"
            )
        positions = [header.index(c) for c in ENCODED_COLUMNS]
        rows = []
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                raise LabelError(
                    f"{labels_csv}, row {reader.line_num}: {len(fields)} field(s), expected "
                    f"{len(header)}; rerun 'dvc repro encode_labels'"
                )
            row = LabelRow(*(fields[i] for i in positions))
            if row.split == split:
                rows.append(row)
    return rows


def label_counts(encoded: Iterable[LabelRow]) -> dict[str, dict[str, int]]:
    """Per-split, per-tag counts of encoded rows (plus ``images``)."""
    counts = {split: {"images": 0, **dict.fromkeys(ALL_LABELS, 0)} for split in SPLITS}
    for row in encoded:
        per_split = counts.get(row.split)
        if per_split is None:
            continue
        w = parse_vector(row.weather_labels, len(LABELS_WEATHER))
        g = parse_vector(row.ground_labels, len(LABELS_GROUND))
        per_split["images"] += 1
        for tag in vectors_to_tags(w, g):
            per_split[tag] += 1
    return counts


def label_map() -> dict:
    """The vocabulary as written to ``label_map.json`` and shipped with the model."""
    return {
        "version": LABEL_MAP_VERSION,
        "weather": list(LABELS_WEATHER),
        "ground": list(LABELS_GROUND),
        "weather_activation": "softmax",
        "ground_activation": "sigmoid",
    }


def read_label_map(path: Path) -> dict:
    """Read a ``label_map.json``, checking it matches this code's vocabulary."""
    found = json.loads(Path(path).read_text())
    if found.get("weather") != list(LABELS_WEATHER) or found.get("ground") != list(LABELS_GROUND):
        raise LabelError(
            f"{path}: label vocabulary differs from amazonia.data.labels; rerun 'dvc repro encode_labels'"
        )
    return found
