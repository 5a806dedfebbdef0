"""Writing one split of chips into sharded TFRecords, in parallel and atomically.

Worker processes read and re-encode chips (:mod:`amazonia.images`, no TensorFlow);
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

from amazonia.files import atomic_dir
from amazonia.images import BadImageError, PreparedChip, prepare_chip_job
from amazonia.kaggle import image_path
from amazonia.labels import LABELS_GROUND, LABELS_WEATHER, parse_vector, vectors_to_tags
from amazonia.records import Manifest, ShardWriter, make_example

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


def _prepare_all(jobs: list, workers: int) -> Iterator[tuple[PreparedChip | None, str | None]]:
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) < 64:
        yield from map(prepare_chip_job, jobs)
        return
    # spawn, not fork: the parent may have TensorFlow loaded, which is not fork-safe.
    # Workers import only amazonia.images (PIL); results come back in labels.csv order.
    with mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(prepare_chip_job, jobs, chunksize=128)
