"""The server's answers, checked before use: a malformed one is an error naming where it came
from and what was wrong with it, never a traceback or a tag made of it.

The label map and thresholds are checked against each other, not against this code's
vocabulary: a client may be older or newer than the model it asks.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from amazonia.client.errors import ClientError
from amazonia.model.names import OUTPUT_GROUND, OUTPUT_WEATHER

SHOWN_CHARS = 120  # of a malformed value, in an error


@dataclass(frozen=True)
class LabelMap:
    """The label of each output column, by head."""

    weather: tuple[str, ...]
    ground: tuple[str, ...]


@dataclass(frozen=True)
class Scores:
    """One image's probabilities, in the label map's column order."""

    weather: list[float]
    ground: list[float]


def model_version(metadata: Any, where: str) -> int:
    """``model_spec.version`` of a metadata answer: a positive whole number, or a string of
    digits as TF Serving writes it."""
    spec = metadata.get("model_spec") if isinstance(metadata, dict) else None
    version = spec.get("version") if isinstance(spec, dict) else None
    if isinstance(version, str) and version.isascii() and version.isdigit():
        version = int(version)
    if not isinstance(version, int) or isinstance(version, bool) or version <= 0:
        raise ClientError(
            f"{where}: expected model_spec.version, a positive whole number, as TF Serving answers; "
            f"got {_show(metadata)}"
        )
    return version


def label_map(value: Any, where: str) -> LabelMap:
    """A ``{"weather": [label, ...], "ground": [label, ...]}`` answer, checked."""
    if not isinstance(value, dict):
        raise ClientError(
            f'{where}: expected {{"weather": [label, ...], "ground": [label, ...]}}; got {_show(value)}'
        )
    heads = []
    for head in (OUTPUT_WEATHER, OUTPUT_GROUND):
        labels = value.get(head)
        if not isinstance(labels, list) or not labels:
            raise ClientError(
                f"{where}: '{head}' must be a non-empty list of label names; got {_show(labels)}"
            )
        bad = [label for label in labels if not isinstance(label, str) or not label]
        if bad:
            raise ClientError(f"{where}: '{head}' holds {_show(bad[0])}, not a label name")
        repeated = sorted(label for label, n in Counter(labels).items() if n > 1)
        if repeated:
            raise ClientError(f"{where}: '{head}' names {', '.join(map(repr, repeated))} more than once")
        heads.append(tuple(labels))
    return LabelMap(weather=heads[0], ground=heads[1])


def thresholds(value: Any, labels: LabelMap, where: str) -> dict[str, float]:
    """A ``{"ground": {label: threshold, ...}}`` answer, checked: one threshold in [0, 1] for
    each ground label of ``labels``."""
    ground = value.get(OUTPUT_GROUND) if isinstance(value, dict) else None
    if not isinstance(ground, dict):
        raise ClientError(
            f'{where}: expected {{"{OUTPUT_GROUND}": {{"<label>": <threshold in [0, 1]>, ...}}}}; '
            f"got {_show(value)}"
        )
    missing = [label for label in labels.ground if label not in ground]
    unknown = [label for label in ground if label not in labels.ground]
    if missing or unknown:
        raise ClientError(
            f"{where}: the ground thresholds do not match the label map's ground labels "
            f"(missing: {', '.join(missing) or '-'}; unknown: {', '.join(map(str, unknown)) or '-'}); "
            "use the model's own assets"
        )
    for label, threshold in ground.items():
        if not _is_probability(threshold):
            raise ClientError(
                f"{where}: the threshold of '{label}' is {_show(threshold)}, not a number in [0, 1]"
            )
    return {label: float(ground[label]) for label in labels.ground}


def predictions(answer: Any, count: int, where: str) -> list[Any]:
    """The ``predictions`` list of a predict answer, one per instance sent."""
    found = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(found, list):
        raise ClientError(f'{where}: expected {{"predictions": [...]}}; got {_show(answer)}')
    if len(found) != count:
        raise ClientError(f"{where}: {count} images sent, {len(found)} predictions answered")
    return found


def scores(prediction: Any, labels: LabelMap, image: str) -> Scores:
    """One prediction's probabilities, checked: a list per head, as long as its labels, of
    finite numbers in [0, 1]."""
    if not isinstance(prediction, dict):
        raise ClientError(
            f'{image}: expected a prediction {{"{OUTPUT_WEATHER}": [...], "{OUTPUT_GROUND}": [...]}}; '
            f"got {_show(prediction)}"
        )
    heads = []
    for head, names in ((OUTPUT_WEATHER, labels.weather), (OUTPUT_GROUND, labels.ground)):
        values = prediction.get(head)
        if not isinstance(values, list):
            raise ClientError(
                f"{image}: the prediction has no list of '{head}' scores; got {_show(prediction)}"
            )
        if len(values) != len(names):
            raise ClientError(
                f"{image}: the model gives {len(values)} '{head}' scores, the label map names "
                f"{len(names)} labels; use the model's own assets"
            )
        heads.append(_probabilities(values, names, head, image))
    return Scores(weather=heads[0], ground=heads[1])


def _probabilities(values: Sequence[Any], names: Sequence[str], head: str, image: str) -> list[float]:
    for label, value in zip(names, values):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ClientError(f"{image}: the '{head}' score of '{label}' is {_show(value)}, not a number")
        if not math.isfinite(value):
            raise ClientError(
                f"{image}: the '{head}' score of '{label}' is {value}; a model that answers NaN or "
                "infinity is broken: check the served export (dvc repro smoke_check)"
            )
        if not 0 <= value <= 1:
            raise ClientError(
                f"{image}: the '{head}' score of '{label}' is {value}, not a probability in [0, 1]; "
                "is this the model the label map belongs to?"
            )
    return [float(value) for value in values]


def _is_probability(value: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and 0 <= value <= 1


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."
