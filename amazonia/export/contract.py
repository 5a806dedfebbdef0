"""The serving contract of an export, and TF Serving's folder layout: no TensorFlow here.

What an exported model promises (signature names, input and output names, dtypes,
shapes; the assets beside it) and where it lives on disk are facts that the
exporter, the smoke check, the server and the client all need; a client must not
pay for importing TensorFlow to know them.

Layout (TF Serving's): ``models/<name>/<version>/`` holds a published SavedModel,
the folder that ``amazonia serve`` and ``tensorflow_model_server`` poll. The export
stage writes a *candidate* to ``models/candidates/<name>/<version>/``, which nobody
serves; the smoke check publishes it only after it passed. Pollers load only folders
named by a positive integer, so a version being published is copied under another
name (``.tmp-<version>.*``) first.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from amazonia.common.errors import AmazoniaError
from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER
from amazonia.model.names import INPUT_NAME, OUTPUT_GROUND, OUTPUT_WEATHER

SERVE_TAG = "serve"  # tf.saved_model.SERVING, the tag-set TF Serving loads
SIGNATURE_FLOAT = "serving_default"
SIGNATURE_BYTES = "serving_bytes"
INPUT_BYTES = "image_bytes"
ASSETS_EXTRA = "assets.extra"
LABEL_MAP_ASSET = "label_map.json"
THRESHOLDS_ASSET = "thresholds.json"
# TF Serving's warmup file, in ASSETS_EXTRA (amazonia.export.warmup writes and reads it).
WARMUP_REQUESTS_ASSET = "tf_serving_warmup_requests"

BATCH = -1  # any batch size, as saved_model_cli shows it
IMAGE_SIZE = "S"  # stands for the model's input size (train.image_size) in the shapes below


class ExportError(AmazoniaError):
    """The model or its companion files cannot be exported as they are."""


@dataclass(frozen=True)
class TensorContract:
    """One input or output of a signature: TensorFlow dtype name and shape."""

    dtype: str
    shape: tuple[int | str, ...]  # BATCH for any size, IMAGE_SIZE for the chip size

    def describe(self, image_size: int) -> dict[str, Any]:
        """``{"dtype", "shape"}`` with the image size filled in, as the smoke check reports it."""
        return {"dtype": self.dtype, "shape": [image_size if d == IMAGE_SIZE else d for d in self.shape]}


@dataclass(frozen=True)
class SignatureContract:
    inputs: Mapping[str, TensorContract]
    outputs: Mapping[str, TensorContract]

    def describe(self, image_size: int) -> dict[str, dict[str, dict[str, Any]]]:
        return {
            "inputs": {name: t.describe(image_size) for name, t in sorted(self.inputs.items())},
            "outputs": {name: t.describe(image_size) for name, t in sorted(self.outputs.items())},
        }


_OUTPUTS = MappingProxyType(
    {
        OUTPUT_WEATHER: TensorContract("float32", (BATCH, len(LABELS_WEATHER))),
        OUTPUT_GROUND: TensorContract("float32", (BATCH, len(LABELS_GROUND))),
    }
)

# The serving interface: signature name -> inputs and outputs (names, dtypes, shapes).
SIGNATURES: Mapping[str, SignatureContract] = MappingProxyType(
    {
        SIGNATURE_FLOAT: SignatureContract(
            inputs=MappingProxyType(
                {INPUT_NAME: TensorContract("float32", (BATCH, IMAGE_SIZE, IMAGE_SIZE, 3))}
            ),
            outputs=_OUTPUTS,
        ),
        SIGNATURE_BYTES: SignatureContract(
            inputs=MappingProxyType({INPUT_BYTES: TensorContract("string", (BATCH,))}),
            outputs=_OUTPUTS,
        ),
    }
)


SAVED_MODEL_PB = "saved_model.pb"
FINGERPRINT_PB = "fingerprint.pb"  # hashes of the SavedModel, beside saved_model.pb (TF >= 2.12)
CANDIDATES_DIR = "candidates"  # under models/: exported, not yet checked, never served
# What a poller takes for a version folder: a name of ASCII digits, parsed as the version,
# within int64 (TF Serving's ``safe_strto64``; its versions are int64). Anything else
# (``.tmp-1.x``, ``candidates``, ``٧``, a number past 2**63 - 1) is skipped, as TF Serving skips it.
VERSION_DIR_RE = re.compile(r"[0-9]+")
MAX_VERSION = 2**63 - 1


def parse_version(name: str) -> int | None:
    """The version a folder (or URL segment) named ``name`` stands for, or None: ASCII digits
    only, leading zeros allowed, at most :data:`MAX_VERSION`."""
    if not VERSION_DIR_RE.fullmatch(name):
        return None
    significant = name.lstrip("0")
    if len(significant) > len(str(MAX_VERSION)):  # before int(): Python refuses over 4,300 digits
        return None
    version = int(significant or "0")
    return version if version <= MAX_VERSION else None


def published_dir(models_dir: Path | str, model_name: str, version: int) -> Path:
    """Where a checked export is served from: ``models/<name>/<version>/``.

    Raises:
        ExportError: ``model_name`` would leave ``models/`` or is ``candidates``.
    """
    return Path(models_dir) / _checked_name(model_name) / str(version)


def candidate_dir(models_dir: Path | str, model_name: str, version: int) -> Path:
    """Where the export stage writes: ``models/candidates/<name>/<version>/``, polled by no server.

    Raises:
        ExportError: ``model_name`` would leave ``models/candidates/`` or is ``candidates``.
    """
    return Path(models_dir) / CANDIDATES_DIR / _checked_name(model_name) / str(version)


def _checked_name(model_name: str) -> str:
    # "candidates" would publish into the folder of unchecked exports; "." and ".." (which
    # export.model_name's pattern allows) would put versions outside models/<name>/.
    if model_name in (".", "..", CANDIDATES_DIR) or "/" in model_name or not model_name:
        raise ExportError(
            f"export.model_name {model_name!r} cannot name a model folder under models/ "
            f"('.', '..' and {CANDIDATES_DIR!r} are taken); pick another name in params.yaml"
        )
    return model_name


def check_thresholds(thresholds: Any, where: str) -> None:
    """One threshold in [0, 1] per ground label of this code's vocabulary."""
    ground = thresholds.get("ground") if isinstance(thresholds, dict) else None
    if not isinstance(ground, dict):
        raise ExportError(f'{where}: expected {{"ground": {{"<label>": <threshold>, ...}}}}')
    missing = [t for t in LABELS_GROUND if t not in ground]
    unknown = [t for t in ground if t not in LABELS_GROUND]
    if missing or unknown:
        raise ExportError(
            f"{where}: ground thresholds do not match the vocabulary (missing: {', '.join(missing) or '-'}; "
            f"unknown: {', '.join(unknown) or '-'}); rerun 'dvc repro evaluate'"
        )
    bad = {t: v for t, v in ground.items() if not _is_probability(v)}
    if bad:
        raise ExportError(f"{where}: thresholds must be numbers in [0, 1]; got {bad}")


def check_label_map(label_map: Any, where: str) -> None:
    """The vocabulary must be this code's: the outputs' columns follow it."""
    if (
        not isinstance(label_map, dict)
        or label_map.get("weather") != list(LABELS_WEATHER)
        or label_map.get("ground") != list(LABELS_GROUND)
    ):
        raise ExportError(
            f"{where}: label vocabulary differs from amazonia.data.labels; rerun 'dvc repro encode_labels'"
        )


def load_assets(saved_model_dir: Path | str) -> tuple[dict, dict]:
    """``(label_map, thresholds)`` shipped in an export's ``assets.extra/``.

    Column ``i`` of output ``weather`` is ``label_map["weather"][i]`` (argmax picks
    one); ground label ``label_map["ground"][i]`` is on when its sigmoid reaches
    ``thresholds["ground"][label]``.
    """
    extra = Path(saved_model_dir) / ASSETS_EXTRA
    loaded = []
    for name in (LABEL_MAP_ASSET, THRESHOLDS_ASSET):
        try:
            loaded.append(json.loads((extra / name).read_text()))
        except FileNotFoundError:
            raise ExportError(f"{extra / name}: missing; re-export the model ('dvc repro export')") from None
        except json.JSONDecodeError as err:
            raise ExportError(f"{extra / name}: not valid JSON ({err}); re-export the model") from None
    label_map, thresholds = loaded
    ground = label_map.get("ground") if isinstance(label_map, dict) else None
    if not isinstance(ground, list) or not isinstance(label_map.get("weather"), list):
        raise ExportError(f"{extra / LABEL_MAP_ASSET}: expected lists 'weather' and 'ground'")
    # Checked against the shipped vocabulary, not this code's: clients may be older or newer.
    shipped = thresholds.get("ground") if isinstance(thresholds, dict) else None
    if not isinstance(shipped, dict) or set(shipped) != set(ground):
        raise ExportError(
            f"{extra / THRESHOLDS_ASSET}: ground thresholds do not match {LABEL_MAP_ASSET}'s ground labels"
        )
    return label_map, thresholds


def _is_probability(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= 1
    )
