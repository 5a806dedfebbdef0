"""Stage train: TFRecords -> models/model.keras, logged per epoch with DVCLive.

train.architecture picks the network (the article's, or a Keras Applications backbone under
the same two heads); with train.weights: imagenet the backbone starts from its weights file in
models/pretrained/ and trains in two phases, heads first. Resumes from models/checkpoints/
after a kill (same params, data, weights and code), else starts from scratch; a resumed run
ends with the weights of an uninterrupted one. The work is amazonia.model.trainer.train_model.
"""

from amazonia.common.params import load_params
from amazonia.common.paths import CHECKPOINT_DIR, MODEL_KERAS, PRETRAINED_DIR, RECORDS_DIR, TRAIN_LIVE_DIR
from amazonia.common.stage import run_stage
from amazonia.model.trainer import train_model
from amazonia.model.training import mark_complete, save_model_atomic


def main() -> None:
    params = load_params()
    model = train_model(
        params.train,
        train_dir=RECORDS_DIR / "train",
        val_dir=RECORDS_DIR / "val",
        pretrained_dir=PRETRAINED_DIR,
        checkpoint_dir=CHECKPOINT_DIR,
        live_dir=TRAIN_LIVE_DIR,
        cache=params.runtime.cache_decoded,
    )
    save_model_atomic(model, MODEL_KERAS)
    mark_complete(CHECKPOINT_DIR)  # a finished run is not resumed: a forced rerun trains again


if __name__ == "__main__":
    run_stage(main)
