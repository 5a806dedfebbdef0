"""Fitting the model with per-epoch checkpoints that survive a kill -9, and resume exactly.

After each epoch the model (weights *and* optimizer state) is saved as
``epoch-NNNN.keras``, DVCLive's folder is copied to ``live-NNNN/``, and then
``state.json`` is atomically pointed at both, naming the training phase the epoch
belonged to (:mod:`amazonia.model.trainer`). A rerun with the same fingerprint (params,
data, pretrained weights and the stage's code) resumes after the last finished epoch;
any other rerun starts from scratch.

A resumed run ends with the weights of an uninterrupted one, bit for bit on the same
machine: what epoch ``e`` draws (its shuffle order, its dropout masks) comes from
``(train.seed, e)`` alone (:func:`epoch_seed`), never from how many epochs this process
ran before, and the optimizer state travels in the checkpoint (a phase that starts anew
starts with a fresh optimizer, resumed or not).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import yaml

from amazonia.common.errors import AmazoniaError
from amazonia.common.files import TEMP_PREFIX, remove_path, write_json_atomic
from amazonia.common.paths import CODE_DIRS
from amazonia.data.records.manifest import read_manifest
from amazonia.model import architectures, pretrained

STATE_FILE = "state.json"
DVC_YAML = Path("dvc.yaml")
# The variable a keras.random.SeedGenerator keeps its state in (Dropout has one).
_RNG_STATE_NAME = "seed_generator_state"
log = logging.getLogger(__name__)


class TrainingError(AmazoniaError):
    """The train stage cannot tell which code it runs (dvc.yaml missing or incomplete)."""


@dataclass(frozen=True)
class Resume:
    model: keras.Model
    initial_epoch: int
    live: Path | None  # DVCLive's folder as it was after that epoch
    phase: str | None  # the training phase of that epoch, as EpochCheckpoint was told


def epoch_seed(seed: int, epoch: int, stream: str) -> int:
    """The seed of one random ``stream`` (shuffle, a layer's RNG) for 0-based ``epoch`` of
    a run seeded ``seed``: a function of the three alone, in [0, 2**31).

    Example: ``epoch_seed(42, 3, "shuffle")`` is the same in every process, whatever it
    ran before.
    """
    digest = hashlib.sha256(f"{seed}/{epoch}/{stream}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def shuffle_seeds(seed: int, epochs: range) -> list[int]:
    """One shuffle seed per epoch in ``epochs``, for ``input_pipeline.load_epochs``."""
    return [epoch_seed(seed, epoch, "shuffle") for epoch in epochs]


def code_digest(stage: str, dvc_yaml: Path | str = DVC_YAML) -> str:
    """SHA-256 over the code ``stage`` depends on in ``dvc_yaml``.

    Every file under the stage's deps below ``stages/`` or ``amazonia/`` counts, by its
    path relative to the project root (``dvc_yaml``'s folder) and its content, in sorted
    path order; ``__pycache__`` folders and ``*.pyc`` files do not (Python writes them).
    So the digest changes whenever a code dep DVC watches changes, an added comment or
    a new module included, and only then: those deps are exactly the files the stage can
    run (tests/test_dvc_contract.py), so an edit to another stage's module keeps a
    checkpoint.

    Raises:
        TrainingError: ``dvc_yaml`` is missing, has no such stage, or names a code dep
            that does not exist.
    """
    dvc_yaml = Path(dvc_yaml)
    root = dvc_yaml.parent
    try:
        spec = yaml.safe_load(dvc_yaml.read_text())["stages"][stage]
    except FileNotFoundError:
        raise TrainingError(f"{dvc_yaml}: not found; run stages from the project root") from None
    except (KeyError, TypeError):
        raise TrainingError(f"{dvc_yaml}: no stage {stage!r} under 'stages:'") from None
    files: set[str] = set()
    for dep in spec.get("deps", []):
        if Path(dep).parts[0] not in CODE_DIRS:
            continue
        path = root / dep
        if path.is_file():
            files.add(Path(dep).as_posix())
        elif path.is_dir():
            files.update(
                rel.as_posix()
                for rel in (p.relative_to(root) for p in path.rglob("*") if p.is_file())
                if "__pycache__" not in rel.parts and rel.suffix != ".pyc"
            )
        else:
            raise TrainingError(f"{dvc_yaml}: stage {stage!r} depends on {dep}, which does not exist")
    digest = hashlib.sha256()
    for rel in sorted(files):
        # Path and content hash per line: no two different trees give the same stream.
        digest.update(f"{rel}\0{hashlib.sha256((root / rel).read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


def run_fingerprint(
    train_params: dict,
    image_size: int,
    split_dirs: Sequence[Path | str],
    stage: str = "train",
    weights: Path | str | None = None,
) -> dict:
    """What a checkpoint must have been trained with to be resumed: the train params, the
    image size, every shard's SHA-256 (from the splits' manifests), the pretrained
    ``weights`` file's SHA-256 (or None) and the stage's code."""
    return {
        "params": train_params,
        "image_size": image_size,
        "data": [shard.sha256 for split in split_dirs for shard in read_manifest(split).shards],
        "weights": None if weights is None else pretrained.file_digest(weights),
        "code": code_digest(stage),
    }


def load_checkpoint(directory: Path | str, fingerprint: dict) -> Resume | None:
    """The model to resume from, or None when there is nothing (compatible) to resume."""
    state_path = Path(directory) / STATE_FILE
    if not state_path.is_file():
        return None
    try:
        state = json.loads(state_path.read_text())
    except json.JSONDecodeError:
        log.warning("%s unreadable; training from scratch", state_path)
        return None
    if state.get("complete") or state.get("fingerprint") != fingerprint:
        log.info("checkpoint in %s is for another run; training from scratch", directory)
        return None
    model_path = Path(directory) / state["model"]
    live = Path(directory) / state["live"] if state.get("live") else None
    if not model_path.is_file() or (live is not None and not live.is_dir()):
        log.warning("checkpoint in %s incomplete; training from scratch", directory)
        return None
    log.info("resuming from %s after epoch %d", model_path, state["epoch"])
    return Resume(architectures.load_model(model_path), int(state["epoch"]), live, state.get("phase"))


def clear_checkpoints(directory: Path | str) -> None:
    """Forget earlier checkpoints (a fresh start); the folder itself stays for DVC."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.iterdir():
        remove_path(path)


def save_model_atomic(model: keras.Model, path: Path | str) -> None:
    """Save ``model`` as a ``.keras`` file that appears whole or not at all, and whose bytes
    are a function of the model alone (:func:`write_reproducible_keras`): the same
    architecture, weights and optimizer state give the same file, so DVC sees an
    unchanged output and the stages after it do not rerun."""
    path = Path(path)
    saved = path.with_name(f"{TEMP_PREFIX}keras-{path.name}")
    tmp = path.with_name(TEMP_PREFIX + path.name)
    try:
        model.save(saved)
        write_reproducible_keras(saved, tmp)
    finally:
        saved.unlink(missing_ok=True)
    os.replace(tmp, path)


def write_reproducible_keras(source: Path | str, dest: Path | str) -> None:
    """Copy the ``.keras`` file ``source`` to ``dest`` without what changes from save to save.

    What Keras writes that is not the model: the time of the save, as ``date_saved`` in
    ``metadata.json`` (left out; Keras never reads it back) and as each zip entry's date
    (set to the earliest a zip can hold); and in ``config.json``, objects the layers share,
    numbered by their memory address (``shared_object_id``). Those numbers only pair equal
    ones when loading, so they are renumbered 1, 2, ... in order of first appearance; and
    dtype policies lose theirs: a policy is a value (its name), which a model Keras built
    shares among its layers and a loaded one does not, so a resumed run's model would
    otherwise differ from an uninterrupted one's. Entries go in name order, with Unix
    permissions 0644 and their own compression. ``model.weights.h5`` is kept as it is:
    h5py records no times by default (``track_times=False``), so its bytes follow the
    weights and the optimizer state.
    """
    with zipfile.ZipFile(source) as archive_in, zipfile.ZipFile(dest, "w") as archive_out:
        for entry in sorted(archive_in.infolist(), key=lambda info: info.filename):
            info = zipfile.ZipInfo(entry.filename, date_time=_ZIP_EARLIEST)
            info.compress_type = entry.compress_type
            info.create_system = 3  # Unix, whatever system writes it
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.file_size = entry.file_size  # for the zip64 choice, as in the source
            if entry.filename in _REWRITTEN_JSON:
                data = json.loads(archive_in.read(entry))
                archive_out.writestr(info, json.dumps(_REWRITTEN_JSON[entry.filename](data)))
                continue
            with archive_in.open(entry) as reader, archive_out.open(info, "w") as writer:
                shutil.copyfileobj(reader, writer, _COPY_CHUNK)


def _without_save_date(metadata: dict) -> dict:
    return {key: value for key, value in metadata.items() if key != "date_saved"}


def _renumber_shared_objects(config: Any) -> Any:
    numbers: dict[int, int] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        is_policy = node.get("module") == "keras" and str(node.get("class_name")).endswith("DTypePolicy")
        return {
            key: numbers.setdefault(value, len(numbers) + 1) if key == "shared_object_id" else walk(value)
            for key, value in node.items()
            if not (key == "shared_object_id" and is_policy)
        }

    return walk(config)


# The earliest date a zip entry can hold (DOS time starts in 1980).
_ZIP_EARLIEST = (1980, 1, 1, 0, 0, 0)
_REWRITTEN_JSON = {"metadata.json": _without_save_date, "config.json": _renumber_shared_objects}
_COPY_CHUNK = 1 << 20


def mark_complete(directory: Path | str) -> None:
    """A finished run's checkpoint is not resumed: a forced rerun trains again."""
    state_path = Path(directory) / STATE_FILE
    state = json.loads(state_path.read_text())
    write_json_atomic(state_path, {**state, "complete": True})


def restore_live(snapshot: Path | str, live_dir: Path | str) -> None:
    """Put DVCLive's folder back as a checkpoint saw it, after its last epoch.

    ``dvc repro`` deletes a stage's metrics and plots before running it, and a kill can
    fall after DVCLive logged an epoch but before that epoch's checkpoint: from the
    snapshot, a resumed run's curves and summary end as an uninterrupted run's.
    """
    live_dir = Path(live_dir)
    shutil.rmtree(live_dir, ignore_errors=True)
    shutil.copytree(snapshot, live_dir)


def rng_states(model: keras.Model) -> list[keras.Variable]:
    """The state variables of the model's SeedGenerators (one per Dropout layer), in
    layer order: the same order for a built model and the same model loaded."""
    return [v for v in model.variables if v.name == _RNG_STATE_NAME]


class ReseedEachEpoch(keras.callbacks.Callback):
    """Reseed the model's random layers at the start of every epoch from (seed, epoch).

    A ``.keras`` file holds the weights and the optimizer state but not the layers'
    SeedGenerator states (a loaded model draws fresh ones), so a resumed run would
    drop other units than an uninterrupted one. Reseeding every epoch, in both, gives
    epoch ``e`` the same dropout masks by construction.
    """

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        for index, state in enumerate(rng_states(self.model)):
            # [seed, counter]: the counter counts draws within the epoch from 0.
            value = [epoch_seed(self.seed, epoch, f"layer-rng-{index}"), 0]
            state.assign(np.array(value, dtype=state.dtype))


class EpochCheckpoint(keras.callbacks.Callback):
    """Save the model after every epoch, and a copy of DVCLive's folder when given, then
    point ``state.json`` at them and name the epoch's training ``phase``.

    Put it after ``DVCLiveCallback`` in ``fit``'s callbacks: callbacks run in order, so
    the copy then holds the epoch's row.
    """

    def __init__(
        self,
        directory: Path | str,
        fingerprint: dict,
        live_dir: Path | str | None = None,
        phase: str | None = None,
    ):
        super().__init__()
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.live_dir = None if live_dir is None else Path(live_dir)
        self.phase = phase

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        model_name = f"epoch-{epoch + 1:04d}.keras"
        save_model_atomic(self.model, self.directory / model_name)
        live_name = None
        if self.live_dir is not None and self.live_dir.is_dir():
            live_name = f"live-{epoch + 1:04d}"
            tmp = self.directory / f"{TEMP_PREFIX}{live_name}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(self.live_dir, tmp)
            shutil.rmtree(self.directory / live_name, ignore_errors=True)
            os.replace(tmp, self.directory / live_name)
        write_json_atomic(
            self.directory / STATE_FILE,
            {
                "epoch": epoch + 1,
                "model": model_name,
                "live": live_name,
                "phase": self.phase,
                "fingerprint": self.fingerprint,
                "complete": False,
            },
        )
        # Earlier epochs, and what a kill left half-written.
        for old in self.directory.iterdir():
            if old.name not in (STATE_FILE, model_name, live_name):
                remove_path(old)
