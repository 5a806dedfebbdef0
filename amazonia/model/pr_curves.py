"""Per-label precision and recall of the ground tags over a fixed threshold grid: a DVC plot table.

One row per ground label and threshold step, ``tuned`` = 1 on the step that is the
label's tuned threshold, so a template can draw one line per label and mark the
point the model uses. Counted as :func:`amazonia.model.metrics.score` counts (a tag
is on at ``p >= t``), so a tuned row carries the precision and recall that
``metrics/eval.json`` reports for its label, except where they are undefined: a
step that predicts no chip has no precision, a label with no true chip no recall.
There ``eval.json`` says 0 and the table leaves the cell empty, so the curve stops
instead of diving to (0, 0).
"""

from __future__ import annotations

import numpy as np

from amazonia.data.vocabulary import LABELS_GROUND

# 0.00, 0.01, ..., 1.00: holds every value of metrics.THRESHOLD_GRID (0.02 steps) and every
# blended threshold (rounded to metrics.THRESHOLD_DECIMALS) exactly, so each label's
# chosen threshold is one of its rows.
CURVE_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)


def precision_recall_rows(
    ground_true: np.ndarray, ground_prob: np.ndarray, thresholds: np.ndarray
) -> list[dict[str, str | float | int | None]]:
    """Rows ``label, threshold, precision, recall, tuned``: labels in vocabulary order, thresholds
    rising; ``None`` where precision or recall is undefined."""
    truth = ground_true.astype(bool)
    rows: list[dict[str, str | float | int | None]] = []
    for j, label in enumerate(LABELS_GROUND):
        on = ground_prob[:, j][:, None] >= CURVE_THRESHOLDS[None, :]  # images x thresholds
        positive = truth[:, j][:, None]
        tp = (on & positive).sum(axis=0)
        predicted, actual = on.sum(axis=0), positive.sum()
        precision = np.divide(tp, predicted, out=np.zeros(len(tp)), where=predicted > 0)
        recall = np.divide(tp, actual, out=np.zeros(len(tp)), where=actual > 0)
        tuned = int(np.argmin(np.abs(CURVE_THRESHOLDS - thresholds[j])))
        rows += [
            {
                "label": label,
                "threshold": f"{t:.2f}",
                "precision": round(float(p), 4) if n > 0 else None,
                "recall": round(float(r), 4) if actual > 0 else None,
                "tuned": int(k == tuned),
            }
            for k, (t, p, r, n) in enumerate(zip(CURVE_THRESHOLDS, precision, recall, predicted))
        ]
    return rows
