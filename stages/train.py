"""Stage train: TFRecords -> models/model.keras, logged per epoch with DVCLive.

Resumes from models/checkpoints/ after a kill (same params and data), else starts
from scratch. Deterministic for a given train.seed on a given machine.
"""

import keras
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from amazonia.common.files import TEMP_PREFIX
from amazonia.common.params import load_params
from amazonia.common.paths import CHECKPOINT_DIR, MODEL_KERAS, RECORDS_DIR, TRAIN_LIVE_DIR
from amazonia.common.stage import run_stage
from amazonia.model.input_pipeline import load_split
from amazonia.model.network import build_model, compile_model
from amazonia.model.training import EpochCheckpoint, clear_checkpoints, load_checkpoint, mark_complete


def main() -> None:
    params = load_params()
    train, image_size = params.train, params.serialize.image_size
    keras.utils.set_random_seed(train.seed)
    tf.config.experimental.enable_op_determinism()

    train_data, train_manifest = load_split(
        RECORDS_DIR / "train",
        image_size,
        batch_size=train.batch_size,
        shuffle=True,
        seed=train.seed,
        cache=params.runtime.cache_decoded,
    )
    val_data, val_manifest = load_split(
        RECORDS_DIR / "val", image_size, batch_size=train.batch_size, cache=params.runtime.cache_decoded
    )
    fingerprint = {
        "params": train.model_dump(),
        "image_size": image_size,
        "data": [s.sha256 for s in train_manifest.shards + val_manifest.shards],
    }

    resume = load_checkpoint(CHECKPOINT_DIR, fingerprint)
    if resume is None:
        clear_checkpoints(CHECKPOINT_DIR)
        model = build_model(image_size, train.filters, train.dense_units, train.dropout)
        model = compile_model(model, train.learning_rate)
        initial_epoch = 0
    else:
        model, initial_epoch = resume.model, resume.initial_epoch

    with Live(str(TRAIN_LIVE_DIR), dvcyaml=False, save_dvc_exp=False, resume=resume is not None) as live:
        live.step = initial_epoch
        model.fit(
            train_data,
            validation_data=val_data,
            epochs=train.epochs,
            initial_epoch=initial_epoch,
            callbacks=[DVCLiveCallback(live=live), EpochCheckpoint(CHECKPOINT_DIR, fingerprint)],
            shuffle=False,  # the dataset shuffles, seeded
            verbose=2,
        )

    tmp = MODEL_KERAS.with_name(TEMP_PREFIX + MODEL_KERAS.name)
    model.save(tmp)
    tmp.replace(MODEL_KERAS)
    mark_complete(CHECKPOINT_DIR)


if __name__ == "__main__":
    run_stage(main)
