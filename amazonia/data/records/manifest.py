"""A split's ``manifest.json``: what shards it has, their sizes and hashes, what was skipped.

Written last by the writer (it is the commit marker of a split folder) and checked
by every reader before a shard is opened.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from amazonia.common.errors import AmazoniaError
from amazonia.common.files import write_text_atomic
from amazonia.data.labels import vectors_to_tags
from amazonia.data.records.naming import MANIFEST_FILE, is_shard_filename, shard_prefix
from amazonia.data.records.schema import FEATURE_DESCRIPTIONS, SCHEMA_VERSION
from amazonia.data.vocabulary import ALL_LABELS


class RecordsError(AmazoniaError):
    """TFRecord shards that do not match their manifest."""


@dataclass
class ShardInfo:
    file: str
    examples: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    split: str
    examples: int
    shards: list[ShardInfo]
    label_counts: dict[str, int]
    skipped: list[dict[str, str]] = field(default_factory=list)
    formats: dict[str, int] = field(default_factory=dict)  # stored chips per file format
    schema_version: int = SCHEMA_VERSION
    format: dict = field(default_factory=lambda: {"features": dict(FEATURE_DESCRIPTIONS)})

    def to_json(self) -> str:
        """The text of ``manifest.json``: indented JSON, keys in field order."""
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    def write(self, directory: Path | str) -> None:
        write_text_atomic(Path(directory) / MANIFEST_FILE, self.to_json())

    @property
    def files(self) -> list[str]:
        return [s.file for s in self.shards]


class ChipOutcome(NamedTuple):
    """What the manifest records of one chip: its labels, or why it was skipped."""

    name: str
    weather: tuple[int, ...]
    ground: tuple[int, ...]
    error: str | None  # the skip reason; None when the chip is in a shard
    format: str | None  # the stored chip's format, e.g. "JPEG"; None when skipped


def build_manifest(split: str, shards: list[ShardInfo], outcomes: Iterable[ChipOutcome]) -> Manifest:
    """The manifest of a split from its shards and every chip's outcome in ``labels.csv``
    order: the one place both writers (local, Beam) count labels, formats and list skips."""
    counts: Counter[str] = Counter()
    formats: Counter[str] = Counter()
    skipped = []
    for outcome in outcomes:
        if outcome.error is not None:
            skipped.append({"image_name": outcome.name, "reason": outcome.error})
            continue
        formats[outcome.format] += 1
        counts.update(vectors_to_tags(outcome.weather, outcome.ground))
    return Manifest(
        split=split,
        examples=sum(s.examples for s in shards),
        shards=shards,
        label_counts={t: counts[t] for t in ALL_LABELS},
        skipped=skipped,
        formats=dict(sorted(formats.items())),
    )


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: Path | str) -> Manifest:
    """Load ``manifest.json`` of a split folder (no checks on the shards)."""
    path = Path(directory) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordsError(
            f"{path}: missing; the split was not serialized completely. Run 'dvc repro serialize'"
        ) from None
    except json.JSONDecodeError as err:
        raise RecordsError(f"{path}: not valid JSON ({err}); run 'dvc repro serialize'") from None
    if data.get("schema_version") != SCHEMA_VERSION:
        raise RecordsError(
            f"{path}: schema version {data.get('schema_version')}, this code reads "
            f"{SCHEMA_VERSION}; rerun 'dvc repro serialize'"
        )
    data["shards"] = [ShardInfo(**s) for s in data["shards"]]
    return Manifest(**data)


def check_manifest(directory: Path | str, verify_hashes: bool = True) -> Manifest:
    """Check a split folder against its manifest and return it.

    Every listed shard must exist with its size (and SHA-256), no unlisted shard may
    lie beside them, and counts must add up.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    where = directory / MANIFEST_FILE
    rerun = "rerun 'dvc repro serialize' (or 'dvc pull')"
    listed = set(manifest.files)
    stray = sorted(p.name for p in directory.glob(f"{shard_prefix(manifest.split)}*") if p.name not in listed)
    if stray:
        raise RecordsError(f"{directory}: shard files not in the manifest: {', '.join(stray)}; {rerun}")
    for shard in manifest.shards:
        path = directory / shard.file
        if not is_shard_filename(shard.file):
            raise RecordsError(f"{where}: bad shard name {shard.file!r}")
        if not path.is_file():
            raise RecordsError(f"{path}: listed in the manifest but missing; {rerun}")
        if path.stat().st_size != shard.bytes:
            raise RecordsError(
                f"{path}: {path.stat().st_size} bytes, the manifest says {shard.bytes} "
                f"(half-written or altered); {rerun}"
            )
        if verify_hashes and sha256_file(path) != shard.sha256:
            raise RecordsError(f"{path}: SHA-256 differs from the manifest (altered); {rerun}")
    total = sum(s.examples for s in manifest.shards)
    if total != manifest.examples:
        raise RecordsError(f"{where}: shards hold {total} examples, the manifest says {manifest.examples}")
    return manifest
