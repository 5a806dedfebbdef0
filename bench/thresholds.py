"""Threshold strategies compared on a trained project: test F2 for each ``evaluate.thresholds``.

Run it in any project copy where ``dvc repro evaluate`` has run (it reads
``models/model.keras``, ``data/tfrecords/{train,val,test}`` and ``params.yaml``'s
``evaluate.tta``; nothing is written there)::

    python -m bench.thresholds [PROJECT_DIR]     # default: this checkout
    BENCH_PROJECT=PROJECT_DIR python -m bench thresholds

The model predicts val and test once (as evaluate does, with the project's TTA); then
each strategy of :func:`amazonia.model.metrics.choose_thresholds` chooses thresholds on
val, and test is scored: the Kaggle F2, the mean F2 of the five rarest ground labels
(fewest positives in train), and each strategy's F2 gain over ``per_label`` (today's
default) with a 95 % interval from a paired bootstrap over test chips: an interval
that holds 0 is no evidence either way.

One split says little at a few hundred chips, so the same predictions are also re-split:
val and test pooled, ``RESPLITS`` times cut in random halves, thresholds chosen on one
half and scored on the other; reported are each strategy's mean gain over ``per_label``
and how often it beat it. At the default scale it all takes about 90 s on 2 cores;
at Kaggle's the re-splits dominate, about 3 s each for 4,000 + 4,000 chips (timed on
synthetic arrays), 5 minutes in all.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import yaml

from bench.common import (
    PROJECT_ROOT,
    Settings,
    machine_description,
    markdown_table,
    rarest_ground_labels,
    save_results,
    timer,
)

log = logging.getLogger(__name__)

RARE_LABELS = 5
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
RESPLITS = 100
RESPLIT_SEED = 0


def per_image_f2(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Each image's F2 over its 17 tags (0 with no true and no predicted tag), Kaggle's way."""
    from amazonia.model.metrics import BETA

    truth, predicted = truth.astype(bool), predicted.astype(bool)
    tp = (truth & predicted).sum(1)
    fp = (~truth & predicted).sum(1)
    fn = (truth & ~predicted).sum(1)
    b2 = BETA**2
    denominator = (1 + b2) * tp + b2 * fn + fp
    return np.divide((1 + b2) * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)


def compare(project: Path) -> dict:
    """Predict val and test in ``project``, then score every strategy on test."""
    from amazonia.common.paths import MODEL_KERAS, RECORDS_DIR
    from amazonia.data.vocabulary import LABELS_GROUND
    from amazonia.model.evaluation import predict_split
    from amazonia.model.metrics import THRESHOLD_STRATEGIES, choose_thresholds, predict_tags, score
    from amazonia.model.network import load_for_inference

    params = yaml.safe_load((project / "params.yaml").read_text()) or {}
    tta = (params.get("evaluate") or {}).get("tta", "none")
    model = load_for_inference(project / MODEL_KERAS)
    with timer() as took:
        val = predict_split(model, project / RECORDS_DIR / "val", tta)
        test = predict_split(model, project / RECORDS_DIR / "test", tta)
    log.info("predicted %d val and %d test chips in %.1f s", len(val[0]), len(test[0]), took.seconds)
    rare = rarest_ground_labels(project / RECORDS_DIR / "train", RARE_LABELS)

    truth = np.hstack(test[:2])
    per_image, results = {}, {}
    for strategy in THRESHOLD_STRATEGIES:
        thresholds = choose_thresholds(strategy, *val)
        scored = score(*test, thresholds)
        per_image[strategy] = per_image_f2(truth, predict_tags(test[2], test[3], thresholds))
        results[strategy] = {
            "f2": scored["f2"],
            "rare_f2": round(float(np.mean([scored["ground"][label]["f2"] for label in rare])), 4),
            "thresholds": dict(zip(LABELS_GROUND, map(float, thresholds))),
        }
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    samples = rng.integers(0, len(truth), (BOOTSTRAP_SAMPLES, len(truth)))
    for strategy, f2 in per_image.items():
        gains = (f2 - per_image["per_label"])[samples].mean(axis=1)
        low, high = np.percentile(gains, [2.5, 97.5])
        results[strategy]["gain"] = round(float(np.mean(f2 - per_image["per_label"])), 4)
        results[strategy]["gain_95"] = [round(float(low), 4), round(float(high), 4)]
    results_resplit = resplit(val, test)
    for strategy, found in results_resplit.items():
        results[strategy].update(found)
    return {
        "project": str(project),
        "tta": tta,
        "val_images": len(val[0]),
        "test_images": len(test[0]),
        "rare_labels": rare,
        "strategies": results,
    }


def resplit(val: tuple[np.ndarray, ...], test: tuple[np.ndarray, ...]) -> dict[str, dict]:
    """Each strategy's F2 gain over ``per_label`` on :data:`RESPLITS` random halves of val + test
    (chosen on one half, scored on the other): its mean and standard deviation, and the
    share of re-splits it beat ``per_label``."""
    from amazonia.model.metrics import THRESHOLD_STRATEGIES, choose_thresholds, score

    pooled = tuple(np.concatenate([v, t]) for v, t in zip(val, test))
    rng = np.random.default_rng(RESPLIT_SEED)
    gains: dict[str, list[float]] = {strategy: [] for strategy in THRESHOLD_STRATEGIES}
    for _ in range(RESPLITS):
        order = rng.permutation(len(pooled[0]))
        choose, judge = order[: len(order) // 2], order[len(order) // 2 :]
        f2 = {
            strategy: score(
                *(part[judge] for part in pooled),
                choose_thresholds(strategy, *(part[choose] for part in pooled)),
            )["f2"]
            for strategy in THRESHOLD_STRATEGIES
        }
        for strategy in THRESHOLD_STRATEGIES:
            gains[strategy].append(f2[strategy] - f2["per_label"])
    return {
        strategy: {
            "resplit_gain": round(float(np.mean(found)), 4),
            "resplit_gain_sd": round(float(np.std(found)), 4),
            "resplit_wins": round(float(np.mean(np.array(found) > 0)), 2),
        }
        for strategy, found in gains.items()
    }


def format_report(results: dict) -> str:
    rare = ", ".join(f"{label} ({n})" for label, n in results["rare_labels"].items())
    rows = [
        (
            name,
            f"{r['f2']:.4f}",
            f"{r['gain']:+.4f} [{r['gain_95'][0]:+.4f}, {r['gain_95'][1]:+.4f}]",
            f"{r['rare_f2']:.4f}",
            f"{r['resplit_gain']:+.4f} ± {r['resplit_gain_sd']:.4f}",
            f"{r['resplit_wins']:.0%}",
        )
        for name, r in results["strategies"].items()
    ]
    labels = list(results["strategies"]["per_label"]["thresholds"])
    threshold_rows = [
        (label, *(f"{r['thresholds'][label]:.2f}" for r in results["strategies"].values()))
        for label in labels
    ]
    return "\n".join(
        [
            f"## Ground thresholds: {results['val_images']:,} val chips to choose, "
            f"{results['test_images']:,} test chips to score (tta {results['tta']})",
            "",
            markdown_table(
                [
                    "evaluate.thresholds",
                    "test F2",
                    "gain over per_label [95 % bootstrap]",
                    "F2, 5 rarest",
                    f"gain, {RESPLITS} re-splits (mean ± sd)",
                    "beats per_label",
                ],
                rows,
            ),
            "",
            f"Rarest ground labels (positives in train): {rare}.",
            "",
            markdown_table(["label", *results["strategies"]], threshold_rows),
        ]
    )


def run(settings: Settings) -> str:
    """Compare in ``BENCH_PROJECT`` (default: this checkout); save ``bench/.work/thresholds.json``."""
    project = Path(os.environ.get("BENCH_PROJECT", PROJECT_ROOT)).resolve()
    results = compare(project)
    save_results("thresholds", settings, results)
    return format_report(results)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("project", nargs="?", type=Path, default=PROJECT_ROOT, help="a trained project copy")
    args = parser.parse_args(argv)
    os.environ["BENCH_PROJECT"] = str(args.project)
    print(f"Machine: {machine_description()}\n")
    print(run(Settings.from_env()))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
