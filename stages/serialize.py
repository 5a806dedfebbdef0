"""Stage serialize (one per split): labels.csv rows -> sharded TFRecords + manifest.

Usage: python stages/serialize.py <split>

``serialize.runner`` picks the local writer (one process) or Apache Beam; both write the same bytes.
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
    rows = read_split_rows(LABELS_CSV, split)
    shape = dict(split=split, shard_mb=params.serialize.shard_mb, on_bad_image=params.serialize.on_bad_image)
    if params.serialize.runner == "beam":
        beam_writer = _import_beam_writer()
        beam_writer.write_split_beam(
            rows, RAW_DIR, RECORDS_DIR / split, beam_options=params.serialize.beam_options, **shape
        )
    else:
        write_split(rows, RAW_DIR, RECORDS_DIR / split, **shape)


def _import_beam_writer():
    """The Beam runner, imported only when chosen (Beam takes seconds to import)."""
    try:
        from amazonia.data.records import beam_writer
    except ModuleNotFoundError as err:
        if err.name is None or err.name.split(".")[0] != "apache_beam":
            raise
        raise AmazoniaError(
            "serialize.runner: beam needs Apache Beam, which is not installed: "
            "make install BEAM=1 (make test installs it too), "
            "or set serialize.runner: local"
        ) from None
    return beam_writer


if __name__ == "__main__":
    run_stage(main)
