"""The serialize stage on Apache Beam (``serialize.runner: beam``): the local writer's bytes, any runner.

Imported only when that runner is chosen: the local path never pays for Beam. The
pipeline reuses the local writer's pieces, so the shards and ``manifest.json`` are
byte-identical to :func:`amazonia.data.records.writer.write_split`'s (tested):

1. ``Encode``: each chip is read through Beam's filesystems (a local path, ``gs://``,
   ``s3://``, ...) and turned into its record by :mod:`amazonia.data.records.encode`.
2. ``Plan``: the records' sizes, gathered in ``labels.csv`` order, go through the one
   shard rule (:mod:`amazonia.data.records.planner`): every record gets its shard
   deterministically. (``beam.io.WriteToTFRecord(num_shards=N)`` would assign records to
   shards at random.)
3. ``WriteShard``: one writer per shard (:class:`amazonia.data.records.tfrecord.ShardFile`),
   its records sorted by their row; final names, as the total is known by then.
4. ``Manifest``: written last, once every shard is (its side inputs wait for them): a
   folder without it is incomplete, also on object stores where a rename is a copy.

Where the runner's workers cannot write to this machine, give ``--temp_location``: the
pipeline then writes under it and the driver copies the checked files into the split
folder DVC tracks, ``data/tfrecords/<split>/``, which appears atomically as with the
local writer.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from amazonia.common.files import atomic_dir
from amazonia.data.labels import LabelRow
from amazonia.data.records import encode, writer
from amazonia.data.records.manifest import (
    ChipOutcome,
    Manifest,
    RecordsError,
    ShardInfo,
    build_manifest,
    check_manifest,
    read_manifest,
)
from amazonia.data.records.naming import MANIFEST_FILE, shard_filename
from amazonia.data.records.planner import plan_shards
from amazonia.data.records.tfrecord import ShardFile

log = logging.getLogger(__name__)

_RAW = CompressionTypes.UNCOMPRESSED  # never guess a compression from a file name
LOCAL_RUNNER = "FnApiRunner"  # the runner when beam_options name none


def write_split_beam(
    rows: Iterable[LabelRow],
    raw_dir: Path | str,
    out_dir: Path | str,
    *,
    split: str,
    shard_mb: float,
    on_bad_image: str = "skip",
    beam_options: Sequence[str] = (),
) -> Manifest:
    """:func:`amazonia.data.records.writer.write_split` as a Beam pipeline; same arguments,
    same bytes, plus ``beam_options``: pipeline flags passed to Beam verbatim
    (``--runner=DataflowRunner``, ``--temp_location=gs://...``, ``--setup_file=./setup.py``,
    ``--direct_running_mode=multi_processing``, ...). Without ``--runner``, Beam's local
    batch runner (:data:`LOCAL_RUNNER`) runs it on this machine.

    Raises:
        BadImageError: a chip fails the check and ``on_bad_image`` is ``'error'``
            (found once the pipeline ran; ``out_dir`` is left as it was).
    """
    root = str(raw_dir) if "://" in str(raw_dir) else str(Path(raw_dir).resolve())
    jobs = writer.chip_jobs(rows, root)
    options = PipelineOptions(list(beam_options))
    if options.view_as(StandardOptions).runner is None:
        # Not Beam's DirectRunner: in 2.77 it first downloads Prism (a binary from GitHub)
        # and runs there, ignoring --direct_running_mode. Its batch engine runs here, in
        # this process or in --direct_num_workers processes, with no download.
        options.view_as(StandardOptions).runner = LOCAL_RUNNER
    temp_location = options.get_all_options().get("temp_location")
    with atomic_dir(out_dir) as tmp:
        staging = (
            FileSystems.join(temp_location, f"amazonia-serialize-{split}-{uuid.uuid4().hex}")
            if temp_location
            else str(tmp)
        )
        with beam.Pipeline(options=options) as pipeline:
            _serialize(
                pipeline,
                jobs,
                staging,
                split=split,
                shard_bytes=int(shard_mb * 2**20),
            )
        if staging != str(tmp):
            _copy_down(staging, Path(tmp))
        manifest = check_manifest(tmp)
        if staging != str(tmp):
            _remove_staging(staging)
        _check_some_chip_was_read(manifest, root, split)
        if on_bad_image == "error" and manifest.skipped:
            first = manifest.skipped[0]
            path = next(job.path for job in jobs if job.name == first["image_name"])
            raise writer.bad_image_error(path, first["image_name"], first["reason"], split)
        for skipped in manifest.skipped:
            log.warning("skipped %s: %s", skipped["image_name"], skipped["reason"])
    return manifest


def _check_some_chip_was_read(manifest: Manifest, root: str, split: str) -> None:
    """Refuse a split whose every chip was unreadable: the runner's workers cannot see ``root``
    (a remote runner and this machine's ``data/raw``), which is no case of bad chips."""
    reasons = {skipped["reason"] for skipped in manifest.skipped}
    if manifest.examples == 0 and manifest.skipped and all(r.startswith(encode.UNREADABLE) for r in reasons):
        raise RecordsError(
            f"serialize@{split} on Beam: the workers could read none of the {len(manifest.skipped)} chips "
            f"under {root} (first: {manifest.skipped[0]['reason']}). A runner off this machine needs "
            "data/raw at the same path on every worker (a shared filesystem); reading chips from object "
            "storage is not supported yet. Or set serialize.runner: local"
        )


def _serialize(
    pipeline: beam.Pipeline,
    jobs: list[encode.ChipJob],
    target: str,
    *,
    split: str,
    shard_bytes: int,
) -> None:
    """The pipeline's steps (see the module docstring), writing into ``target``."""
    encoded = pipeline | "Chips" >> beam.Create(list(enumerate(jobs))) | "Encode" >> beam.Map(_encode)
    plan = (
        encoded
        | "Sizes" >> beam.Map(lambda item: (item[0], None if item[2] is None else len(item[2])))
        | "AllSizes" >> beam.combiners.ToList()
        | "Plan" >> beam.Map(_plan, shard_bytes)
    )
    shards = (
        encoded
        | "Records" >> beam.Filter(lambda item: item[2] is not None)
        | "ToShard"
        >> beam.Map(
            lambda item, plan: (plan["shard_of"][item[0]], (item[0], item[2])), beam.pvalue.AsSingleton(plan)
        )
        | "ByShard" >> beam.GroupByKey()
        | "WriteShard" >> beam.Map(_write_shard, target, split, beam.pvalue.AsSingleton(plan))
        | "AllShards" >> beam.combiners.ToList()
    )
    outcomes = (
        encoded
        | "Outcomes" >> beam.Map(lambda item: (item[0], item[1]))
        | "AllOutcomes" >> beam.combiners.ToList()
    )
    _ = (
        pipeline
        | "Once" >> beam.Create([None])
        | "Manifest"
        >> beam.Map(
            _write_manifest,
            target,
            split,
            beam.pvalue.AsSingleton(shards),
            beam.pvalue.AsSingleton(outcomes),
        )
    )


def _encode(item: tuple[int, encode.ChipJob]) -> tuple[int, ChipOutcome, bytes | None]:
    """``(row, job)`` -> ``(row, outcome, record or None)``, the chip read through Beam's filesystems."""
    row, job = item
    try:
        with FileSystems.open(job.path, compression_type=_RAW) as handle:
            data = handle.read()
    except OSError as err:  # Beam's BeamIOError is one
        result = encode.Encoded(None, encode.unreadable(err), None)
    else:
        result = encode.encode_bytes(job, data)
    outcome = ChipOutcome(job.name, job.weather, job.ground, result.error, result.format)
    return row, outcome, result.example


def _plan(sizes: list[tuple[int, int | None]], shard_bytes: int) -> dict:
    """Every record's shard (by its row) and the number of shards, by the local writer's rule."""
    records = [(row, size) for row, size in sorted(sizes) if size is not None]
    shards, total = plan_shards([size for _, size in records], shard_bytes)
    return {"shard_of": {row: shard for (row, _), shard in zip(records, shards)}, "total": total}


def _write_shard(
    grouped: tuple[int, list[tuple[int, bytes]]], target: str, split: str, plan: dict
) -> ShardInfo:
    """One shard, ``(shard, [(row, record), ...])``, by one writer, its records in row order."""
    shard, records = grouped
    name = shard_filename(split, shard, plan["total"])
    with FileSystems.create(FileSystems.join(target, name), compression_type=_RAW) as handle:
        shard_file = ShardFile(handle)
        for _, record in sorted(records, key=lambda item: item[0]):
            shard_file.write(record)
    stats = shard_file.stats()
    return ShardInfo(name, stats.examples, stats.bytes, stats.sha256)


def _write_manifest(
    _: None,
    target: str,
    split: str,
    shards: list[ShardInfo],
    outcomes: list[tuple[int, ChipOutcome]],
) -> None:
    """The manifest, once every shard is written: the split's commit marker."""
    ordered = [outcome for _, outcome in sorted(outcomes, key=lambda item: item[0])]
    manifest = build_manifest(split, sorted(shards, key=lambda s: s.file), ordered)
    with FileSystems.create(FileSystems.join(target, MANIFEST_FILE), compression_type=_RAW) as handle:
        handle.write(manifest.to_json().encode("utf-8"))


def _copy_down(staging: str, local: Path) -> None:
    """Copy a staged split (manifest first read, then each listed shard) into ``local``;
    the caller checks sizes and hashes."""
    with FileSystems.open(FileSystems.join(staging, MANIFEST_FILE), compression_type=_RAW) as handle:
        manifest_bytes = handle.read()
    (local / MANIFEST_FILE).write_bytes(manifest_bytes)
    for shard in read_manifest(local).shards:
        with FileSystems.open(FileSystems.join(staging, shard.file), compression_type=_RAW) as source:
            with open(local / shard.file, "wb") as sink:
                while block := source.read(1 << 20):
                    sink.write(block)


def _remove_staging(staging: str) -> None:
    """Delete the staged split once copied down; a failure only leaves litter, so it warns.

    Object stores have no folders: Beam deletes everything under a prefix only when the
    path ends with a separator (without one, GCS and S3 look for an object of that name).
    """
    if not FileSystems.get_filesystem(staging).has_dirs():
        staging = staging.rstrip("/") + "/"
    try:
        FileSystems.delete([staging])
    except BeamIOError as err:
        log.warning("could not delete the staged copy %s (%s); delete it by hand", staging, err)
