"""The blessing gate: a candidate is published only if its test F2 reaches the trivial
baseline's plus ``export.bless.min_gain_over_baseline`` and the published version's,
scored now, minus ``export.bless.max_drop_from_published``.

First the decision on numbers and the choice of the published version; then the scoring
on copies of the tiny pipeline's exports; last, real ``dvc repro`` refusing a model that
predicts nothing and publishing a better one over it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from amazonia.common.params import BlessParams
from amazonia.common.paths import EVAL_JSON, MODEL_KERAS, MODELS_DIR, RECORDS_DIR
from amazonia.data.labels import label_map
from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER
from amazonia.export.bless import (
    BlessError,
    RefusedError,
    Verdict,
    judge,
    published_version,
    read_baseline_f2,
    score_saved_model,
)
from amazonia.export.chips import read_chips
from amazonia.export.contract import (
    ASSETS_EXTRA,
    LABEL_MAP_ASSET,
    THRESHOLDS_ASSET,
    candidate_dir,
    load_assets,
)
from amazonia.export.saved_model import export_saved_model, load_trained_model
from amazonia.model.evaluation import predict_split
from amazonia.model.metrics import score
from amazonia.model.names import INPUT_NAME, OUTPUT_GROUND, OUTPUT_WEATHER
from tests.conftest import BIN, TINY_PARAMS, ran_stages, run, set_params

DVC = str(BIN / "dvc")
MODEL = "PlanetModel"
CANDIDATE = candidate_dir(MODELS_DIR, MODEL, 1)
PUBLISHED = MODELS_DIR / MODEL / "1"
TINY_BLESS = TINY_PARAMS["export"]["bless"]
GAIN, DROP = "export.bless.min_gain_over_baseline", "export.bless.max_drop_from_published"


# --- The decision, on numbers ------------------------------------------------------------------


def verdict(candidate_f2: float, baseline_f2: float, published_f2: float | None, **bless: float) -> Verdict:
    published = "models/PlanetModel/1" if published_f2 is not None else "none: no version folder"
    return Verdict(
        candidate="models/candidates/PlanetModel/1",
        target="models/PlanetModel/1",
        bless=BlessParams(**bless),
        candidate_f2=candidate_f2,
        baseline_f2=baseline_f2,
        published=published,
        published_f2=published_f2,
    )


@pytest.mark.parametrize(
    "candidate, baseline, published, bless, decision, required",
    [
        # The default run against its baseline, nothing published: the baseline's bar only.
        (0.9425, 0.6632, None, {}, "blessed", 0.7132),
        (0.7131, 0.6632, None, {}, "refused", 0.7132),
        # A bar is reached at equality, to evaluate's 4 decimals (0.6632 + 0.05 is 0.7132000...01).
        (0.7132, 0.6632, None, {}, "blessed", 0.7132),
        # The published version's bar: a retrain a little worse passes, one worse than the
        # tolerance does not, however far above the baseline.
        (0.9375, 0.6632, 0.9425, {}, "blessed", 0.9325),
        (0.9324, 0.6632, 0.9425, {}, "refused", 0.9325),
        (0.9425, 0.6632, 0.9425, {"max_drop_from_published": 0.0}, "blessed", 0.9425),
        (0.3004, 0.1, 0.6004, {"max_drop_from_published": 0.3}, "blessed", 0.3004),  # 0.30040000000000006
        # A negative gain: below the baseline by at most that much.
        (0.6748, 0.7292, None, {"min_gain_over_baseline": -0.4}, "blessed", 0.3292),
        # A bad published version is no excuse: the baseline's bar still holds.
        (0.5, 0.6632, 0.2, {}, "refused", 0.7132),
    ],
)
def test_a_candidate_is_blessed_when_it_reaches_every_bar(
    candidate: float, baseline: float, published: float | None, bless: dict, decision: str, required: float
) -> None:
    judged = verdict(candidate, baseline, published, **bless)
    assert judged.decision == decision
    assert judged.to_json()["required_f2"] == required
    if decision == "blessed":
        judged.raise_if_refused()
    else:
        with pytest.raises(RefusedError):
            judged.raise_if_refused()


def test_a_refusal_names_each_bar_missed_its_numbers_and_its_param(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the verdict's paths are relative: no published folder here
    both = verdict(0.0, 0.7292, 0.6748, min_gain_over_baseline=-0.4, max_drop_from_published=0.3)
    with pytest.raises(RefusedError) as refused:
        both.raise_if_refused()
    assert str(refused.value) == (
        "candidate models/candidates/PlanetModel/1 refused: test F2 0.0000 "
        f"< 0.3292 (the baseline's 0.7292 - 0.4, {GAIN}) "
        f"and < 0.3748 (published models/PlanetModel/1's 0.6748 - 0.3, {DROP}); "
        "nothing published to models/PlanetModel/1. "
        f"Publish a model that scores higher, or change {GAIN} or {DROP} in params.yaml"
    )
    with pytest.raises(RefusedError) as refused:
        verdict(0.93, 0.6632, 0.9425).raise_if_refused()
    assert f"test F2 0.9300 < 0.9325 (published models/PlanetModel/1's 0.9425 - 0.01, {DROP});" in str(
        refused.value
    )
    assert GAIN not in str(refused.value)


def test_the_verdict_is_numbers_and_one_string_per_fact() -> None:
    assert verdict(0.9425, 0.6632, 0.94).to_json() == {
        "verdict": "blessed",
        "candidate_f2": 0.9425,
        "required_f2": 0.93,
        "baseline_f2": 0.6632,
        "published_f2": 0.94,
        "published": "models/PlanetModel/1",
        "min_gain_over_baseline": 0.05,
        "max_drop_from_published": 0.01,
    }


def test_the_published_version_is_the_one_replaced_else_the_highest(tmp_path: Path) -> None:
    assert published_version(tmp_path, MODEL, 1) is None  # no models/PlanetModel/ at all
    base = tmp_path / MODEL
    for name in ("2", "010", ".tmp-11.abc", "candidates", "9x"):
        (base / name).mkdir(parents=True)
    (base / "12").write_text("a file, not a version folder")
    assert published_version(tmp_path, MODEL, 2) == base / "2"  # the one a publication replaces
    assert published_version(tmp_path, MODEL, 3) == base / "010"  # TF Serving's latest: 10
    shutil.rmtree(base / "010")
    shutil.rmtree(base / "2")
    assert published_version(tmp_path, MODEL, 3) is None


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "metrics/eval.json: not found; run 'dvc repro evaluate' first"),
        ("{", "metrics/eval.json: not valid JSON"),
        (
            {"test_images": 5},
            "metrics/eval.json: no baseline.f2 (a number in [0, 1]); rerun 'dvc repro evaluate'",
        ),
        (
            {"test_images": 5, "baseline": {"f2": 1.5}},
            "metrics/eval.json: no baseline.f2 (a number in [0, 1]); rerun 'dvc repro evaluate'",
        ),
        (
            {"test_images": 4, "baseline": {"f2": 0.7}},
            "metrics/eval.json scored 4 test chips, the test split holds 5: rerun 'dvc repro evaluate'",
        ),
    ],
    ids=["missing", "not JSON", "no baseline", "not an F2", "another split"],
)
def test_a_baseline_that_is_not_evaluates_for_this_split_is_refused(
    tmp_path: Path, content: object, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if content is not None:
        EVAL_JSON.parent.mkdir()
        EVAL_JSON.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(BlessError, match="^" + re.escape(message)):
        read_baseline_f2(EVAL_JSON, 5)


# --- Scoring exports, on the tiny pipeline's test split -----------------------------------------


def permuted_export(repo: Path, folder: Path) -> Path:
    """The tiny model exported with both heads' columns reversed, and a label map saying so:
    an export by code whose vocabulary lists the labels in another order."""
    model = load_trained_model(repo / MODEL_KERAS)
    inputs = keras.Input(model.inputs[0].shape[1:], name=INPUT_NAME)
    outputs = model(inputs)
    permuted = keras.Model(inputs, {head: keras.ops.flip(outputs[head], axis=1) for head in outputs})
    _, thresholds = load_assets(repo / CANDIDATE)
    export_saved_model(permuted, folder, label_map(), thresholds)
    shipped = {"weather": list(reversed(LABELS_WEATHER)), "ground": list(reversed(LABELS_GROUND))}
    (folder / ASSETS_EXTRA / LABEL_MAP_ASSET).write_text(json.dumps(shipped))
    return folder


def test_each_export_is_scored_by_its_own_label_map_and_thresholds(
    tiny_pipeline: Path, tmp_path: Path
) -> None:
    chips = read_chips(tiny_pipeline / RECORDS_DIR / "test")
    evaluated = json.loads((tiny_pipeline / EVAL_JSON).read_text())["f2"]
    # The SavedModel through serving_bytes scores what evaluate scored with the Keras model.
    assert score_saved_model(tiny_pipeline / CANDIDATE, chips) == evaluated
    assert score_saved_model(permuted_export(tiny_pipeline, tmp_path / "permuted"), chips) == evaluated
    # Other thresholds shipped, another score: evaluate's, with the Keras model, at those.
    other = shutil.copytree(tiny_pipeline / CANDIDATE, tmp_path / "other")
    cutoffs = np.round(np.linspace(0.05, 0.9, len(LABELS_GROUND)), 2)
    shipped = {"ground": dict(zip(LABELS_GROUND, cutoffs.tolist()))}
    (other / ASSETS_EXTRA / THRESHOLDS_ASSET).write_text(json.dumps(shipped))
    test = predict_split(
        load_trained_model(tiny_pipeline / MODEL_KERAS), tiny_pipeline / RECORDS_DIR / "test"
    )
    assert score_saved_model(other, chips) == score(*test, cutoffs)["f2"]


def judge_tiny_candidate(repo: Path) -> Verdict:
    """The gate's verdict on a tiny pipeline copy's candidate, version 1, with the tiny bars."""
    return judge(
        repo / CANDIDATE,
        models_dir=repo / MODELS_DIR,
        model_name=MODEL,
        version=1,
        test_split=repo / RECORDS_DIR / "test",
        eval_json=repo / EVAL_JSON,
        bless=BlessParams(**TINY_BLESS),
    )


def test_a_published_version_that_does_not_load_is_no_bar_and_the_verdict_says_why(
    pipeline_copy: Path,
) -> None:
    repo = pipeline_copy
    (repo / PUBLISHED / "saved_model.pb").write_bytes(b"not a SavedModel")

    judged = judge_tiny_candidate(repo)

    assert judged.decision == "blessed"
    assert judged.published_f2 is None
    assert judged.published.startswith(f"none: {repo / PUBLISHED} does not load or cannot be scored (")
    assert judged.published.endswith("); judged against the baseline only, as a first model")
    assert [bar.param for bar in judged.bars] == [GAIN]


def test_a_candidate_that_cannot_be_scored_stops_the_gate_naming_it(pipeline_copy: Path) -> None:
    repo = pipeline_copy
    (repo / CANDIDATE / "saved_model.pb").write_bytes(b"not a SavedModel")

    with pytest.raises(BlessError) as stopped:
        judge_tiny_candidate(repo)
    assert str(stopped.value).startswith(
        f"cannot score candidate {repo / CANDIDATE} on {repo / RECORDS_DIR / 'test'}: "
    ), stopped.value


# --- Under dvc repro -----------------------------------------------------------------------------


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def save_model_predicting_nothing(repo: Path) -> None:
    """Replace models/model.keras by a model that answers cloudy and no ground label for
    every chip: F2 0 on a test split without cloudy chips, as the tiny one is."""
    counts = json.loads((repo / "metrics/labels.json").read_text())["counts"]["test"]
    assert counts["cloudy"] == 0 < counts["images"], counts
    size = TINY_PARAMS["train"]["image_size"]
    inputs = keras.Input((size, size, 3), name=INPUT_NAME)
    features = keras.layers.GlobalAveragePooling2D()(inputs)
    weather_bias = np.where(np.array(LABELS_WEATHER) == "cloudy", 10.0, -10.0)
    heads = {
        OUTPUT_WEATHER: keras.layers.Dense(
            len(LABELS_WEATHER),
            activation="softmax",
            kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(weather_bias),
            name=OUTPUT_WEATHER,
        )(features),
        OUTPUT_GROUND: keras.layers.Dense(
            len(LABELS_GROUND),
            activation="sigmoid",
            kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(-10.0),
            name=OUTPUT_GROUND,
        )(features),
    }
    keras.Model(inputs, heads).save(repo / MODEL_KERAS)


def bless_json(repo: Path) -> dict:
    return json.loads((repo / "metrics/bless.json").read_text())


@pytest.mark.slow
def test_the_first_model_is_judged_against_the_baseline_only(tiny_pipeline: Path) -> None:
    evaluation = json.loads((tiny_pipeline / EVAL_JSON).read_text())
    assert bless_json(tiny_pipeline) == {
        "verdict": "blessed",
        "candidate_f2": evaluation["f2"],  # the export scored as evaluate scored the Keras model
        "required_f2": round(evaluation["baseline"]["f2"] + TINY_BLESS["min_gain_over_baseline"], 4),
        "baseline_f2": evaluation["baseline"]["f2"],
        "published_f2": None,
        "published": "none: no version folder in models/PlanetModel; judged against the baseline only",
        **TINY_BLESS,
    }
    assert files(tiny_pipeline / PUBLISHED) == files(tiny_pipeline / CANDIDATE)


@pytest.mark.slow
def test_a_model_predicting_nothing_is_refused_and_once_forced_through_a_better_one_replaces_it(
    pipeline_copy: Path,
) -> None:
    repo = pipeline_copy
    served = files(repo / MODELS_DIR / MODEL)
    trained = (repo / MODEL_KERAS).read_bytes()
    published_f2 = trained_f2 = bless_json(repo)["candidate_f2"]
    baseline_f2 = json.loads((repo / EVAL_JSON).read_text())["baseline"]["f2"]
    save_model_predicting_nothing(repo)

    # -s: train would otherwise restore the model it trained.
    done = run([DVC, "repro", "-s", "export", "smoke_check"], repo, check=False)

    assert done.returncode != 0
    assert ran_stages(done.stdout) == {"export", "smoke_check"}
    gain, drop = TINY_BLESS["min_gain_over_baseline"], TINY_BLESS["max_drop_from_published"]
    refusal = (
        f"error: candidate {CANDIDATE} refused: test F2 0.0000 "
        f"< {baseline_f2 + gain:.4f} (the baseline's {baseline_f2:.4f} - {-gain:g}, {GAIN}) "
        f"and < {published_f2 - drop:.4f} (published {PUBLISHED}'s {published_f2:.4f} - {drop:g}, {DROP}); "
        f"{PUBLISHED} is unchanged. "
        f"Publish a model that scores higher, or change {GAIN} or {DROP} in params.yaml"
    )
    assert refusal in done.stderr.splitlines(), done.stderr
    assert files(repo / MODELS_DIR / MODEL) == served
    assert json.loads((repo / "metrics/smoke.json").read_text())["passed"] is True  # faithful, not good
    assert bless_json(repo) == {
        "verdict": "refused",
        "candidate_f2": 0.0,
        "required_f2": max(round(baseline_f2 + gain, 4), round(published_f2 - drop, 4)),
        "baseline_f2": baseline_f2,
        "published_f2": published_f2,
        "published": str(PUBLISHED),
        **TINY_BLESS,
    }
    diff = run([DVC, "metrics", "diff", "--md"], repo).stdout
    # HEAD's verdict is whatever the project last committed; the pull request shows the refusal.
    assert re.search(r"^\| metrics/bless.json +\| verdict +\| [^|]+ \| refused +\|", diff, re.M), diff

    # A refusal is not a result: the stage stays stale, and judging again refuses again.
    status = run([DVC, "status", "smoke_check"], repo).stdout
    assert status.startswith("smoke_check:"), status
    again = run([DVC, "repro", "-s", "smoke_check"], repo, check=False)
    assert again.returncode != 0 and ran_stages(again.stdout) == {"smoke_check"}
    assert refusal in again.stderr.splitlines(), again.stderr
    assert files(repo / MODELS_DIR / MODEL) == served

    # Published anyway, the gate relaxed as far as it goes: the same candidate (the gate's
    # params are smoke_check's alone) replaces the trained model.
    set_params(repo, {"export": {"bless": {"min_gain_over_baseline": -1.0, "max_drop_from_published": 1.0}}})
    forced = run([DVC, "repro", "-s", "export", "smoke_check"], repo)
    assert ran_stages(forced.stdout) == {"smoke_check"}
    assert bless_json(repo)["verdict"] == "blessed"
    assert bless_json(repo)["published_f2"] == trained_f2 and bless_json(repo)["candidate_f2"] == 0.0

    # The trained model again, and the tiny gate: it clears the worse published version's bar.
    (repo / MODEL_KERAS).write_bytes(trained)
    set_params(repo, {"export": {"bless": TINY_BLESS}})
    done = run([DVC, "repro"], repo)

    # The trained model's candidate comes back from the run-cache; the gate never does (persist).
    assert "Stage 'export' is cached - skipping run" in done.stdout
    assert ran_stages(done.stdout) == {"smoke_check"}
    judged = bless_json(repo)
    assert judged["verdict"] == "blessed"
    assert (judged["candidate_f2"], judged["published_f2"]) == (trained_f2, 0.0)
    assert judged["published"] == str(PUBLISHED)
    assert files(repo / PUBLISHED) == files(repo / CANDIDATE)
    assert run([DVC, "status"], repo).stdout.strip() == "Data and pipelines are up to date."
