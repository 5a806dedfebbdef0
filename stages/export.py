"""Stage export: models/model.keras -> models/candidates/<export.model_name>/<export.version>/.

A SavedModel in TF Serving's layout with two signatures (float chips, and encoded
image bytes), both averaging over each chip's eight views when evaluate.tta is d4 (the
predictions the thresholds were chosen on); beside it in assets.extra/, the label
vocabulary, the tuned ground thresholds and TF Serving's warmup file (the first test
chips through both signatures). It is a candidate, polled by no server: the smoke_check
stage exercises it and only then publishes it to models/<name>/<version>/.
"""

from amazonia.common.errors import AmazoniaError
from amazonia.common.params import load_params
from amazonia.common.paths import LABEL_MAP_JSON, MODEL_KERAS, MODELS_DIR, RECORDS_DIR, THRESHOLDS_JSON
from amazonia.common.stage import run_stage
from amazonia.data.labels import read_label_map
from amazonia.export.contract import candidate_dir
from amazonia.export.saved_model import (
    export_saved_model,
    load_trained_model,
    read_thresholds,
    warmup_from_split,
)


def main() -> None:
    params = load_params()
    model = load_trained_model(MODEL_KERAS)
    thresholds = read_thresholds(THRESHOLDS_JSON)
    if not LABEL_MAP_JSON.is_file():
        raise AmazoniaError(f"{LABEL_MAP_JSON}: not found; run 'dvc repro encode_labels' first")
    label_map = read_label_map(LABEL_MAP_JSON)
    export_saved_model(
        model,
        candidate_dir(MODELS_DIR, params.export.model_name, params.export.version),
        label_map=label_map,
        thresholds=thresholds,
        tta=params.evaluate.tta,
        warmup=warmup_from_split(model, RECORDS_DIR / "test"),
    )


if __name__ == "__main__":
    run_stage(main)
