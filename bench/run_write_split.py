"""Child-process entry of the serialize benchmark: ``write_split`` on the first N chips.

``python -m bench.run_write_split RAW_DIR OUT_DIR --n N`` runs nothing but the
serializer, so the sampled process holds it alone, and TensorFlow is not loaded, as in
the serialize stage. Prints one JSON line with
``write_split``'s own wall time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw_dir", type=Path, help="a folder in Kaggle's layout")
    parser.add_argument("out_dir", type=Path, help="the split folder to write")
    parser.add_argument("--n", type=int, required=True, help="serialize the first N chips")
    parser.add_argument("--shard-mb", type=float, default=16)
    parser.add_argument("--report", type=Path, help="also write the JSON line to this file")
    args = parser.parse_args(argv)

    from amazonia.data.records.writer import write_split
    from bench.common import all_rows

    rows = all_rows(args.raw_dir)[: args.n]
    start = time.perf_counter()
    manifest = write_split(rows, args.raw_dir, args.out_dir, split="train", shard_mb=args.shard_mb)
    seconds = time.perf_counter() - start
    if manifest.examples != args.n:
        raise SystemExit(f"wrote {manifest.examples} of {args.n} examples; skipped: {manifest.skipped}")
    # One JSON line for bench.serialize's throughput runs: write_split's own wall time.
    shards = {"shards": len(manifest.shards), "bytes": sum(s.bytes for s in manifest.shards)}
    line = json.dumps({"seconds": seconds, "examples": manifest.examples, **shards})
    print(line)
    if args.report:
        args.report.write_text(line)


if __name__ == "__main__":
    main()
