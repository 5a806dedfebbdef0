"""Stage evaluate: the Kaggle F2 and friends on the test split, against a trivial baseline.

The model runs in float32, as exported and served, whatever train.precision it was
trained at, on chips of its own input size; evaluate.tta d4 averages it over each chip's
eight flips and quarter turns, as the export then does. Ground thresholds are chosen on
val by evaluate.thresholds and saved to models/thresholds.json for export and serving;
metrics/eval.json, three plot tables and the error gallery go to metrics/eval/ (DVC
plots: `dvc plots show`, `dvc plots diff <rev>`).
"""

from amazonia.common.files import write_bytes_atomic, write_json_atomic, write_text_atomic
from amazonia.common.params import load_params
from amazonia.common.paths import (
    EVAL_ERRORS_PNG,
    EVAL_JSON,
    EVAL_PLOTS_DIR,
    MODEL_KERAS,
    RECORDS_DIR,
    THRESHOLDS_JSON,
)
from amazonia.common.stage import run_stage
from amazonia.model.evaluation import evaluate_model
from amazonia.model.network import load_for_inference


def main() -> None:
    params = load_params()
    model = load_for_inference(MODEL_KERAS)  # float32, whatever train.precision was
    evaluation = evaluate_model(
        model, RECORDS_DIR, tta=params.evaluate.tta, thresholds=params.evaluate.thresholds
    )
    write_json_atomic(THRESHOLDS_JSON, evaluation.thresholds)
    write_json_atomic(EVAL_JSON, evaluation.metrics)
    write_text_atomic(EVAL_PLOTS_DIR / "weather_confusion.csv", evaluation.weather_confusion_csv)
    write_text_atomic(EVAL_PLOTS_DIR / "ground_f2.csv", evaluation.ground_f2_csv)
    write_text_atomic(EVAL_PLOTS_DIR / "ground_pr.csv", evaluation.ground_pr_csv)
    write_bytes_atomic(EVAL_ERRORS_PNG, evaluation.errors_png)


if __name__ == "__main__":
    run_stage(main)
