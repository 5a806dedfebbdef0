"""Stage smoke_check: exercise the candidate export as TF Serving and its clients would,
judge it against the baseline and the published version, and publish it to
models/<export.model_name>/<export.version>/ only if it passed both.

Checks what `saved_model_cli show --all` shows against the serving contract
(amazonia.export.contract.SIGNATURES), runs both signatures on random input and on
real test chips, compares them with models/model.keras (with evaluate.tta, as the
export was made) and with each other, replays the warmup file, and once all of that
passed runs `saved_model_cli run` once; metrics/smoke.json is written either way. Then the blessing
gate (export.bless): the candidate's test F2 against the trivial baseline's
(metrics/eval.json) and the published version's, scored now on the same chips;
metrics/bless.json is written either way. A candidate that passed both is swapped into
the served version folder atomically; otherwise that folder is left as it was and the
stage exits 1 naming the failures, so `dvc repro` stops.
"""

from amazonia.common.files import write_json_atomic
from amazonia.common.params import load_params
from amazonia.common.paths import BLESS_JSON, EVAL_JSON, MODEL_KERAS, MODELS_DIR, RECORDS_DIR, SMOKE_JSON
from amazonia.common.stage import run_stage
from amazonia.export.bless import judge, not_judged
from amazonia.export.contract import candidate_dir, published_dir
from amazonia.export.publish import publish
from amazonia.export.smoke import run_smoke_check


def main() -> None:
    params = load_params()
    name, version = params.export.model_name, params.export.version
    candidate = candidate_dir(MODELS_DIR, name, version)
    target = published_dir(MODELS_DIR, name, version)
    report = run_smoke_check(
        candidate,
        keras_model=MODEL_KERAS,
        test_split=RECORDS_DIR / "test",
        tta=params.evaluate.tta,
    )
    write_json_atomic(SMOKE_JSON, report.to_json())
    if not report.passed:
        unjudged = not_judged(candidate, target, params.export.bless, "its smoke check failed")
        write_json_atomic(BLESS_JSON, unjudged.to_json())
        report.raise_if_failed()
    verdict = judge(
        candidate,
        models_dir=MODELS_DIR,
        model_name=name,
        version=version,
        test_split=RECORDS_DIR / "test",
        eval_json=EVAL_JSON,
        bless=params.export.bless,
    )
    write_json_atomic(BLESS_JSON, verdict.to_json())
    verdict.raise_if_refused()
    publish(candidate, target)


if __name__ == "__main__":
    run_stage(main)
