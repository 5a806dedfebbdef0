"""Stage serialize (one per split): labels.csv rows -> sharded TFRecords + manifest.

Usage: python stages/serialize.py <split>
"""

import sys

from amazonia.common.errors import AmazoniaError
from amazonia.common.params import load_params
from amazonia.common.paths import LABELS_CSV, RAW_DIR, RECORDS_DIR
from amazonia.common.stage import run_stage
from amazonia.data.labels import SPLITS, read_split_rows
from amazonia.data.records.writer import write_split


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in SPLITS:
        raise AmazoniaError(f"usage: serialize.py {{{'|'.join(SPLITS)}}}")
    split = sys.argv[1]
    params = load_params()
    write_split(
        read_split_rows(LABELS_CSV, split),
        RAW_DIR,
        RECORDS_DIR / split,
        split=split,
        image_size=params.serialize.image_size,
        shard_mb=params.serialize.shard_mb,
        on_bad_image=params.serialize.on_bad_image,
        jpeg_quality=params.serialize.jpeg_quality,
        workers=params.runtime.workers,
    )


if __name__ == "__main__":
    run_stage(main)
