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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from amazonia.common.errors import AmazoniaError

PARAMS_FILE = Path("params.yaml")

# keras.utils.set_random_seed seeds numpy's legacy generator, which takes 0..2**32-1;
# data.seed keeps the same range, so any seed is good for either param.
MAX_SEED = 2**32 - 1
# TF Serving parses a version folder's name as an int64.
MAX_VERSION = 2**63 - 1


class ParamsError(AmazoniaError):
    """``params.yaml`` is invalid; the message names the key."""


class _Section(BaseModel):
    # allow_inf_nan: no float param means anything at .inf or .nan
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class DataParams(_Section):
    source: Literal["synthetic", "kaggle"] = "synthetic"
    kaggle_dir: str = "data/kaggle"
    n_images: int = Field(4000, gt=0)
    seed: int = Field(42, ge=0, le=MAX_SEED)
    # A train-jpg/ entry that is not a regular file inside kaggle_dir once symlinks are
    # resolved (a link out of the download, a FIFO, a folder): stop (error) or leave it
    # and its train_v2.csv row out of data/raw (skip). Nothing of it is read either way.
    on_unsafe_chip: Literal["error", "skip"] = "error"

    @field_validator("kaggle_dir")
    @classmethod
    def _kaggle_dir_names_a_folder(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                "data.kaggle_dir is empty, which would name the project folder itself; set it to the "
                "folder of the extracted Kaggle download (default data/kaggle)"
            )
        return value


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
    # TensorFlow Datasets caps shards at 1 GiB; fractions of a MiB make tiny test shards.
    shard_mb: float = Field(16, gt=0, le=1024)
    on_bad_image: Literal["skip", "error"] = "skip"
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


# train.architecture: the article's network, or a Keras Applications backbone under the same
# two heads (amazonia/model/architectures.py builds them).
Architecture = Literal["article", "mobilenet_v3_small", "efficientnet_v2_b0", "resnet50", "convnext_tiny"]
ARCHITECTURES: tuple[str, ...] = Architecture.__args__
# The smallest train.image_size each architecture takes: Keras Applications refuse inputs
# under 32 px; the article's two 2x2 max-pools need 4 px to leave one.
MIN_IMAGE_SIZE = {name: 4 if name == "article" else 32 for name in ARCHITECTURES}


class TrainParams(_Section):
    architecture: Architecture = "article"
    weights: Literal["none", "imagenet"] = "none"  # imagenet: models/pretrained/<Keras's file>
    image_size: int = Field(128, gt=0, le=4096)  # the model's input: chips are resized to S x S
    augment: Literal["none", "d4"] = "d4"  # d4: one of the 8 flips/quarter turns per example
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(32, gt=0)
    learning_rate: float = Field(0.001, gt=0)
    # With train.weights: imagenet, the first warmup_epochs train the heads on a frozen
    # backbone at learning_rate, the rest everything at fine_tune_learning_rate.
    warmup_epochs: int = Field(2, ge=0)
    fine_tune_learning_rate: float = Field(0.0001, gt=0)
    seed: int = Field(42, ge=0, le=MAX_SEED)
    filters: int = Field(32, gt=0)  # article only
    dense_units: int = Field(128, gt=0)  # article only
    dropout: float = Field(0.2, ge=0, lt=1)
    precision: Literal["float32", "mixed_bfloat16", "mixed_float16"] = "mixed_bfloat16"  # Keras dtype policy
    strategy: Literal["none", "mirrored", "multi_worker"] = "none"  # tf.distribute

    @model_validator(mode="after")
    def _architecture_fits(self) -> TrainParams:
        if self.weights == "imagenet" and self.architecture == "article":
            backbones = ", ".join(a for a in ARCHITECTURES if a != "article")
            raise ValueError(
                "train.weights: imagenet needs a pretrained backbone, and train.architecture: article "
                f"has none; set train.weights: none, or train.architecture to one of {backbones}"
            )
        minimum = MIN_IMAGE_SIZE[self.architecture]
        if self.image_size < minimum:
            raise ValueError(
                f"train.image_size: {self.image_size} is below {minimum}, the smallest input "
                f"train.architecture: {self.architecture} takes; set train.image_size >= {minimum}"
            )
        if self.weights == "imagenet" and self.warmup_epochs > self.epochs:
            raise ValueError(
                f"train.warmup_epochs ({self.warmup_epochs}) is more than train.epochs ({self.epochs}); "
                "set it to at most train.epochs (equal: the heads alone train)"
            )
        return self


class EvaluateParams(_Section):
    tta: Literal["none", "d4"] = "none"  # d4: average over the 8 flips/quarter turns (also exported)
    thresholds: Literal["per_label", "fixed", "global", "shrunk", "cross_validated"] = "shrunk"


class RuntimeParams(_Section):
    """How stages run, never what they compute: no stage declares this section in
    dvc.yaml, so changing it reruns nothing (outputs are byte-identical for any value)."""

    workers: int = Field(0, ge=0)  # processes for ingest; 0 = all cores
    cache_decoded: bool = True  # train: keep decoded chips in memory when they fit


class BlessParams(_Section):
    """What a candidate's test F2 must reach to be published (amazonia/export/bless.py):
    the trivial baseline's plus ``min_gain_over_baseline``, and the published version's,
    scored now, minus ``max_drop_from_published``. F2 is in [0, 1], so -1 and 1 turn a
    clause off."""

    # The default run gains 0.28 over the baseline; one that gains under 0.05 learned little.
    min_gain_over_baseline: float = Field(0.05, ge=-1, le=1)
    # Above the 0.005-0.008 between the default-scale trainings with and without d4
    # augmentation (docs/benchmarks.md); a re-export of the same model scores exactly the same.
    max_drop_from_published: float = Field(0.01, ge=0, le=1)


class ExportParams(_Section):
    model_name: str = Field("PlanetModel", pattern=r"^[A-Za-z0-9_.-]+$")
    version: int = Field(1, gt=0, le=MAX_VERSION)
    bless: BlessParams = BlessParams()


class Params(_Section):
    data: DataParams = DataParams()
    labels: LabelsParams = LabelsParams()
    split: SplitParams = SplitParams()
    serialize: SerializeParams = SerializeParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()
    runtime: RuntimeParams = RuntimeParams()
    # amazonia serve's settings, validated when it starts (amazonia/serving/params.py): no
    # stage reads them, so this module, every stage's dependency, does not hold their schema.
    serve: dict[str, Any] = Field(default_factory=dict)


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and validate ``params.yaml``; raise :class:`ParamsError` naming the bad key."""
    path = Path(path)
    try:
        raw = _load_yaml(path.read_text(), path) or {}
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


def _load_yaml(text: str, path: Path) -> object:
    """``yaml.safe_load(text)``, refusing a key given twice in one mapping: YAML would
    silently keep the last, so an edit to the first would change nothing."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_unique_keys(loader, node, (), path, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_unique_keys(
    loader: yaml.SafeLoader, node: yaml.Node, where: tuple[str, ...], path: Path, seen: set[int]
) -> None:
    """Raise :class:`ParamsError` naming the dotted key and both lines for a key that
    appears twice in one mapping anywhere under ``node``."""
    if id(node) in seen:  # an alias: checked where its anchor is
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[object, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' may be overridden: that is its use
                _check_unique_keys(loader, value_node, where, path, seen)
                continue
            # Compared as YAML reads them: 'true' and 'True' are one key, '1' and "1" two.
            key = loader.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            name = ".".join((*where, str(key)))
            if key is not None and key in lines:
                raise ParamsError(
                    f"{path}, line {line}: {name} is given twice (first on line {lines[key]}); "
                    "YAML would keep only the last: delete one"
                )
            if key is not None:
                lines[key] = line
            _check_unique_keys(loader, value_node, (*where, str(key)), path, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_unique_keys(loader, item, (*where, str(index)), path, seen)


_LOWER = {"gt": "<", "ge": "<="}  # written bound-first: "0 < x"
_UPPER = {"lt": "<", "le": "<="}


def describe_error(error: Mapping[str, Any], section: str = "", model: type[BaseModel] | None = None) -> str:
    """One pydantic error as ``key: what is wrong (got value); accepted: <range>``.

    ``section`` prefixes the key and ``model`` is the model validated, when that is one
    section (``amazonia serve`` validates ``serve:`` alone); by default the whole file."""
    key = ".".join(str(p) for p in (section, *error["loc"]) if p != "")
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key (check the spelling against docs/params.md)"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key or '(top level)'}: {message}{shown}{_accepted_range(error['loc'], model or Params)}"


def _accepted_range(loc: tuple, model: type[BaseModel] | None) -> str:
    """``; accepted: 0 < x <= 1024`` for a field of ``model`` with bounds, else nothing."""
    field = None
    for part in loc:
        field = model.model_fields.get(str(part)) if model is not None else None
        if field is None:
            return ""
        model = (
            field.annotation
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
            else None
        )
    lower = upper = ""
    for constraint in field.metadata:
        for attr, sign in _LOWER.items():
            if getattr(constraint, attr, None) is not None:
                lower = f"{getattr(constraint, attr)} {sign} "
        for attr, sign in _UPPER.items():
            if getattr(constraint, attr, None) is not None:
                upper = f" {sign} {getattr(constraint, attr)}"
    if not (lower or upper):
        return ""
    return f"; accepted: {lower}{loc[-1]}{upper}"
