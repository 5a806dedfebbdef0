"""Stage train: TFRecords -> models/model.keras, logged per epoch with DVCLive.

Resumes from models/checkpoints/ after a kill (same params, data and code), else
starts from scratch; a resumed run ends with the weights of an uninterrupted one.
Deterministic for a given train.seed on a given machine. train.precision sets Keras's
dtype policy, train.strategy the tf.distribute strategy (amazonia/model/distribute.py).
"""

import keras
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from amazonia.common.params import load_params
from amazonia.common.paths import CHECKPOINT_DIR, MODEL_KERAS, RECORDS_DIR, TRAIN_LIVE_DIR
from amazonia.common.stage import run_stage
from amazonia.data.records.manifest import read_manifest
from amazonia.model.distribute import check_batch_size, make_strategy, set_precision, validation_batch_size
from amazonia.model.input_pipeline import batches_per_epoch, load_epochs, load_split, naming_undecodable_chips
from amazonia.model.network import build_model, compile_model
from amazonia.model.training import (
    EpochCheckpoint,
    ReseedEachEpoch,
    clear_checkpoints,
    load_checkpoint,
    mark_complete,
    restore_live,
    run_fingerprint,
    save_model_atomic,
    shuffle_seeds,
)


def main() -> None:
    params = load_params()
    train = params.train
    image_size = train.image_size
    strategy = make_strategy(train.strategy)  # before anything touches a device
    set_precision(train.precision)
    keras.utils.set_random_seed(train.seed)
    tf.config.experimental.enable_op_determinism()

    train_dir, val_dir = RECORDS_DIR / "train", RECORDS_DIR / "val"
    # train.precision and train.strategy are in train.model_dump(): a checkpoint of
    # another precision or strategy is never resumed.
    fingerprint = run_fingerprint(train.model_dump(), image_size, [train_dir, val_dir], stage="train")
    with strategy.scope():  # the model's variables are created (or loaded) per replica
        resume = load_checkpoint(CHECKPOINT_DIR, fingerprint)
        if resume is None:
            clear_checkpoints(CHECKPOINT_DIR)
            model = build_model(image_size, train.filters, train.dense_units, train.dropout)
            model = compile_model(model, train.learning_rate)
            initial_epoch = 0
        else:
            model, initial_epoch = resume.model, resume.initial_epoch
    if resume is not None and resume.live is not None:
        restore_live(resume.live, TRAIN_LIVE_DIR)
    # Over several replicas, full batches only (amazonia/model/distribute.py says why).
    replicas = strategy.num_replicas_in_sync
    full_batches = replicas > 1
    val_batch = train.batch_size
    if full_batches:
        check_batch_size(train.batch_size, replicas)
        val_batch = validation_batch_size(train.batch_size, read_manifest(val_dir).examples, replicas)

    train_data, train_manifest = load_epochs(
        train_dir,
        image_size,
        batch_size=train.batch_size,
        epoch_seeds=shuffle_seeds(train.seed, range(initial_epoch, train.epochs)),
        file_seed=train.seed,
        augment=train.augment,
        cache=params.runtime.cache_decoded,
        full_batches=full_batches,
    )
    val_data, _ = load_split(
        val_dir,
        image_size,
        batch_size=val_batch,
        cache=params.runtime.cache_decoded,
        full_batches=full_batches,
    )

    with (
        Live(str(TRAIN_LIVE_DIR), dvcyaml=False, save_dvc_exp=False, resume=resume is not None) as live,
        naming_undecodable_chips([train_dir, val_dir], image_size),
    ):
        live.step = initial_epoch
        model.fit(
            train_data,
            steps_per_epoch=batches_per_epoch(train_manifest.examples, train.batch_size, full_batches),
            validation_data=val_data,
            epochs=train.epochs,
            initial_epoch=initial_epoch,
            callbacks=[
                ReseedEachEpoch(train.seed),
                DVCLiveCallback(live=live),
                EpochCheckpoint(CHECKPOINT_DIR, fingerprint, live_dir=TRAIN_LIVE_DIR),  # after DVCLive's
            ],
            shuffle=False,  # the dataset shuffles, seeded per epoch
            verbose=2,
        )

    save_model_atomic(model, MODEL_KERAS)
    mark_complete(CHECKPOINT_DIR)


if __name__ == "__main__":
    run_stage(main)
