"""Stage serialize (one per split): labels.csv rows -> sharded TFRecords + manifest.

Usage: python stages/serialize.py <split>
"""

import sys

import pandas as pd

from amazonia.errors import AmazoniaError
from amazonia.labels import SPLITS
from amazonia.params import load_params
from amazonia.paths import LABELS_CSV, RAW_DIR, RECORDS_DIR
from amazonia.stage import run_stage
from amazonia.writer import write_split


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in SPLITS:
        raise AmazoniaError(f"usage: serialize.py {{{'|'.join(SPLITS)}}}")
    split = sys.argv[1]
    params = load_params().serialize
    labels = pd.read_csv(LABELS_CSV, dtype=str, keep_default_na=False)
    write_split(
        labels[labels["split"] == split],
        RAW_DIR,
        RECORDS_DIR / split,
        split=split,
        image_size=params.image_size,
        shard_mb=params.shard_mb,
        workers=params.workers,
        on_bad_image=params.on_bad_image,
        jpeg_quality=params.jpeg_quality,
    )


if __name__ == "__main__":
    run_stage(main)
