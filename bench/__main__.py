"""``python -m bench [NAME ...]``: run the benchmarks and print their markdown reports.

Sizes come from ``BENCH_N``, ``BENCH_SERIALIZE_N``, ``BENCH_MEM_N``, ``BENCH_SEED``, ``BENCH_REPEATS`` or the
options below.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys

# Every benchmark, in the order they run. Each is a module bench/<name>.py with
# ``run(settings: bench.common.Settings) -> str`` returning its markdown report.
BENCHMARKS: tuple[str, ...] = (
    "serialize",
    "input_pipeline",
    "serving",
    "client",
)
# Run only when named: the whole pipeline at Kaggle scale (``make bench-scale``, minutes),
# what decoder bombs cost TensorFlow (a minute), the threshold strategies on a trained
# project (``BENCH_PROJECT``, default this checkout), the training speed of every
# train.architecture (minutes), the export of every train.architecture against Keras's
# model.export (minutes), ConvNeXt trained and served with grouped against depthwise
# convolutions (minutes), and model quality per configuration at Kaggle scale (``make bench-quality``, hours).
ON_REQUEST: tuple[str, ...] = (
    "scale", "decoder_bombs", "thresholds", "architectures", "export", "grouped_conv", "quality",
)  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"of {', '.join(BENCHMARKS + ON_REQUEST)} (default: all but {', '.join(ON_REQUEST)})",
    )
    parser.add_argument("--n", type=int, help="chips for throughput and size (BENCH_N, default 2000)")
    parser.add_argument(
        "--serialize-n", type=int, help="chips of the serialize comparison (BENCH_SERIALIZE_N, 20000)"
    )
    parser.add_argument(
        "--mem-n", type=int, help="chips of the smaller peak-memory run, the larger 4x (BENCH_MEM_N, 1000)"
    )
    parser.add_argument("--seed", type=int, help="synthetic chip seed (BENCH_SEED, default 0)")
    parser.add_argument("--repeats", type=int, help="timed runs per method, median kept (BENCH_REPEATS, 3)")
    parser.add_argument("--scale-n", type=int, help="scale: data.n_images (BENCH_SCALE_N, 40479)")
    parser.add_argument(
        "--scale-epochs", type=int, help="scale: train.epochs, 0 = params.yaml's (BENCH_SCALE_EPOCHS, 0)"
    )
    parser.add_argument("--quality-n", type=int, help="quality: data.n_images (BENCH_QUALITY_N, 40479)")
    parser.add_argument(
        "--quality-configs", help="quality: configurations, comma-separated (BENCH_QUALITY_CONFIGS, all)"
    )
    parser.add_argument(
        "--quality-epochs", type=int, help="quality: train.epochs of every run, 0 = each its own (0)"
    )
    parser.add_argument(
        "--quality-image-size", type=int, help="quality: train.image_size of every run, 0 = each its own (0)"
    )
    parser.add_argument(
        "--no-quality-thresholds",
        dest="quality_thresholds",
        action="store_const",
        const=0,
        help="quality: skip the threshold strategies' comparison on each run (BENCH_QUALITY_THRESHOLDS=0)",
    )
    args = parser.parse_args(argv)
    known = BENCHMARKS + ON_REQUEST
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    zero_allowed = ("seed", "scale_epochs", "quality_epochs", "quality_image_size")
    options = ("n", "serialize_n", "mem_n", "repeats", "scale_n", "quality_n", *zero_allowed)
    for option in options:
        value = getattr(args, option)
        if value is not None and value < (0 if option in zero_allowed else 1):
            parser.error(f"--{option.replace('_', '-')} {value}: too small")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Imported only now: the modules pull in TensorFlow.
    from bench.common import Settings, machine_description

    given = {
        "n": args.n,
        "serialize_n": args.serialize_n,
        "mem_n": args.mem_n,
        "seed": args.seed,
        "repeats": args.repeats,
        "scale_n": args.scale_n,
        "scale_epochs": args.scale_epochs,
        "quality_n": args.quality_n,
        "quality_configs": args.quality_configs,
        "quality_epochs": args.quality_epochs,
        "quality_image_size": args.quality_image_size,
        "quality_thresholds": args.quality_thresholds,
    }
    overrides = {k: v for k, v in given.items() if v is not None}
    settings = dataclasses.replace(Settings.from_env(), **overrides)
    print(f"# Benchmarks\n\nMachine: {machine_description()}\n", flush=True)
    for name in args.names or BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        print(module.run(settings) + "\n", flush=True)


if __name__ == "__main__":
    main()
