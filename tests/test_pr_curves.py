"""Per-label precision-recall curves (amazonia/model/pr_curves.py): the table on made-up
predictions, then the tiny run's metrics/eval/ground_pr.csv and what `dvc plots show`
makes of it with our template."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from amazonia.data.vocabulary import LABELS_GROUND
from amazonia.model import pr_curves
from amazonia.model.metrics import THRESHOLD_GRID
from tests.conftest import BIN, run

DVC = str(BIN / "dvc")
STEPS = [f"{t / 100:.2f}" for t in range(101)]


def test_every_tuning_threshold_is_a_curve_step() -> None:
    assert set(THRESHOLD_GRID.tolist()) <= set(pr_curves.CURVE_THRESHOLDS.tolist())


def test_one_row_per_label_and_step_counted_as_score_counts() -> None:
    # Four chips; only agriculture (column 0) is interesting, every other label has no true chip.
    truth = np.zeros((4, len(LABELS_GROUND)), dtype=int)
    truth[:2, 0] = 1
    probs = np.zeros((4, len(LABELS_GROUND)), dtype=np.float32)
    probs[:, 0] = [0.9, 0.3, 0.6, 0.1]
    thresholds = np.full(len(LABELS_GROUND), 0.5)
    thresholds[0] = 0.3
    rows = pr_curves.precision_recall_rows(truth, probs, thresholds)

    assert len(rows) == len(LABELS_GROUND) * 101
    assert [r["label"] for r in rows[::101]] == list(LABELS_GROUND)
    agriculture = {r["threshold"]: r for r in rows[:101]}
    assert list(agriculture) == STEPS
    assert agriculture["0.00"] == {
        "label": "agriculture",
        "threshold": "0.00",
        "precision": 0.5,
        "recall": 1.0,
        "tuned": 0,
    }
    assert (agriculture["0.30"]["precision"], agriculture["0.30"]["recall"]) == (0.6667, 1.0)  # p >= t
    assert (agriculture["0.31"]["precision"], agriculture["0.31"]["recall"]) == (0.5, 0.5)
    assert (agriculture["0.61"]["precision"], agriculture["0.61"]["recall"]) == (1.0, 0.5)
    assert agriculture["0.91"]["precision"] is None  # nothing predicted: no precision, not 0
    assert [t for t, r in agriculture.items() if r["tuned"]] == ["0.30"]
    # No true chip: no recall anywhere; the tuned mark still sits on its threshold.
    water = [r for r in rows if r["label"] == "water"]
    assert {r["recall"] for r in water} == {None}
    assert [r["threshold"] for r in water if r["tuned"]] == ["0.50"]


def read_curves(path: Path) -> dict[str, list[dict[str, str]]]:
    series = defaultdict(list)
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            series[row["label"]].append(row)
    return series


@pytest.mark.slow
def test_the_tiny_runs_curves_mark_the_tuned_thresholds_with_eval_jsons_numbers(tiny_pipeline: Path) -> None:
    repo = tiny_pipeline
    series = read_curves(repo / "metrics/eval/ground_pr.csv")
    assert list(series) == list(LABELS_GROUND)
    assert all([r["threshold"] for r in rows] == STEPS for rows in series.values())

    tuned = json.loads((repo / "models/thresholds.json").read_text())["ground"]
    scored = json.loads((repo / "metrics/eval.json").read_text())["ground"]
    for label, rows in series.items():
        (mark,) = [r for r in rows if r["tuned"] == "1"]
        assert float(mark["threshold"]) == tuned[label]
        for column in ("precision", "recall"):
            # Empty where undefined; eval.json writes 0 there.
            assert float(mark[column] or 0) == scored[label][column], (label, column)


@pytest.mark.slow
def test_dvc_draws_one_line_per_label_with_our_template(tiny_pipeline: Path) -> None:
    shown = json.loads(
        run([DVC, "plots", "show", "--json", "metrics/eval/ground_pr.csv"], tiny_pipeline).stdout
    )
    (plot,) = shown["data"]["metrics/eval/ground_pr.csv"]
    spec = plot["content"]
    assert spec["spec"]["encoding"]["color"]["field"] == "label"
    assert spec["spec"]["encoding"]["x"]["field"] == "recall"
    assert spec["spec"]["encoding"]["y"]["field"] == "precision"
    assert spec["facet"]["column"]["field"] == "rev"  # base and change side by side
    values = spec["data"]["values"]
    assert len(values) == len(LABELS_GROUND) * 101
    assert {v["label"] for v in values} == set(LABELS_GROUND)
