"""Writing one split of chips into sharded TFRecords, in parallel and atomically.

Worker processes read and re-encode chips (:mod:`amazonia.data.records.images`, no TensorFlow);
the parent builds the Examples and streams them into shards in ``labels.csv``
order, so memory stays flat however many chips there are.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from amazonia.common.files import atomic_dir
from amazonia.data.kaggle import image_path
from amazonia.data.labels import parse_vector, vectors_to_tags
from amazonia.data.records.images import BadImageError, PreparedChip, prepare_chip_job
from amazonia.data.records.manifest import Manifest, ShardInfo, sha256_file
from amazonia.data.records.naming import partial_shard_filename, shard_filename
from amazonia.data.records.schema import make_example
from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER

log = logging.getLogger(__name__)


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
    before ``out_dir`` is touched.
    """
    jobs = [(str(image_path(raw_dir, n)), image_size, jpeg_quality) for n in rows["image_name"]]
    labels = [
        (name, parse_vector(w, len(LABELS_WEATHER)), parse_vector(g, len(LABELS_GROUND)))
        for name, w, g in zip(rows["image_name"], rows["weather_labels"], rows["ground_labels"])
    ]
    counts: Counter[str] = Counter()
    skipped, converted = [], []
    with atomic_dir(out_dir) as tmp:
        writer = ShardWriter(tmp, split, int(shard_mb * 2**20))
        results = _prepare_all(jobs, workers)
        for (name, weather, ground), (chip, error) in tqdm(
            zip(labels, results), total=len(jobs), desc=f"serialize {split}", unit="img"
        ):
            if error is not None:
                if on_bad_image == "error":
                    raise BadImageError(
                        f"{image_path(raw_dir, name)}: {error} (row {name} of split {split}); "
                        "fix or remove the file, or set serialize.on_bad_image: skip"
                    )
                log.warning("skipping %s: %s", name, error)
                skipped.append({"image_name": name, "reason": error})
                continue
            if chip.converted_from:
                converted.append({"image_name": name, "from": chip.converted_from})
            writer.write(make_example(name, chip.jpeg, weather, ground))
            counts.update(vectors_to_tags(weather, ground))
        shards = writer.close()
        manifest = Manifest(
            split=split,
            image_size=image_size,
            examples=sum(s.examples for s in shards),
            shards=shards,
            label_counts={t: counts[t] for t in LABELS_WEATHER + LABELS_GROUND},
            skipped=skipped,
            converted=converted,
        )
        manifest.write(tmp)
    return manifest


class ShardWriter:
    """Writes serialized Examples into shards of about ``shard_bytes`` each.

    Shards are written as ``<prefix>-NNNNN`` and renamed to TFDS's
    ``-NNNNN-of-TTTTT`` by :meth:`close`, once the total is known. Meant to be used
    inside :func:`amazonia.common.files.atomic_dir`, so nothing is visible before it closes.
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

        path = self.directory / partial_shard_filename(self.split, len(self._partial))
        self._writer = tf.io.TFRecordWriter(str(path))
        self._partial.append((path, 0))
        self._current_bytes = 0
        self._current_examples = 0

    def _close_current(self) -> None:
        self._writer.close()
        path, _ = self._partial[-1]
        self._partial[-1] = (path, self._current_examples)
        self._writer = None


def _prepare_all(jobs: list, workers: int) -> Iterator[tuple[PreparedChip | None, str | None]]:
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) < 64:
        yield from map(prepare_chip_job, jobs)
        return
    # spawn, not fork: the parent may have TensorFlow loaded, which is not fork-safe.
    # Workers import only amazonia.images (PIL); results come back in labels.csv order.
    with mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(prepare_chip_job, jobs, chunksize=128)
