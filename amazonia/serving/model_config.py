"""TF Serving's model config file (``--model_config_file``): read with TF Serving's own protos.

The file is a ``tensorflow.serving.ModelServerConfig`` in protobuf text format: a
``model_config_list`` of models, each with a ``name``, a ``base_path`` (the folder of
its version folders), ``model_platform: "tensorflow"``, a ``model_version_policy``
(``latest { num_versions: N }``, the default with N = 1; ``all {}``;
``specific { versions: ... }``) and ``version_labels`` (``stable``, ``canary``: names
for version numbers)::

    model_config_list {
      config {
        name: "PlanetModel"
        base_path: "/srv/models/PlanetModel"
        model_platform: "tensorflow"
        model_version_policy { specific { versions: 1 versions: 2 } }
        version_labels { key: "stable" value: 1 }
        version_labels { key: "canary" value: 2 }
      }
    }

It is parsed by protobuf (``text_format``) into TF Serving's message, then checked as
TF Serving's ``ServerCore`` checks it, with its words: unique names, a known platform.
Where amazonia differs, it is said here: a relative ``base_path`` is taken relative to
the config file's folder (TF Serving wants absolute paths), and a ``base_path`` must be
an existing folder (TF Serving waits for it, for good on a reload). Labels are checked
against the versions loaded when the file is applied (:mod:`amazonia.serving.manager`).
No TensorFlow here: the config protos import protobuf only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from amazonia.common.errors import AmazoniaError

log = logging.getLogger(__name__)

TENSORFLOW_PLATFORM = "tensorflow"  # TF Serving's kTensorFlowModelPlatform


class ModelConfigError(AmazoniaError):
    """The model config file cannot be served as it is; the message names the file."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which version folders of a model are served (TF Serving's ``model_version_policy``):
    the ``latest`` N highest, the ``specific`` versions listed, or, with neither, all."""

    latest: int | None = None
    specific: frozenset[int] | None = None

    def select(self, versions: Iterable[int]) -> set[int]:
        """The versions to serve among those found on disk."""
        found = set(versions)
        if self.latest is not None:
            return set(sorted(found, reverse=True)[: self.latest])
        if self.specific is not None:
            return found & self.specific
        return found

    def describe(self) -> str:
        if self.latest is not None:
            return f"latest {self.latest}"
        if self.specific is not None:
            return "specific " + ", ".join(map(str, sorted(self.specific)))
        return "all"


ALL_VERSIONS = VersionPolicy()
LATEST_VERSION = VersionPolicy(latest=1)  # TF Serving's default policy


@dataclass(frozen=True)
class ModelSource:
    """One model to serve: its name in URLs, the folder of its version folders, the
    versions to serve and its version labels (label -> version)."""

    name: str
    base_path: Path
    policy: VersionPolicy = ALL_VERSIONS
    labels: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


def read_model_config(path: Path | str) -> tuple[ModelSource, ...] | None:
    """The models that the model config file at ``path`` lists, checked; None for a file
    that sets no config at all (empty, or only comments), which TF Serving takes as
    "no change".

    Raises:
        ModelConfigError: the file cannot be read, is not a ModelServerConfig in text
            format, or lists something TF Serving refuses (each message names the file).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ModelConfigError(f"{path}: cannot read the model config file: {reason}") from None
    return parse_model_config(text, str(path), path.parent)


def parse_model_config(text: str, where: str, root: Path) -> tuple[ModelSource, ...] | None:
    """:func:`read_model_config` of ``text``, a file ``where`` whose relative base paths
    are taken from ``root``."""
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ModelConfigError(
            f"{where}: Invalid protobuf file: not a ModelServerConfig in text format ({err}); "
            "see docs/serving.md for an example"
        ) from None
    kind = config.WhichOneof("config")
    if kind is None:
        return None
    if kind == "custom_model_config":
        raise ModelConfigError(
            f"{where}: ModelServer does not yet support custom model config; use model_config_list"
        )
    sources = []
    names: set[str] = set()
    for index, model in enumerate(config.model_config_list.config):
        if not model.name:
            raise ModelConfigError(f"{where}: model_config_list entry {index + 1} has no name")
        if model.name in names:
            raise ModelConfigError(
                f"{where}: Illegal to list model {model.name} multiple times in config list"
            )
        names.add(model.name)
        _check_platform(model, where)
        if model.HasField("logging_config"):
            log.warning(
                "%s: logging_config of model %s is ignored: amazonia serve logs no requests",
                where,
                model.name,
            )
        sources.append(
            ModelSource(
                model.name,
                _base_path(model, where, root),
                _policy(model),
                MappingProxyType(dict(sorted(model.version_labels.items()))),
            )
        )
    return tuple(sources)


def _check_platform(model: model_server_config_pb2.ModelConfig, where: str) -> None:
    """TF Serving's ``GetPlatform`` checks (deprecated ``model_type`` or ``model_platform``)."""
    platform = model.model_platform
    if model.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        if platform:
            raise ModelConfigError(
                f"{where}: Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform (model {model.name}); keep model_platform"
            )
        if model.model_type != model_server_config_pb2.TENSORFLOW:
            raise ModelConfigError(
                f"{where}: ModelServerConfig::model_type choice {model.model_type} not supported "
                f'(model {model.name}); write model_platform: "tensorflow"'
            )
        platform = TENSORFLOW_PLATFORM
    if not platform:
        raise ModelConfigError(
            f"{where}: Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f'ModelServerConfig::model_platform (model {model.name}); add model_platform: "tensorflow"'
        )
    if platform != TENSORFLOW_PLATFORM:
        raise ModelConfigError(
            f"{where}: Model {model.name} requests unsupported platform {platform}; "
            'amazonia serve serves "tensorflow"'
        )


def _base_path(model: model_server_config_pb2.ModelConfig, where: str, root: Path) -> Path:
    if not model.base_path:
        raise ModelConfigError(
            f"{where}: model {model.name} has no base_path (the folder of its version folders)"
        )
    if "://" in model.base_path:
        raise ModelConfigError(
            f"{where}: model {model.name}: base_path {model.base_path!r} is a URI; amazonia serve reads "
            "local folders (dvc pull the model first)"
        )
    path = root / model.base_path  # an absolute base_path stays as it is
    if not path.is_dir():
        raise ModelConfigError(
            f"{where}: model {model.name}: base_path {path} is not a folder; export or pull the model there, "
            "or fix the path (a relative one is taken from the config file's folder)"
        )
    return path


def _policy(model: model_server_config_pb2.ModelConfig) -> VersionPolicy:
    policy = model.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return ALL_VERSIONS
    if choice == "specific":
        return VersionPolicy(specific=frozenset(policy.specific.versions))
    if choice == "latest":
        # TF Serving serves at least one: num_versions 0 (unset) is 1.
        return VersionPolicy(latest=max(policy.latest.num_versions, 1))
    return LATEST_VERSION
