"""Shard file names: TensorFlow Datasets' ``{DATASET}-{SPLIT}.tfrecord-{SHARD_X_OF_Y}`` template."""

from __future__ import annotations

import re

DATASET_NAME = "planet"
MANIFEST_FILE = "manifest.json"

SHARD_NAME_RE = re.compile(r"^(?P<prefix>.+\.tfrecord)-(?P<index>\d{5})-of-(?P<total>\d{5})$")


def shard_prefix(split: str) -> str:
    """The file prefix of a split's shards: ``planet-train.tfrecord``."""
    return f"{DATASET_NAME}-{split}.tfrecord"


def shard_filename(split: str, index: int, total: int) -> str:
    """One shard's name: ``planet-train.tfrecord-00000-of-00004``.

    Raises:
        ValueError: ``index`` is not in ``[0, total)``.
    """
    if not 0 <= index < total:
        raise ValueError(f"shard index {index} not in [0, {total})")
    return f"{shard_prefix(split)}-{index:05d}-of-{total:05d}"


def partial_shard_filename(split: str, index: int) -> str:
    """A shard's name while the total is not known yet: ``planet-train.tfrecord-00000``."""
    return f"{shard_prefix(split)}-{index:05d}"


def is_shard_filename(name: str) -> bool:
    """True for a complete ``...tfrecord-NNNNN-of-TTTTT`` name."""
    return SHARD_NAME_RE.match(name) is not None
