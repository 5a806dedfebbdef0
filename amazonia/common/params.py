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
    """Where the chips come from: stage ``ingest`` writes them to ``data/raw/``."""

    source: Literal["synthetic", "kaggle"] = Field(
        "synthetic",
        description="`synthetic` (chips drawn with the real data's tag statistics) or `kaggle` "
        "(the extracted download in `data.kaggle_dir`)",
    )
    kaggle_dir: str = Field(
        "data/kaggle",
        description="the extracted Kaggle download (`train_v2.csv`, `train-jpg/`); not empty",
    )
    n_images: int = Field(4000, gt=0, description="synthetic chips to generate")
    seed: int = Field(
        42, ge=0, le=MAX_SEED, description="the synthetic data's seed (numpy's seeding takes 0 to 2**32-1)"
    )
    on_unsafe_chip: Literal["error", "skip"] = Field(
        "error",
        description="a `train-jpg/` entry that is not a regular file inside `data.kaggle_dir` once "
        "symlinks are resolved (a link out of the download, a FIFO, a folder): `error` stops, `skip` "
        "leaves it and its `train_v2.csv` row out of `data/raw`; nothing of it is read either way "
        "([Data](data.md))",
    )

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
    """How stage ``encode_labels`` treats Kaggle's tags."""

    missing_weather: Literal["drop", "error"] = Field(
        "drop",
        description="a row without a weather tag (real row `train_24448`): `drop` leaves it out and "
        "lists it in `metrics/labels.json`, `error` stops",
    )


class SplitParams(_Section):
    """The split of the chips, by a stable hash of ``image_name`` (adding chips moves none);
    train gets the rest. Each fraction is over 0, and the two sum to under 1."""

    val: float = Field(0.1, ge=0, lt=1, description="the share of chips that choose the ground thresholds")
    test: float = Field(0.1, ge=0, lt=1, description="the share of chips that score the model")

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
    """How stage ``serialize`` writes each split's TFRecord shards."""

    # TensorFlow Datasets caps shards at 1 GiB; fractions of a MiB make tiny test shards.
    shard_mb: float = Field(
        16,
        gt=0,
        le=1024,
        description="the target shard size in MiB (TensorFlow Datasets caps shards at 1 GiB)",
    )
    on_bad_image: Literal["skip", "error"] = Field(
        "skip",
        description="a chip that fails the pre-decode check ([Data](data.md#what-a-bad-chip-is)): "
        "`skip` (listed in the manifest with its reason) or `error`",
    )
    # How the shards are written, never what they hold (the same bytes either way): the
    # serialize stages do not declare these two, so changing them reruns nothing.
    runner: Literal["local", "beam"] = Field(
        "local",
        description="who writes the shards: `local` (one process) or `beam` (Apache Beam); the same bytes",
    )
    beam_options: list[str] = Field(
        default_factory=list,
        description="Beam pipeline flags, one list item each (`--name=value`), passed verbatim, e.g. "
        '`["--runner=DataflowRunner"]`',
    )

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
    """The network and how stage ``train`` fits it."""

    architecture: Architecture = Field(
        "article",
        description="the article's network, or a Keras Applications backbone under the same two heads "
        "([Architectures](pipeline.md#architectures))",
    )
    weights: Literal["none", "imagenet"] = Field(
        "none",
        description="`none` (random) or `imagenet`: a backbone starts from its Keras Applications file in "
        "`models/pretrained/` ([Pretrained weights](team.md#pretrained-weights)); refused for `article`",
    )
    image_size: int = Field(
        128,
        gt=0,
        le=4096,
        description="pixels per side the model sees, as in the article: chips are resized to it in the "
        "graph ([preprocessing](pipeline.md#training-evaluation-export)); at least 32 for a backbone, 4 "
        "for `article`; the shards keep the chips as they are, so `serialize` does not rerun",
    )
    augment: Literal["none", "d4"] = Field(
        "d4",
        description="`d4`: each training example one of its 8 flips / quarter turns, drawn per "
        "(seed, epoch, position)",
    )
    epochs: int = Field(10, gt=0, description="passes over the train split")
    batch_size: int = Field(32, gt=0, description="examples per step")
    learning_rate: float = Field(
        0.001, gt=0, description="Adam's learning rate; with `imagenet`, the warm-up's"
    )
    warmup_epochs: int = Field(
        2,
        ge=0,
        description="`imagenet` only: the first epochs train the heads on a frozen backbone at "
        "`train.learning_rate` (at most `train.epochs`)",
    )
    fine_tune_learning_rate: float = Field(
        0.0001,
        gt=0,
        description="`imagenet` only: the learning rate of the epochs after the warm-up, which train "
        "everything but BatchNormalization",
    )
    seed: int = Field(
        42,
        ge=0,
        le=MAX_SEED,
        description="weights, shuffling and augmentation (`keras.utils.set_random_seed` takes 0 to 2**32-1)",
    )
    filters: int = Field(32, gt=0, description="`article` only: Conv2D filters, both blocks")
    dense_units: int = Field(128, gt=0, description="`article` only: units of both Dense layers")
    dropout: float = Field(
        0.2, ge=0, lt=1, description="`article`: after each Dense; a backbone: after its pooling"
    )
    precision: Literal["float32", "mixed_bfloat16", "mixed_float16"] = Field(
        "mixed_bfloat16",
        description="the Keras dtype policy while training (heads float32; inference always float32)",
    )
    strategy: Literal["none", "mirrored", "multi_worker"] = Field(
        "none",
        description="tf.distribute: `mirrored` uses every local GPU; `multi_worker` is refused "
        "([Scaling out](scaling.md#scaling-out))",
    )

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
    """How stage ``evaluate`` predicts and chooses the ground thresholds."""

    tta: Literal["none", "d4"] = Field(
        "none",
        description="`d4`: predictions averaged over each chip's 8 flips / quarter turns, in evaluate "
        "and inside the exported signatures (8x the compute per chip)",
    )
    thresholds: Literal["per_label", "fixed", "global", "shrunk", "cross_validated"] = Field(
        "cross_validated",
        description="how the ground thresholds are chosen on val "
        "([thresholds](pipeline.md#training-evaluation-export))",
    )


class RuntimeParams(_Section):
    """How stages run, never what they compute: no stage declares this section in
    dvc.yaml, so changing it reruns nothing (outputs are byte-identical for any value)."""

    workers: int = Field(0, ge=0, description="processes for `ingest`; 0: all cores")
    cache_decoded: bool = Field(True, description="`train`: keep decoded chips in memory when they fit")


class BlessParams(_Section):
    """What a candidate's test F2 must reach to be published (amazonia/export/bless.py):
    the trivial baseline's plus ``min_gain_over_baseline``, and the published version's,
    scored now, minus ``max_drop_from_published``. F2 is in [0, 1], so -1 and 1 turn a
    clause off."""

    # The default run gains 0.28 over the baseline; one that gains under 0.05 learned little.
    min_gain_over_baseline: float = Field(
        0.05,
        ge=-1,
        le=1,
        description="a candidate's test F2 must reach the trivial baseline's plus this to be published "
        "([blessing gate](pipeline.md#training-evaluation-export)); -1 turns the bar off",
    )
    # Above the 0.005-0.008 between the default-scale trainings with and without d4
    # augmentation (docs/benchmarks.md); a re-export of the same model scores exactly the same.
    max_drop_from_published: float = Field(
        0.01,
        ge=0,
        le=1,
        description="... and the published version's, scored now on the same test chips, minus this "
        "(TFX's change threshold); 1 turns the bar off",
    )


class ExportParams(_Section):
    """The TF Serving folder stage ``export`` writes, and the gate before it is published."""

    model_name: str = Field(
        "PlanetModel", pattern=r"^[A-Za-z0-9_.-]+$", description="TF Serving's model name: `models/<name>/`"
    )
    version: int = Field(
        1,
        gt=0,
        le=MAX_VERSION,
        description="TF Serving's version folder (an int64): `models/<name>/<version>/`",
    )
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
