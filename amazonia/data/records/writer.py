"""Writing one split of chips into sharded TFRecords, atomically.

Each chip becomes its finished record (:mod:`amazonia.data.records.encode`: the chip's
bytes, checked, and hand-encoded protobuf; no TensorFlow, no pixel decoded), is cut into
a shard (:mod:`amazonia.data.records.planner`) and written
(:mod:`amazonia.data.records.tfrecord`) in ``labels.csv`` order, one chip in memory at a
time. One process: a chip costs tens of microseconds, and handing its record from a pool
worker to the writer costs about as much (measured: two workers wrote 4,000 chips
slower than one process). The Beam runner (:mod:`amazonia.data.records.beam_writer`)
shares all three and the manifest, and writes the same bytes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from amazonia.common.files import atomic_dir
from amazonia.data.kaggle import IMAGE_SUFFIX, image_path
from amazonia.data.labels import LabelRow, parse_vector
from amazonia.data.records import encode
from amazonia.data.records.images import BadImageError
from amazonia.data.records.manifest import ChipOutcome, Manifest, ShardInfo, build_manifest
from amazonia.data.records.naming import partial_shard_filename, shard_filename
from amazonia.data.records.planner import ShardPlanner
from amazonia.data.records.tfrecord import ShardFile
from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER

log = logging.getLogger(__name__)


def chip_jobs(rows: Iterable[LabelRow], raw_dir: Path | str) -> list[encode.ChipJob]:
    """The ``labels.csv`` rows of a split as jobs for either writer, in row order."""
    folder = str(image_path(raw_dir, "_").parent)  # one Path, not one per chip
    return [
        encode.ChipJob(
            row.image_name,
            os.path.join(folder, f"{row.image_name}{IMAGE_SUFFIX}"),
            tuple(parse_vector(row.weather_labels, len(LABELS_WEATHER))),
            tuple(parse_vector(row.ground_labels, len(LABELS_GROUND))),
        )
        for row in rows
    ]


def bad_image_error(path: str, name: str, reason: str, split: str) -> BadImageError:
    """What ``serialize.on_bad_image: error`` stops with, from either writer."""
    return BadImageError(
        f"{path}: {reason} (row {name} of split {split}); "
        "fix or remove the file, or set serialize.on_bad_image: skip"
    )


def write_split(
    rows: Iterable[LabelRow],
    raw_dir: Path | str,
    out_dir: Path | str,
    *,
    split: str,
    shard_mb: float,
    on_bad_image: str = "skip",
) -> Manifest:
    """Serialize the ``labels.csv`` rows of one split into ``out_dir``; returns its manifest.

    Each record holds the chip file's bytes as they are, once they passed
    :func:`amazonia.data.records.images.check_image`. ``out_dir`` appears only when
    complete (shards and manifest). A bad chip is skipped
    and listed in the manifest, or, with ``on_bad_image='error'``, stops everything
    before ``out_dir`` is touched.

    Raises:
        BadImageError: a chip fails the check and ``on_bad_image`` is ``'error'``.
    """
    jobs = chip_jobs(rows, raw_dir)
    planner = ShardPlanner(int(shard_mb * 2**20))
    outcomes: list[ChipOutcome] = []
    with atomic_dir(out_dir) as tmp:
        shards = _NumberedShards(Path(tmp), split)
        results = map(encode.encode_file, jobs)
        for job, result in tqdm(zip(jobs, results), total=len(jobs), desc=f"serialize {split}", unit="img"):
            if result.error is not None:
                if on_bad_image == "error":
                    raise bad_image_error(job.path, job.name, result.error, split)
                log.warning("skipping %s: %s", job.name, result.error)
            else:
                shards.write(planner.assign(len(result.example)), result.example)
            outcomes.append(ChipOutcome(job.name, job.weather, job.ground, result.error, result.format))
        manifest = build_manifest(split, shards.close(), outcomes)
        manifest.write(tmp)
    return manifest


class _NumberedShards:
    """Shard files written one after the other as ``<prefix>-NNNNN``, renamed to TFDS's
    ``-NNNNN-of-TTTTT`` by :meth:`close`, once the total is known."""

    def __init__(self, directory: Path, split: str):
        self.directory = directory
        self.split = split
        self._handle = None
        self._shards: list[tuple[Path, ShardFile]] = []  # every shard started, in order

    def write(self, shard: int, record: bytes) -> None:
        """Append ``record`` to shard ``shard``: the current one or the next."""
        if shard != len(self._shards) - 1:
            self._close_current()
            path = self.directory / partial_shard_filename(self.split, shard)
            self._handle = open(path, "wb")  # closed in _close_current
            self._shards.append((path, ShardFile(self._handle)))
        self._shards[-1][1].write(record)

    def close(self) -> list[ShardInfo]:
        """Finish the last shard and rename all to their final names; returns their info."""
        self._close_current()
        total = len(self._shards)
        infos = []
        for index, (path, shard) in enumerate(self._shards):
            final = self.directory / shard_filename(self.split, index, total)
            path.rename(final)
            stats = shard.stats()
            infos.append(ShardInfo(final.name, stats.examples, stats.bytes, stats.sha256))
        return infos

    def _close_current(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle = None
