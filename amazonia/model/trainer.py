"""The train stage's work: from the train and val shards to a trained model, resumable after a kill.

:func:`train_model` sets the tf.distribute strategy, the precision policy and the seeds, builds
the model of ``train.architecture`` (or resumes a checkpoint, :mod:`amazonia.model.training`),
then fits it phase by phase (:func:`schedule`), logging each epoch with DVCLive and
checkpointing it.

Phases. From random weights (``train.weights: none``) one phase trains everything at
``train.learning_rate``. From pretrained weights (``imagenet``) the first
``train.warmup_epochs`` train the new heads on a frozen backbone at ``train.learning_rate``
(random heads' large gradients would otherwise wreck the pretrained features), then the
rest fine-tune the whole model at ``train.fine_tune_learning_rate``, BatchNormalization
frozen (:func:`amazonia.model.architectures.unfreeze_backbone`). Each phase compiles a fresh
Adam. A checkpoint names its epoch's phase, so a run killed inside a phase resumes it with
its optimizer state, and one killed at a phase's end starts the next phase afresh, exactly
as an uninterrupted run does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from amazonia.common.params import TrainParams
from amazonia.data.records.manifest import read_manifest
from amazonia.model import architectures, pretrained
from amazonia.model.distribute import check_batch_size, make_strategy, set_precision, validation_batch_size
from amazonia.model.input_pipeline import batches_per_epoch, load_epochs, load_split, naming_undecodable_chips
from amazonia.model.network import build_model, compile_model
from amazonia.model.training import (
    EpochCheckpoint,
    ReseedEachEpoch,
    Resume,
    clear_checkpoints,
    load_checkpoint,
    restore_live,
    run_fingerprint,
    shuffle_seeds,
)

log = logging.getLogger(__name__)

TRAIN, WARM_UP, FINE_TUNE = "train", "warm_up", "fine_tune"


@dataclass(frozen=True)
class Phase:
    """Epochs ``first`` to ``end`` (exclusive, 0-based) trained one way, at ``learning_rate``."""

    name: str  # TRAIN (everything), WARM_UP (heads only) or FINE_TUNE (all but BatchNormalization)
    first: int
    end: int
    learning_rate: float


def schedule(train: TrainParams) -> list[Phase]:
    """The phases of a run, in order; none empty."""
    if train.weights == "none":
        return [Phase(TRAIN, 0, train.epochs, train.learning_rate)]
    phases = [
        Phase(WARM_UP, 0, train.warmup_epochs, train.learning_rate),
        Phase(FINE_TUNE, train.warmup_epochs, train.epochs, train.fine_tune_learning_rate),
    ]
    return [phase for phase in phases if phase.end > phase.first]


def prepare_phase(model: keras.Model, phase: Phase) -> None:
    """Freeze or unfreeze the backbone for ``phase`` and compile a fresh optimizer."""
    if phase.name == WARM_UP:
        architectures.freeze_backbone(model)
    elif phase.name == FINE_TUNE:
        architectures.unfreeze_backbone(model)
    compile_model(model, phase.learning_rate)


def build_training_state(model: keras.Model) -> None:
    """Create the variables of ``model``'s optimizer, compiled losses and metrics before
    :meth:`keras.Model.fit` traces its training step (losses and metrics by running them
    once on zeros).

    Under no tf.distribute strategy Keras creates them while tracing that step, and
    TensorFlow traces a function that created variables a second time: the whole training
    step traced twice each phase (4 s of CPU in the tiny pipeline's 18 s MobileNetV3Small
    warm-up and fine-tuning; the same model.keras bytes either way).
    Under a strategy Keras builds them itself.
    """
    inputs = np.zeros((1, *model.input_shape[1:]), np.float32)
    outputs = model(inputs, training=False)
    targets = {name: np.zeros(value.shape, np.float32) for name, value in outputs.items()}
    model.compute_loss(inputs, targets, outputs, training=False)
    model.compute_metrics(inputs, targets, outputs, sample_weight=None)
    model.reset_metrics()  # the zeros count for nothing
    if not model.optimizer.built:  # a resumed checkpoint's holds its state
        model.optimizer.build(model.trainable_variables)


def continues_phase(resume: Resume | None, phase: Phase) -> bool:
    """Whether ``resume`` stopped inside ``phase``: its model and optimizer carry on as loaded.

    A checkpoint of an earlier phase (its last epoch included) does not: ``phase`` then
    starts afresh, as in an uninterrupted run.
    """
    if resume is None or not phase.first < resume.initial_epoch < phase.end:
        return False
    # The fingerprint pins the params, so the phase of an epoch cannot have moved.
    assert resume.phase == phase.name, (resume.phase, phase)
    return True


def train_model(
    train: TrainParams,
    *,
    train_dir: Path,
    val_dir: Path,
    pretrained_dir: Path,
    checkpoint_dir: Path,
    live_dir: Path,
    cache: bool = True,
) -> keras.Model:
    """Train the model ``train`` describes on the shards in ``train_dir``, validating on
    ``val_dir``; return it (the caller saves it, then marks the checkpoint complete).

    Resumes from ``checkpoint_dir`` when it holds a checkpoint of the same params, data,
    weights file and code, else clears it; DVCLive writes ``live_dir``. Deterministic for a
    given ``train.seed`` on a given machine.

    Raises:
        amazonia.model.pretrained.PretrainedError: ``train.weights: imagenet`` and the
            architecture's weights file is not in ``pretrained_dir``.
        amazonia.model.distribute.DistributeError: a strategy or batch size this machine
            cannot run.
        amazonia.model.input_pipeline.UndecodableChipError: a chip TensorFlow cannot
            decode, named.
    """
    strategy = make_strategy(train.strategy)  # before anything touches a device
    set_precision(train.precision)
    keras.utils.set_random_seed(train.seed)
    tf.config.experimental.enable_op_determinism()

    weights = (
        pretrained.weights_path(train.architecture, pretrained_dir) if train.weights == "imagenet" else None
    )
    # train.precision and train.strategy are in train.model_dump(): a checkpoint of
    # another precision or strategy is never resumed.
    fingerprint = run_fingerprint(
        train.model_dump(), train.image_size, [train_dir, val_dir], stage="train", weights=weights
    )
    with strategy.scope():  # the model's variables are created (or loaded) per replica
        resume = load_checkpoint(checkpoint_dir, fingerprint)
        if resume is None:
            clear_checkpoints(checkpoint_dir)
            model = build_model(
                train.image_size,
                train.architecture,
                filters=train.filters,
                dense_units=train.dense_units,
                dropout=train.dropout,
                weights=weights,
            )
            done = 0
        else:
            model, done = resume.model, resume.initial_epoch
    if resume is not None and resume.live is not None:
        restore_live(resume.live, live_dir)
    # Over several replicas, full batches only (amazonia/model/distribute.py says why).
    replicas = strategy.num_replicas_in_sync
    full_batches = replicas > 1
    val_batch = train.batch_size
    if full_batches:
        check_batch_size(train.batch_size, replicas)
        val_batch = validation_batch_size(train.batch_size, read_manifest(val_dir).examples, replicas)

    val_data, _ = load_split(
        val_dir,
        train.image_size,
        batch_size=val_batch,
        cache=cache,
        full_batches=full_batches,
    )
    with (
        Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, resume=resume is not None) as live,
        naming_undecodable_chips([train_dir, val_dir], train.image_size),
    ):
        live.step = done
        for phase in schedule(train):
            if phase.end <= done:
                continue
            if not continues_phase(resume, phase):
                with strategy.scope():
                    prepare_phase(model, phase)
            first = max(done, phase.first)
            log.info(
                "phase %s: epochs %d-%d at learning rate %g",
                phase.name,
                first + 1,
                phase.end,
                phase.learning_rate,
            )
            # One dataset per phase, each epoch's batches a function of (seed, epoch) alone.
            train_data, train_manifest = load_epochs(
                train_dir,
                train.image_size,
                batch_size=train.batch_size,
                epoch_seeds=shuffle_seeds(train.seed, range(first, phase.end)),
                file_seed=train.seed,
                augment=train.augment,
                cache=cache,
                full_batches=full_batches,
            )
            if train.strategy == "none":
                build_training_state(model)
            model.fit(
                train_data,
                steps_per_epoch=batches_per_epoch(train_manifest.examples, train.batch_size, full_batches),
                validation_data=val_data,
                epochs=phase.end,
                initial_epoch=first,
                callbacks=[
                    ReseedEachEpoch(train.seed),
                    DVCLiveCallback(live=live),
                    # After DVCLive's, so its copy of the folder holds the epoch's row.
                    EpochCheckpoint(checkpoint_dir, fingerprint, live_dir=live_dir, phase=phase.name),
                ],
                shuffle=False,  # the dataset shuffles, seeded per epoch
                verbose=2,
            )
            done = phase.end
    return model
