"""Stage smoke_check: exercise the exported SavedModel as TF Serving and its clients would.

Checks what `saved_model_cli show --all` shows against the serving contract
(amazonia.export.SIGNATURES), runs both signatures on random input and on real
test chips, compares them with models/model.keras and with each other, and runs
`saved_model_cli run` once. metrics/smoke.json is written either way; a failed
check then exits 1 naming it, so `dvc repro` stops before anything downstream.
"""

from amazonia.common.files import write_json_atomic
from amazonia.common.params import load_params
from amazonia.common.paths import MODEL_KERAS, RECORDS_DIR, SMOKE_JSON, export_dir
from amazonia.common.stage import run_stage
from amazonia.export.smoke import run_smoke_check


def main() -> None:
    params = load_params()
    report = run_smoke_check(
        export_dir(params.export.model_name, params.export.version),
        keras_model=MODEL_KERAS,
        test_split=RECORDS_DIR / "test",
        image_size=params.serialize.image_size,
    )
    write_json_atomic(SMOKE_JSON, report.to_json())
    report.raise_if_failed()


if __name__ == "__main__":
    run_stage(main)
