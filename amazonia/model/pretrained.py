"""Pretrained backbone weights: which Keras Applications file each architecture loads, and from where.

``train.weights: imagenet`` builds the backbone from ``models/pretrained/<file>``, the very file
Keras Applications downloads for ``include_top=False`` (legacy HDF5 weights of the notop model),
and never from the network: Keras is handed the local path, not the string ``"imagenet"``. A team
brings each file into its DVC remote once, from its URL in :data:`WEIGHTS`::

    dvc import-url <url> models/pretrained/
    git add models/pretrained/<file>.dvc models/pretrained/.gitignore && dvc push

so that every clone, CI run and ``dvc repro`` reads the same bytes, by their hash, and no training
run reaches a hub (:func:`weights_path` names the exact command when a file is missing). The train
stage depends on ``models/pretrained`` (see dvc.yaml).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from amazonia.common.errors import AmazoniaError

log = logging.getLogger(__name__)

KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
_CHUNK = 1 << 20


class PretrainedError(AmazoniaError):
    """A pretrained weights file is missing; the message gives the command that brings it in."""


@dataclass(frozen=True)
class WeightsFile:
    """One Keras Applications notop weights file: its name, where Keras downloads it, and the
    ``file_hash`` Keras checks it against (MD5, or SHA-256 for ConvNeXt)."""

    name: str
    url: str
    keras_hash: str


def _keras_file(folder: str, name: str, keras_hash: str) -> WeightsFile:
    return WeightsFile(name, f"{KERAS_APPLICATIONS_URL}{folder}/{name}", keras_hash)


# Names, URLs and hashes as in keras/src/applications/{mobilenet_v3,efficientnet_v2,resnet,convnext}.py
# (Keras 3.15); tests/test_backbones.py holds this table against those sources.
WEIGHTS: dict[str, WeightsFile] = {
    "mobilenet_v3_small": _keras_file(
        "mobilenet_v3",
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        "d3e8ec802a04aa4fc771ee12a9a9b836",
    ),
    "efficientnet_v2_b0": _keras_file(
        "efficientnet_v2", "efficientnetv2-b0_notop.h5", "893217f2bb855e2983157299931e43ff"
    ),
    "resnet50": _keras_file(
        "resnet", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "4d473c1dd8becc155b73f8504c6f6626"
    ),
    "convnext_tiny": _keras_file(
        "convnext",
        "convnext_tiny_notop.h5",
        "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
    ),
}


def import_command(architecture: str, directory: Path | str) -> str:
    """The ``dvc import-url`` that brings ``architecture``'s weights file into ``directory``."""
    return f"dvc import-url {WEIGHTS[architecture].url} {Path(directory).as_posix()}/"


def weights_path(architecture: str, directory: Path | str) -> Path:
    """The local weights file of ``architecture`` in ``directory``, checked to be there.

    A file whose hash is not the one Keras publishes is used as given (a team may bring
    weights of its own in the same format), with a warning.

    Raises:
        PretrainedError: the file is missing; the message is the command that brings it in.
    """
    weights = WEIGHTS[architecture]
    path = Path(directory) / weights.name
    if not path.is_file():
        raise PretrainedError(
            f"{path}: not found, and train.weights: imagenet with train.architecture: {architecture} "
            f"loads it; bring it in once with '{import_command(architecture, directory)}', then "
            f"'git add {Path(directory).as_posix()}/{weights.name}.dvc && dvc push' (docs/team.md)"
        )
    algorithm = "sha256" if len(weights.keras_hash) == 64 else "md5"
    if file_digest(path, algorithm) != weights.keras_hash:
        log.warning(
            "%s is not the Keras Applications file (its %s is not Keras's %s); training from it as given",
            path,
            algorithm,
            weights.keras_hash,
        )
    return path


def file_digest(path: Path | str, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in chunks (weights files are up to ~100 MB)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
