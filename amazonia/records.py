"""The TFRecord format of the pipeline: Example schema, shard naming, manifest.

This module is the one place that defines what a record holds. The serialize stage
writes with :class:`ShardWriter`; training, evaluation and the smoke check read
through :func:`feature_spec` after :func:`check_manifest` has vouched for the files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amazonia.errors import AmazoniaError
from amazonia.files import write_json_atomic
from amazonia.labels import LABELS_GROUND, LABELS_WEATHER

SCHEMA_VERSION = 1
DATASET_NAME = "planet"
MANIFEST_FILE = "manifest.json"

FEATURE_IMAGE = "image/encoded"  # JPEG bytes, RGB, image_size x image_size
FEATURE_NAME = "image/name"  # Kaggle's image_name, e.g. b"train_42"
FEATURE_WEATHER = "labels/weather"  # int64 one-hot, len(LABELS_WEATHER)
FEATURE_GROUND = "labels/ground"  # int64 multi-hot, len(LABELS_GROUND)

_SHARD_RE = re.compile(r"^(?P<prefix>.+\.tfrecord)-(?P<index>\d{5})-of-(?P<total>\d{5})$")


class RecordsError(AmazoniaError):
    """TFRecord shards that do not match their manifest."""


def shard_prefix(split: str) -> str:
    """TensorFlow Datasets' file prefix: ``planet-train.tfrecord``."""
    return f"{DATASET_NAME}-{split}.tfrecord"


def shard_filename(split: str, index: int, total: int) -> str:
    """TensorFlow Datasets' shard name: ``planet-train.tfrecord-00000-of-00004``."""
    return f"{shard_prefix(split)}-{index:05d}-of-{total:05d}"


def feature_spec() -> dict:
    """The ``tf.io.parse_example`` spec of one record."""
    import tensorflow as tf

    return {
        FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string),
        FEATURE_NAME: tf.io.FixedLenFeature([], tf.string),
        FEATURE_WEATHER: tf.io.FixedLenFeature([len(LABELS_WEATHER)], tf.int64),
        FEATURE_GROUND: tf.io.FixedLenFeature([len(LABELS_GROUND)], tf.int64),
    }


def make_example(name: str, jpeg: bytes, weather: Sequence[int], ground: Sequence[int]) -> bytes:
    """One serialized ``tf.train.Example``."""
    import tensorflow as tf

    def _bytes(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _ints(values: Sequence[int]) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    features = {
        FEATURE_IMAGE: _bytes(jpeg),
        FEATURE_NAME: _bytes(name.encode("utf-8")),
        FEATURE_WEATHER: _ints(weather),
        FEATURE_GROUND: _ints(ground),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


@dataclass
class ShardInfo:
    file: str
    examples: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    split: str
    image_size: int
    examples: int
    shards: list[ShardInfo]
    label_counts: dict[str, int]
    skipped: list[dict[str, str]] = field(default_factory=list)
    converted: list[dict[str, str]] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    format: dict = field(
        default_factory=lambda: {
            "features": {
                FEATURE_IMAGE: "bytes: RGB JPEG, image_size x image_size",
                FEATURE_NAME: "bytes: image_name",
                FEATURE_WEATHER: f"int64[{len(LABELS_WEATHER)}]: one-hot {list(LABELS_WEATHER)}",
                FEATURE_GROUND: f"int64[{len(LABELS_GROUND)}]: multi-hot {list(LABELS_GROUND)}",
            }
        }
    )

    def write(self, directory: Path | str) -> None:
        data = asdict(self)
        write_json_atomic(Path(directory) / MANIFEST_FILE, data)

    @property
    def files(self) -> list[str]:
        return [s.file for s in self.shards]


class ShardWriter:
    """Writes serialized Examples into shards of about ``shard_bytes`` each.

    Shards are written as ``<prefix>-NNNNN`` and renamed to TFDS's
    ``-NNNNN-of-TTTTT`` by :meth:`close`, once the total is known. Meant to be used
    inside :func:`amazonia.files.atomic_dir`, so nothing is visible before it closes.
    """

    def __init__(self, directory: Path | str, split: str, shard_bytes: int):
        self.directory = Path(directory)
        self.split = split
        self.shard_bytes = shard_bytes
        self._writer = None
        self._partial: list[tuple[Path, int]] = []  # (path, examples)
        self._current_bytes = 0
        self._current_examples = 0

    def write(self, record: bytes) -> None:
        if self._writer is not None and self._current_bytes + len(record) > self.shard_bytes:
            self._close_current()
        if self._writer is None:
            self._open_next()
        self._writer.write(record)
        self._current_bytes += len(record) + 16  # TFRecord framing: length, 2 CRCs
        self._current_examples += 1

    def close(self) -> list[ShardInfo]:
        """Finish the last shard, rename all to their final names; returns their info."""
        if self._writer is not None:
            self._close_current()
        total = len(self._partial)
        shards = []
        for index, (path, examples) in enumerate(self._partial):
            final = self.directory / shard_filename(self.split, index, total)
            path.rename(final)
            shards.append(ShardInfo(final.name, examples, final.stat().st_size, sha256_file(final)))
        return shards

    def _open_next(self) -> None:
        import tensorflow as tf

        path = self.directory / f"{shard_prefix(self.split)}-{len(self._partial):05d}"
        self._writer = tf.io.TFRecordWriter(str(path))
        self._partial.append((path, 0))
        self._current_bytes = 0
        self._current_examples = 0

    def _close_current(self) -> None:
        self._writer.close()
        path, _ = self._partial[-1]
        self._partial[-1] = (path, self._current_examples)
        self._writer = None


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


def check_manifest(
    directory: Path | str, image_size: int | None = None, verify_hashes: bool = True
) -> Manifest:
    """Check a split folder against its manifest and return it.

    Every listed shard must exist with its size (and SHA-256), no unlisted shard may
    lie beside them, counts must add up and, when given, the image size must match.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    where = directory / MANIFEST_FILE
    rerun = "rerun 'dvc repro serialize' (or 'dvc pull')"
    if image_size is not None and manifest.image_size != image_size:
        raise RecordsError(
            f"{where}: records hold {manifest.image_size}px images but the model expects "
            f"{image_size}px (serialize.image_size); {rerun}"
        )
    listed = set(manifest.files)
    stray = sorted(p.name for p in directory.glob(f"{shard_prefix(manifest.split)}*") if p.name not in listed)
    if stray:
        raise RecordsError(f"{directory}: shard files not in the manifest: {', '.join(stray)}; {rerun}")
    for shard in manifest.shards:
        path = directory / shard.file
        if not _SHARD_RE.match(shard.file):
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
