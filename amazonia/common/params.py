"""``params.yaml``: its schema, defaults and validation.

Every stage calls :func:`load_params` first, so an unknown key, a wrong type or an
impossible value stops the pipeline before any output is written, with a message
naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from amazonia.common.errors import AmazoniaError

PARAMS_FILE = Path("params.yaml")


class ParamsError(AmazoniaError):
    """``params.yaml`` is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataParams(_Section):
    source: Literal["synthetic", "kaggle"] = "synthetic"
    kaggle_dir: str = "data/kaggle"
    n_images: int = Field(4000, gt=0)
    seed: int = 42


class LabelsParams(_Section):
    missing_weather: Literal["drop", "error"] = "drop"


class SplitParams(_Section):
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> SplitParams:
        for name, fraction in (("val", self.val), ("test", self.test)):
            if fraction == 0:
                use = "tuning the ground thresholds" if name == "val" else "scoring the model"
                raise ValueError(
                    f"split.{name} is 0, which leaves the {name} split empty; it is needed for "
                    f"{use}: set split.{name} > 0 (default 0.1)"
                )
        if self.val + self.test >= 1:
            raise ValueError(
                f"split.val + split.test must be < 1 (got {self.val} + {self.test}); "
                "nothing would be left for training"
            )
        return self


class SerializeParams(_Section):
    image_size: int = Field(128, gt=0, le=4096)
    shard_mb: float = Field(16, gt=0)
    on_bad_image: Literal["skip", "error"] = "skip"
    jpeg_quality: int = Field(90, ge=1, le=100)
    # How the shards are written, never what they hold (the same bytes either way): the
    # serialize stages do not declare these two, so changing them reruns nothing.
    runner: Literal["local", "beam"] = "local"
    beam_options: list[str] = Field(default_factory=list)  # passed to Beam verbatim

    @model_validator(mode="after")
    def _beam_options_are_flags(self) -> SerializeParams:
        for option in self.beam_options:
            if not option.startswith("--"):
                raise ValueError(
                    f"serialize.beam_options: {option!r} is not a pipeline flag; write each as one "
                    "list item '--name=value', e.g. '--runner=DataflowRunner'"
                )
        return self


class TrainParams(_Section):
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(32, gt=0)
    learning_rate: float = Field(0.001, gt=0)
    seed: int = 42
    filters: int = Field(32, gt=0)
    dense_units: int = Field(128, gt=0)
    dropout: float = Field(0.2, ge=0, lt=1)
    precision: Literal["float32", "mixed_bfloat16", "mixed_float16"] = "mixed_bfloat16"  # Keras dtype policy
    strategy: Literal["none", "mirrored", "multi_worker"] = "none"  # tf.distribute


class RuntimeParams(_Section):
    """How stages run, never what they compute: no stage declares this section in
    dvc.yaml, so changing it reruns nothing (outputs are byte-identical for any value)."""

    workers: int = Field(0, ge=0)  # processes for ingest and serialize; 0 = all cores
    cache_decoded: bool = True  # train: keep decoded chips in memory when they fit


class ExportParams(_Section):
    model_name: str = Field("PlanetModel", pattern=r"^[A-Za-z0-9_.-]+$")
    version: int = Field(1, gt=0)


class Params(_Section):
    data: DataParams = DataParams()
    labels: LabelsParams = LabelsParams()
    split: SplitParams = SplitParams()
    serialize: SerializeParams = SerializeParams()
    train: TrainParams = TrainParams()
    export: ExportParams = ExportParams()
    runtime: RuntimeParams = RuntimeParams()
    # amazonia serve's settings, validated when it starts (amazonia/serving/params.py): no
    # stage reads them, so this module, every stage's dependency, does not hold their schema.
    serve: dict[str, Any] = Field(default_factory=dict)


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and validate ``params.yaml``; raise :class:`ParamsError` naming the bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the project root") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(f"{path}: " + "; ".join(describe_error(e) for e in err.errors())) from None


def describe_error(error: Mapping[str, Any], section: str = "") -> str:
    """One pydantic error as ``key: what is wrong (got value)``; ``section`` prefixes the key
    when the model validated is one section."""
    key = ".".join(str(p) for p in (section, *error["loc"]) if p != "")
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key (check the spelling against docs/params.md)"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key or '(top level)'}: {message}{shown}"
