"""The blessing gate: a checked candidate is published only if it scores well enough.

The smoke check proves an export faithful to its Keras model, not good. As TFX's
Evaluator blesses a candidate that clears absolute thresholds and does not regress against
the current model beyond a tolerance (its change threshold), a candidate is blessed when its
test F2 reaches both bars (``export.bless``)::

    F2 >= baseline F2 + min_gain_over_baseline
    F2 >= published F2 - max_drop_from_published

Like with like: the candidate and the published version are each scored now, on the
same test split, through their own ``serving_bytes`` signature on the chips' stored files
(each export decodes them as its training did, with its own ``evaluate.tta``), with their
own label map and thresholds from ``assets.extra/``, by the Kaggle F2 evaluate computes
(:func:`amazonia.model.metrics.score`).

* The baseline's F2 is evaluate's (``metrics/eval.json``, ``baseline.f2``): one place
  computes the trivial baseline (majority weather, training frequencies, thresholds
  tuned as the model's), which does not depend on the model.
* The published version (:func:`published_version`) is the version folder being
  replaced, ``models/<name>/<export.version>/``, if it exists; else the highest version
  in ``models/<name>/``, which TF Serving serves by default. With none, the candidate is
  a first model, judged against the baseline only (as TFX judges without a baseline
  model). One that does not load or cannot be scored is judged the same way, and the
  verdict says why: a broken served version must not block its own replacement.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from amazonia.common.errors import AmazoniaError
from amazonia.common.params import BlessParams
from amazonia.common.tf_errors import tf_error_message
from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER
from amazonia.export.chips import StoredChips, read_chips
from amazonia.export.contract import (
    INPUT_BYTES,
    SERVE_TAG,
    SIGNATURE_BYTES,
    load_assets,
    parse_version,
    published_dir,
)
from amazonia.model.metrics import score
from amazonia.model.names import OUTPUT_GROUND, OUTPUT_WEATHER

log = logging.getLogger(__name__)

SCORE_BATCH = 64  # chip files per serving_bytes call, as evaluate batches its predictions
DECIMALS = 4  # F2 as evaluate rounds it (metrics/eval.json): bars are rounded alike
BLESSED, REFUSED, NOT_JUDGED = "blessed", "refused", "not judged"
GAIN_PARAM = "export.bless.min_gain_over_baseline"
DROP_PARAM = "export.bless.max_drop_from_published"


class BlessError(AmazoniaError):
    """The gate cannot judge: no baseline to compare with, or a candidate it cannot score."""


class RefusedError(AmazoniaError):
    """The candidate scored below a bar; the message names the numbers and the params."""


@dataclass(frozen=True)
class Bar:
    """A test F2 the candidate must reach, and where it comes from."""

    f2: float
    param: str  # the param that sets it
    reference: str  # "the baseline's 0.6632", "published models/PlanetModel/1's 0.9425"
    offset: float  # the param's value, as added to the reference's F2

    def describe(self) -> str:
        sign = "+" if self.offset >= 0 else "-"
        return f"{self.f2:.4f} ({self.reference} {sign} {abs(self.offset):g}, {self.param})"


def required_bars(
    baseline_f2: float, published: str, published_f2: float | None, bless: BlessParams
) -> list[Bar]:
    """The bars a candidate must reach: the baseline's, and the published version's (named
    ``published``) when one was scored (``published_f2`` not None)."""
    gain, drop = bless.min_gain_over_baseline, bless.max_drop_from_published
    found = [Bar(round(baseline_f2 + gain, DECIMALS), GAIN_PARAM, f"the baseline's {baseline_f2:.4f}", gain)]
    if published_f2 is not None:
        reference = f"published {published}'s {published_f2:.4f}"
        found.append(Bar(round(published_f2 - drop, DECIMALS), DROP_PARAM, reference, -drop))
    return found


@dataclass(frozen=True)
class Verdict:
    """What the gate decided, and the numbers it decided on (``metrics/bless.json``)."""

    candidate: str
    target: str  # the version folder a blessed candidate is published to
    bless: BlessParams
    candidate_f2: float | None = None
    baseline_f2: float | None = None
    published: str = ""  # the published version scored, or why none was
    published_f2: float | None = None  # None: no published version scored
    not_judged: str = ""  # why the gate did not judge (a failed smoke check)

    @property
    def bars(self) -> list[Bar]:
        if self.not_judged or self.baseline_f2 is None:
            return []
        return required_bars(self.baseline_f2, self.published, self.published_f2, self.bless)

    @property
    def missed(self) -> list[Bar]:
        """The bars the candidate's F2 is below."""
        return [bar for bar in self.bars if self.candidate_f2 is None or self.candidate_f2 < bar.f2]

    @property
    def decision(self) -> str:
        if self.not_judged:
            return NOT_JUDGED
        return REFUSED if self.missed else BLESSED

    def to_json(self) -> dict[str, Any]:
        """Numbers and one string per fact, for ``dvc metrics diff`` and the PR report."""
        required = max((bar.f2 for bar in self.bars), default=None)
        return {
            "verdict": f"{NOT_JUDGED}: {self.not_judged}" if self.not_judged else self.decision,
            "candidate_f2": self.candidate_f2,
            "required_f2": required,
            "baseline_f2": self.baseline_f2,
            "published_f2": self.published_f2,
            "published": self.published or None,
            "min_gain_over_baseline": self.bless.min_gain_over_baseline,
            "max_drop_from_published": self.bless.max_drop_from_published,
        }

    def raise_if_refused(self) -> None:
        """Raise :class:`RefusedError`, one line naming every bar missed, unless blessed."""
        if self.decision == BLESSED:
            return
        if self.decision == NOT_JUDGED:
            raise RefusedError(f"candidate {self.candidate} not judged: {self.not_judged}; nothing published")
        missed = " and < ".join(bar.describe() for bar in self.missed)
        params = " or ".join(dict.fromkeys(bar.param for bar in self.missed))
        target = Path(self.target)
        left = f"{target} is unchanged" if target.exists() else f"nothing published to {target}"
        raise RefusedError(
            f"candidate {self.candidate} refused: test F2 {self.candidate_f2:.4f} < {missed}; {left}. "
            f"Publish a model that scores higher, or change {params} in params.yaml"
        )


def not_judged(candidate: Path | str, target: Path | str, bless: BlessParams, reason: str) -> Verdict:
    """The verdict on a candidate the gate did not score (``reason``: its smoke check failed)."""
    return Verdict(candidate=str(candidate), target=str(target), bless=bless, not_judged=reason)


def judge(
    candidate: Path | str,
    *,
    models_dir: Path | str,
    model_name: str,
    version: int,
    test_split: Path | str,
    eval_json: Path | str,
    bless: BlessParams,
) -> Verdict:
    """Score the candidate and the published version (:func:`published_version`) on the
    test split and decide; never raises for a refusal (:meth:`Verdict.raise_if_refused`).

    Raises:
        BlessError: ``eval_json`` holds no baseline F2 for this test split, or the candidate
            cannot be scored.
    """
    candidate = Path(candidate)
    chips = read_chips(test_split)
    baseline_f2 = read_baseline_f2(eval_json, len(chips))
    try:
        candidate_f2 = score_saved_model(candidate, chips)
    except Exception as err:  # the smoke check passed: a chip it did not try, a model it did not run
        raise BlessError(f"cannot score candidate {candidate} on {test_split}: {_describe(err)}") from None
    target = published_dir(models_dir, model_name, version)
    published = published_version(models_dir, model_name, version)
    published_f2 = None
    if published is None:
        note = f"none: no version folder in {target.parent}; judged against the baseline only"
    else:
        try:
            published_f2 = score_saved_model(published, chips)
            note = str(published)
        except Exception as err:  # a broken SavedModel raises anything from anywhere in TF
            note = (
                f"none: {published} does not load or cannot be scored ({_describe(err)}); "
                "judged against the baseline only, as a first model"
            )
            log.warning("published version %s", note.removeprefix("none: "))
    return Verdict(
        candidate=str(candidate),
        target=str(target),
        bless=bless,
        candidate_f2=candidate_f2,
        baseline_f2=baseline_f2,
        published=note,
        published_f2=published_f2,
    )


def published_version(models_dir: Path | str, model_name: str, version: int) -> Path | None:
    """The version a candidate is held against: ``models/<name>/<version>/`` if it exists
    (the folder a publication replaces), else the highest version folder in
    ``models/<name>/`` (TF Serving's default policy serves it), else None."""
    target = published_dir(models_dir, model_name, version)
    if target.is_dir():
        return target
    base = target.parent
    versions = [] if not base.is_dir() else [(parse_version(p.name), p) for p in base.iterdir() if p.is_dir()]
    numbered = [(number, path) for number, path in versions if number is not None]
    return max(numbered)[1] if numbered else None


def score_saved_model(saved_model_dir: Path | str, chips: StoredChips) -> float:
    """The Kaggle F2 (rounded as evaluate rounds it) of the SavedModel at
    ``saved_model_dir`` on ``chips``: their stored files through its ``serving_bytes``,
    its outputs' columns read by its label map, ground tags by its thresholds.

    Raises:
        AmazoniaError: its assets are missing or do not cover this vocabulary, or it has no
            ``serving_bytes`` signature.
        Exception: whatever TensorFlow raises loading or running it.
    """
    saved_model_dir = Path(saved_model_dir)
    label_map, thresholds = load_assets(saved_model_dir)
    weather_columns = _columns(label_map["weather"], LABELS_WEATHER, saved_model_dir, "weather")
    ground_columns = _columns(label_map["ground"], LABELS_GROUND, saved_model_dir, "ground")
    loaded = tf.saved_model.load(str(saved_model_dir), tags=[SERVE_TAG])
    if SIGNATURE_BYTES not in loaded.signatures:
        raise AmazoniaError(f"{saved_model_dir} has no {SIGNATURE_BYTES} signature to score chip files with")
    signature = loaded.signatures[SIGNATURE_BYTES]
    weather, ground = [], []
    starts = range(0, len(chips), SCORE_BATCH)
    for start in tqdm(starts, desc=f"score {saved_model_dir}", unit="batch", leave=False, disable=None):
        files = np.array(chips.files[start : start + SCORE_BATCH], dtype=object)
        outputs = signature(**{INPUT_BYTES: tf.constant(files)})
        weather.append(outputs[OUTPUT_WEATHER].numpy()[:, weather_columns])
        ground.append(outputs[OUTPUT_GROUND].numpy()[:, ground_columns])
    cutoffs = np.array([thresholds["ground"][label] for label in LABELS_GROUND], dtype=np.float64)
    return score(chips.weather, chips.ground, np.concatenate(weather), np.concatenate(ground), cutoffs)["f2"]


def read_baseline_f2(eval_json: Path | str, test_images: int) -> float:
    """The trivial baseline's test F2 from evaluate's metrics, which must have scored a test
    split of ``test_images`` chips.

    Raises:
        BlessError: the file is missing, holds no ``baseline.f2`` in [0, 1], or scored
            another number of test chips (evaluate did not run on this split).
    """
    path = Path(eval_json)
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        raise BlessError(f"{path}: not found; run 'dvc repro evaluate' first") from None
    except json.JSONDecodeError as err:
        raise BlessError(f"{path}: not valid JSON ({err}); rerun 'dvc repro evaluate'") from None
    baseline = metrics.get("baseline") if isinstance(metrics, dict) else None
    f2 = baseline.get("f2") if isinstance(baseline, dict) else None
    if isinstance(f2, bool) or not isinstance(f2, int | float) or not (math.isfinite(f2) and 0 <= f2 <= 1):
        raise BlessError(f"{path}: no baseline.f2 (a number in [0, 1]); rerun 'dvc repro evaluate'")
    scored = metrics.get("test_images")
    if scored != test_images:
        raise BlessError(
            f"{path} scored {scored} test chips, the test split holds {test_images}: "
            "rerun 'dvc repro evaluate' on this split"
        )
    return float(f2)


def _columns(labels: list[str], vocabulary: tuple[str, ...], where: Path, head: str) -> list[int]:
    """Where each vocabulary label is in a model's output ``head``, by its label map."""
    missing = [label for label in vocabulary if label not in labels]
    if missing:
        raise AmazoniaError(f"{where}: its label map lacks {head} label(s) {', '.join(missing)}")
    return [labels.index(label) for label in vocabulary]


def _describe(err: Exception) -> str:
    if isinstance(err, AmazoniaError):
        return str(err)
    return f"{type(err).__name__}: {tf_error_message(err)[:300]}"
