"""The label vocabulary and the original article's encoding of Kaggle tags.

This module is the one place that knows which tags exist and in which order they
are encoded: everything else (records, model heads, metrics, the server) imports
``LABELS_WEATHER`` and ``LABELS_GROUND`` from here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from amazonia.common.errors import AmazoniaError

# Alphabetical, as in the article: the column order of the encoded vectors.
LABELS_WEATHER: tuple[str, ...] = ("clear", "cloudy", "haze", "partly_cloudy")
LABELS_GROUND: tuple[str, ...] = (
    "agriculture",
    "artisinal_mine",  # sic: Kaggle's spelling
    "bare_ground",
    "blooming",
    "blow_down",
    "conventional_mine",
    "cultivation",
    "habitation",
    "primary",
    "road",
    "selective_logging",
    "slash_burn",
    "water",
)
ALL_LABELS: tuple[str, ...] = LABELS_WEATHER + LABELS_GROUND
SPLITS: tuple[str, ...] = ("train", "val", "test")
LABEL_MAP_VERSION = 1

CSV_COLUMNS = ("image_name", "tags")
ENCODED_COLUMNS = ("image_name", "weather_labels", "ground_labels", "split")


class LabelError(AmazoniaError):
    """Bad tag data: the message names the file and row."""


@dataclass(frozen=True)
class EncodedLabels:
    """``labels.csv`` rows plus what was dropped on the way."""

    table: pd.DataFrame
    dropped: list[dict[str, str]] = field(default_factory=list)


def format_vector(bits: Sequence[int]) -> str:
    """The article's text form of a label vector: ``"[0, 0, 1, 0]"``."""
    return "[" + ", ".join(str(int(b)) for b in bits) + "]"


def parse_vector(text: str, length: int) -> list[int]:
    """Inverse of :func:`format_vector`, checking the length."""
    bits = json.loads(text)
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


def read_tags_csv(path: Path) -> pd.DataFrame:
    """Read Kaggle's ``train_v2.csv``, checking its columns and names."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise LabelError(f"{path}: the CSV is empty; expected a header 'image_name,tags' and rows") from None
    missing = [c for c in CSV_COLUMNS if c not in table.columns]
    if missing:
        raise LabelError(
            f"{path}: missing column(s) {', '.join(missing)}; found {list(table.columns)}, "
            f"expected {list(CSV_COLUMNS)} as in Kaggle's train_v2.csv"
        )
    if table.empty:
        raise LabelError(f"{path}: the CSV has a header but no rows")
    names = table["image_name"].str.strip()
    blank = names[names == ""]
    if not blank.empty:
        raise LabelError(f"{path}, row {_row(blank.index[0])}: empty image_name")
    dup = names[names.duplicated()]
    if not dup.empty:
        first = names[names == dup.iloc[0]].index
        raise LabelError(
            f"{path}, row {_row(first[1])}: duplicate image_name {dup.iloc[0]!r} "
            f"(first seen at row {_row(first[0])}); each chip must be listed once"
        )
    return table.assign(image_name=names)


def encode_tags(
    table: pd.DataFrame,
    *,
    val: float,
    test: float,
    missing_weather: str = "drop",
    source: str = "train_v2.csv",
) -> EncodedLabels:
    """Encode a ``image_name,tags`` table into the article's label columns plus a split.

    Raises :class:`LabelError` naming the row for unknown tags, two weather tags and
    (with ``missing_weather='error'``) rows with no weather tag.
    """
    known = set(ALL_LABELS)
    rows, dropped, no_weather = [], [], []
    for idx, name, tag_text in zip(table.index, table["image_name"], table["tags"]):
        tags = tag_text.split()
        unknown = [t for t in tags if t not in known]
        if unknown:
            raise LabelError(
                f"{source}, row {_row(idx)} ({name}): unknown tag(s) {', '.join(unknown)}; "
                f"known tags are {', '.join(ALL_LABELS)}"
            )
        weather = [t for t in tags if t in LABELS_WEATHER]
        if len(weather) > 1:
            raise LabelError(
                f"{source}, row {_row(idx)} ({name}): two weather tags ({', '.join(weather)}); "
                "a chip has exactly one of " + ", ".join(LABELS_WEATHER)
            )
        if not weather:
            no_weather.append((idx, name))
            dropped.append({"image_name": name, "reason": "no weather tag"})
            continue
        w, g = tags_to_vectors(tags)
        rows.append((name, format_vector(w), format_vector(g), assign_split(name, val, test)))
    if no_weather and missing_weather == "error":
        listed = ", ".join(f"row {_row(i)} ({n})" for i, n in no_weather[:10])
        more = f" and {len(no_weather) - 10} more" if len(no_weather) > 10 else ""
        raise LabelError(
            f"{source}: {len(no_weather)} row(s) have no weather tag: {listed}{more}; "
            "fix the tags or set labels.missing_weather: drop"
        )
    encoded = pd.DataFrame(rows, columns=list(ENCODED_COLUMNS))
    _check_splits(encoded, len(table), len(dropped), val=val, test=test, source=source)
    return EncodedLabels(table=encoded, dropped=dropped)


def _check_splits(
    encoded: pd.DataFrame, rows: int, dropped: int, *, val: float, test: float, source: str
) -> None:
    """Refuse a table that leaves a split empty: training, threshold tuning (val) and
    scoring (test) each need examples, and failing here costs seconds, not a training run."""
    if encoded.empty:
        why = (
            f"all {rows} row(s) were dropped for having no weather tag (labels.missing_weather: drop)"
            if rows and dropped == rows
            else "it has no rows"
        )
        raise LabelError(f"{source}: nothing to train on: {why}; every chip needs one weather tag")
    sizes = encoded["split"].value_counts()
    fractions = {"train": 1 - val - test, "val": val, "test": test}
    empty = [split for split in SPLITS if sizes.get(split, 0) == 0]
    if empty:
        param = {"train": "split.val + split.test", "val": "split.val", "test": "split.test"}
        named = "; ".join(f"{s} ({param[s]} = {fractions[s]:.3g})" for s in empty)
        raise LabelError(
            f"{source}: {len(encoded)} encoded row(s) leave no examples in split(s) {named}; "
            "every split needs examples: raise the fraction in params.yaml or add chips (data.n_images)"
        )


def read_split_rows(labels_csv: Path | str, split: str) -> pd.DataFrame:
    """The rows of ``labels.csv`` (as written by encode_labels) assigned to ``split``."""
    labels_csv = Path(labels_csv)
    try:
        table = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise LabelError(f"{labels_csv}: not found; run 'dvc repro encode_labels' first") from None
    missing = [c for c in ENCODED_COLUMNS if c not in table.columns]
    if missing:
        raise LabelError(
            f"{labels_csv}: missing column(s) {', '.join(missing)}; rerun 'dvc repro encode_labels'"
        )
    return table[table["split"] == split]


def label_counts(encoded: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per-split, per-tag counts of an encoded table (plus ``images``)."""
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        part = encoded[encoded["split"] == split]
        per_tag = dict.fromkeys(ALL_LABELS, 0)
        for w_text, g_text in zip(part["weather_labels"], part["ground_labels"]):
            w = parse_vector(w_text, len(LABELS_WEATHER))
            g = parse_vector(g_text, len(LABELS_GROUND))
            for tag in vectors_to_tags(w, g):
                per_tag[tag] += 1
        counts[split] = {"images": int(len(part)), **per_tag}
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


def _row(index: int) -> int:
    """The 1-based line number in the CSV (header is line 1)."""
    return int(index) + 2
