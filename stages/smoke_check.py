"""Stage smoke_check: exercise the candidate export as TF Serving and its clients would,
then publish it to models/<export.model_name>/<export.version>/ only if it passed.

Checks what `saved_model_cli show --all` shows against the serving contract
(amazonia.export.contract.SIGNATURES), runs both signatures on random input and on
real test chips, compares them with models/model.keras (with evaluate.tta, as the
export was made) and with each other, and runs
`saved_model_cli run` once. metrics/smoke.json is written either way. A passed check
swaps the candidate into the served version folder atomically; a failed one leaves
that folder as it was and exits 1 naming the failures, so `dvc repro` stops.
"""

from amazonia.common.files import write_json_atomic
from amazonia.common.params import load_params
from amazonia.common.paths import MODEL_KERAS, MODELS_DIR, RECORDS_DIR, SMOKE_JSON
from amazonia.common.stage import run_stage
from amazonia.export.contract import candidate_dir, published_dir
from amazonia.export.publish import publish
from amazonia.export.smoke import run_smoke_check


def main() -> None:
    params = load_params()
    name, version = params.export.model_name, params.export.version
    candidate = candidate_dir(MODELS_DIR, name, version)
    report = run_smoke_check(
        candidate,
        keras_model=MODEL_KERAS,
        test_split=RECORDS_DIR / "test",
        tta=params.evaluate.tta,
    )
    write_json_atomic(SMOKE_JSON, report.to_json())
    report.raise_if_failed()
    publish(candidate, published_dir(MODELS_DIR, name, version))


if __name__ == "__main__":
    run_stage(main)
