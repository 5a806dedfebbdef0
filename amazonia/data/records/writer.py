"""Writing one split of chips into sharded TFRecords, in parallel and atomically.

Worker processes turn chips into finished records (:mod:`amazonia.data.records.encode`:
PIL and hand-encoded protobuf, no TensorFlow); the parent only cuts them into shards
(:mod:`amazonia.data.records.planner`) and writes them (:mod:`amazonia.data.records.tfrecord`)
in ``labels.csv`` order, so memory stays flat however many chips there are. The Beam
runner (:mod:`amazonia.data.records.beam_writer`) shares all three and the manifest,
and writes the same bytes.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from amazonia.common.files import atomic_dir
from amazonia.data.kaggle import image_path
from amazonia.data.labels import parse_vector
from amazonia.data.records import encode
from amazonia.data.records.images import BadImageError
from amazonia.data.records.manifest import ChipOutcome, Manifest, ShardInfo, build_manifest
from amazonia.data.records.naming import partial_shard_filename, shard_filename
from amazonia.data.records.planner import ShardPlanner
from amazonia.data.records.tfrecord import ShardFile
from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER

log = logging.getLogger(__name__)

# Chips a worker encodes per round trip: large enough that the pool's per-task
# overhead vanishes, small enough that two workers share a 1,000-chip split evenly.
CHUNK_SIZE = 64
# Below this many chips, starting worker processes costs more than it saves.
MIN_CHIPS_FOR_POOL = 64


def chip_jobs(rows: pd.DataFrame, raw_dir: Path | str) -> list[encode.ChipJob]:
    """The ``labels.csv`` rows of a split as jobs for either writer, in row order."""
    return [
        encode.ChipJob(
            name,
            str(image_path(raw_dir, name)),
            tuple(parse_vector(w, len(LABELS_WEATHER))),
            tuple(parse_vector(g, len(LABELS_GROUND))),
        )
        for name, w, g in zip(rows["image_name"], rows["weather_labels"], rows["ground_labels"])
    ]


def bad_image_error(path: str, name: str, reason: str, split: str) -> BadImageError:
    """What ``serialize.on_bad_image: error`` stops with, from either writer."""
    return BadImageError(
        f"{path}: {reason} (row {name} of split {split}); "
        "fix or remove the file, or set serialize.on_bad_image: skip"
    )


def write_split(
    rows: pd.DataFrame,
    raw_dir: Path | str,
    out_dir: Path | str,
    *,
    split: str,
    image_size: int,
    shard_mb: float,
    workers: int = 0,
    on_bad_image: str = "skip",
    jpeg_quality: int = 90,
) -> Manifest:
    """Serialize the ``labels.csv`` rows of one split into ``out_dir``; returns its manifest.

    ``out_dir`` appears only when complete (shards and manifest). A bad chip is skipped
    and listed in the manifest, or, with ``on_bad_image='error'``, stops everything
    before ``out_dir`` is touched. The bytes do not depend on ``workers``.

    Raises:
        BadImageError: a chip cannot be decoded and ``on_bad_image`` is ``'error'``.
    """
    jobs = chip_jobs(rows, raw_dir)
    planner = ShardPlanner(int(shard_mb * 2**20))
    outcomes: list[ChipOutcome] = []
    with atomic_dir(out_dir) as tmp:
        shards = _NumberedShards(Path(tmp), split)
        results = _encode_all(jobs, image_size, jpeg_quality, workers)
        for job, result in tqdm(zip(jobs, results), total=len(jobs), desc=f"serialize {split}", unit="img"):
            if result.error is not None:
                if on_bad_image == "error":
                    raise bad_image_error(job.path, job.name, result.error, split)
                log.warning("skipping %s: %s", job.name, result.error)
            else:
                shards.write(planner.assign(len(result.example)), result.example)
            outcomes.append(
                ChipOutcome(job.name, job.weather, job.ground, result.error, result.converted_from)
            )
        manifest = build_manifest(split, image_size, shards.close(), outcomes)
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


def _encode_all(
    jobs: Sequence[encode.ChipJob], image_size: int, jpeg_quality: int, workers: int
) -> Iterator[encode.Encoded]:
    """Every job's record, in job order, from ``workers`` processes (0 = all cores)."""
    args = ((job, image_size, jpeg_quality) for job in jobs)
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) < MIN_CHIPS_FOR_POOL:
        yield from map(encode.encode_file_job, args)
        return
    # fork starts a worker in milliseconds, spawn in about a second (a fresh interpreter
    # importing pandas); but TensorFlow is not fork-safe, so a parent that loaded it
    # (a test, a benchmark; the serialize stage does not) spawns. Results come in order.
    method = "spawn" if "tensorflow" in sys.modules else "fork"
    with mp.get_context(method).Pool(workers) as pool:
        yield from pool.imap(encode.encode_file_job, args, chunksize=CHUNK_SIZE)
