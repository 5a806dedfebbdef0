"""The embedded default dataset: synthetic chips in Kaggle's exact layout.

Tag sets are drawn from ``tag_combinations.csv``: how often each combination of
tags occurs among the 40,479 labelled chips of Kaggle's ``train_v2.csv`` (the one
row without a weather tag left out). Sampling whole combinations keeps every tag's
frequency *and* the co-occurrences (habitation with road, agriculture with road,
``cloudy`` alone) of the real data. Pixels come from :mod:`amazonia.data.synthetic.render`.
"""

from __future__ import annotations

import csv
import io
import multiprocessing as mp
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from amazonia.data.kaggle import IMAGE_DIR, TAGS_CSV, image_path
from amazonia.data.synthetic.render import render_chip

TAG_COMBINATIONS_FILE = Path(__file__).with_name("tag_combinations.csv")
CHIP_SIZE = 256  # Kaggle's chips are 256x256 RGB JPEGs
JPEG_QUALITY = 92


@lru_cache(maxsize=1)
def tag_combinations() -> tuple[tuple[tuple[str, ...], ...], np.ndarray]:
    """The real data's tag combinations and their probabilities."""
    with TAG_COMBINATIONS_FILE.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    combos = tuple(tuple(r["tags"].split()) for r in rows)
    counts = np.array([int(r["count"]) for r in rows], dtype=np.float64)
    return combos, counts / counts.sum()


def sample_tag_sets(n: int, seed: int) -> list[tuple[str, ...]]:
    """Draw ``n`` tag sets with the real data's joint tag statistics."""
    combos, probs = tag_combinations()
    picks = np.random.default_rng(seed).choice(len(combos), size=n, p=probs)
    return [combos[i] for i in picks]


def image_name(index: int) -> str:
    """Kaggle's naming: ``train_0``, ``train_1``, ..."""
    return f"train_{index}"


def render_jpeg(index: int, tags: tuple[str, ...], seed: int) -> bytes:
    """The JPEG bytes of chip ``index``; each chip has its own seeded stream, so the
    result does not depend on how the work is split across processes."""
    rng = np.random.default_rng([seed, index])
    pixels = render_chip(tags, rng, size=CHIP_SIZE)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _write_chip(job: tuple[Path, int, tuple[str, ...], int]) -> None:
    root, index, tags, seed = job
    image_path(root, image_name(index)).write_bytes(render_jpeg(index, tags, seed))


def generate_dataset(root: Path | str, n_images: int, seed: int, workers: int = 0) -> list[tuple[str, ...]]:
    """Write ``n_images`` chips and ``train_v2.csv`` under ``root``; returns the tag sets.

    Deterministic for a given ``seed`` whatever ``workers`` is (0 = all cores).
    """
    root = Path(root)
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    tag_sets = sample_tag_sets(n_images, seed)
    jobs = [(root, i, tags, seed) for i, tags in enumerate(tag_sets)]
    workers = workers or os.cpu_count() or 1
    progress = tqdm(total=n_images, desc="render chips", unit="img")
    if workers == 1:
        for job in jobs:
            _write_chip(job)
            progress.update()
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_chip, jobs, chunksize=32):
                progress.update()
    progress.close()
    with (root / TAGS_CSV).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_name", "tags"])
        writer.writerows((image_name(i), " ".join(tags)) for i, tags in enumerate(tag_sets))
    return tag_sets
