"""Child-process entry of the scale and architectures benchmarks: training images/s of one
architecture at one precision.

``python -m bench.train_speed SPLIT_DIR --architecture resnet50 --precision mixed_bfloat16``
trains the model on a serialized split for ``--steps`` batches and prints one JSON line:
images/s over the batches after ``--warmup`` (tracing and the first decode are not timed), and
the model's parameter count. Every layer trains (a backbone's fine-tuning or training from
scratch; a frozen warm-up is faster). A process of its own per run: Keras's dtype policy is
global.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("split_dir", type=Path, help="a serialized split, e.g. data/tfrecords/train")
    # Defaults, model and seed: the params' own defaults (amazonia/common/params.py).
    from amazonia.common.params import ARCHITECTURES, TrainParams

    train = TrainParams()
    parser.add_argument("--architecture", choices=ARCHITECTURES, default=train.architecture)
    parser.add_argument("--precision", default=train.precision)
    parser.add_argument("--image-size", type=int, default=train.image_size)
    parser.add_argument("--batch-size", type=int, default=train.batch_size)
    parser.add_argument("--steps", type=int, default=120, help="timed batches after the warm-up")
    parser.add_argument("--warmup", type=int, default=20, help="untimed batches first (at least 1)")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")

    import keras

    from amazonia.data.records.manifest import read_manifest
    from amazonia.model.distribute import set_precision
    from amazonia.model.input_pipeline import batches_per_epoch, load_epochs
    from amazonia.model.network import build_model, compile_model

    set_precision(args.precision)
    keras.utils.set_random_seed(train.seed)
    total = args.warmup + args.steps
    per_epoch = batches_per_epoch(read_manifest(args.split_dir).examples, args.batch_size)
    data, _ = load_epochs(
        args.split_dir,
        args.image_size,
        batch_size=args.batch_size,
        epoch_seeds=range(-(-total // per_epoch)),
        file_seed=train.seed,
    )
    model = build_model(
        args.image_size,
        args.architecture,
        filters=train.filters,
        dense_units=train.dense_units,
        dropout=train.dropout,
    )
    model = compile_model(model, train.learning_rate)
    stamps: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            stamps.append(time.perf_counter())

    model.fit(data, steps_per_epoch=total, epochs=1, callbacks=[Clock()], verbose=0)
    timed = stamps[args.warmup :]
    seconds = timed[-1] - stamps[args.warmup - 1]
    print(
        json.dumps(
            {
                "architecture": args.architecture,
                "precision": args.precision,
                "image_size": args.image_size,
                "parameters": model.count_params(),
                "batches": len(timed),
                "seconds": seconds,
                "images_per_s": len(timed) * args.batch_size / seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
