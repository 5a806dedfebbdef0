"""The export and smoke_check stages on real TensorFlow: an untrained model exported
from a tiny project folder, its SavedModel read back, run, and broken on purpose."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

from amazonia.common.files import write_json_atomic
from amazonia.common.paths import (
    BLESS_JSON,
    EVAL_JSON,
    LABEL_MAP_JSON,
    MODEL_KERAS,
    MODELS_DIR,
    RECORDS_DIR,
    SMOKE_JSON,
    THRESHOLDS_JSON,
)
from amazonia.common.stage import run_stage
from amazonia.data.kaggle import TAGS_CSV, image_path
from amazonia.data.labels import encode_tags, label_map, read_tags_csv
from amazonia.data.records.writer import write_split
from amazonia.data.synthetic.generate import generate_dataset
from amazonia.data.vocabulary import LABELS_GROUND
from amazonia.export.chips import read_chips
from amazonia.export.contract import (
    ASSETS_EXTRA,
    INPUT_BYTES,
    SIGNATURE_BYTES,
    SIGNATURE_FLOAT,
    SIGNATURES,
    THRESHOLDS_ASSET,
    ExportError,
    candidate_dir,
    load_assets,
    published_dir,
)
from amazonia.export.publish import publish
from amazonia.export.saved_model import export_saved_model, load_trained_model, warmup_from_split
from amazonia.export.smoke import SmokeCheckError, describe_saved_model, run_smoke_check, xla_functions
from amazonia.export.warmup import (
    WARMUP_CHIPS,
    WarmupRequest,
    read_warmup_requests,
    warmup_requests_path,
    write_warmup_requests,
)
from amazonia.model.depthwise import rebuilt
from amazonia.model.distribute import set_precision
from amazonia.model.names import INPUT_NAME
from amazonia.model.network import build_model, for_inference
from stages import export as export_stage
from stages import smoke_check as smoke_stage

SIZE = 32
MODEL_NAME, VERSION = "PlanetModel", 1
CANDIDATE = candidate_dir(MODELS_DIR, MODEL_NAME, VERSION)
PUBLISHED = published_dir(MODELS_DIR, MODEL_NAME, VERSION)
# A different threshold per label, listed against the vocabulary's order: a label paired
# with another label's threshold, or thresholds read by position, shows.
THRESHOLDS = {"ground": {label: round(0.9 - 0.05 * i, 2) for i, label in enumerate(reversed(LABELS_GROUND))}}
OUTPUTS = {
    "ground": {"dtype": "float32", "shape": [-1, 13]},
    "weather": {"dtype": "float32", "shape": [-1, 4]},
}


def small_model(image_size: int) -> keras.Model:
    """The project's architecture, narrow: untrained weights export just as well."""
    return build_model(image_size, filters=8, dense_units=16)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the export and smoke_check stages read (params, model, thresholds, label
    map, test records of 32 px chips), after one run of the export stage."""
    root = tmp_path_factory.mktemp("export") / "repo"
    raw = root / "data" / "raw"
    generate_dataset(raw, 20, seed=1, workers=1)
    # Every chip goes into the test records (write_split ignores the split column); the
    # fractions only satisfy encode_tags, which refuses an empty split.
    rows = encode_tags(read_tags_csv(raw / TAGS_CSV), val=0.3, test=0.3).table
    write_split(rows, raw, root / RECORDS_DIR / "test", split="test", shard_mb=1)
    # An untrained model: the blessing gate's bar at F2 0 (tests/test_bless.py tests the gate).
    bless = {"min_gain_over_baseline": 0.0}
    params = {"export": {"model_name": MODEL_NAME, "version": VERSION, "bless": bless}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / MODEL_KERAS).parent.mkdir(parents=True)
    small_model(SIZE).save(root / MODEL_KERAS)
    write_json_atomic(root / LABEL_MAP_JSON, label_map())
    write_json_atomic(root / THRESHOLDS_JSON, THRESHOLDS)
    # What evaluate writes and the blessing gate reads.
    write_json_atomic(root / EVAL_JSON, {"test_images": len(rows), "baseline": {"f2": 0.0}})
    with contextlib.chdir(root):
        export_stage.main()
    return root


@pytest.fixture(scope="module")
def exported(project: Path) -> Path:
    return project / CANDIDATE


@pytest.fixture(scope="module")
def loaded(exported: Path):
    return tf.saved_model.load(str(exported))


def test_export_has_both_signatures_with_the_contracts_names_dtypes_and_shapes(exported: Path):
    serve = describe_saved_model(exported)["serve"]

    assert serve[SIGNATURE_FLOAT]["inputs"] == {
        INPUT_NAME: {"dtype": "float32", "shape": [-1, SIZE, SIZE, 3]}
    }
    assert serve[SIGNATURE_BYTES]["inputs"] == {INPUT_BYTES: {"dtype": "string", "shape": [-1]}}
    for name, contract in SIGNATURES.items():
        assert serve[name]["outputs"] == OUTPUTS
        assert {k: serve[name][k] for k in ("inputs", "outputs")} == contract.describe(SIZE)
    assert sorted(serve) == ["serving_bytes", "serving_default"]
    # What `saved_model_cli show --all` lists of the pipeline's export: tests/test_model_pipeline.py.


def test_each_weight_is_stored_once_in_the_order_of_its_name(project: Path, exported: Path):
    model = load_trained_model(project / MODEL_KERAS)
    checkpoint = str(exported / "variables" / "variables")
    stored = dict(tf.train.list_variables(checkpoint))
    stored.pop("_CHECKPOINTABLE_OBJECT_GRAPH")
    # Not twice (keras-team/keras#23553), nor the dropout layers' seed states, which
    # inference never reads and which differ in every process.
    assert sum(int(np.prod(shape)) for shape in stored.values()) == model.count_params()
    by_name = sorted(model.weights, key=lambda w: w.value.name)
    assert [stored[f"weights/{i}/.ATTRIBUTES/VARIABLE_VALUE"] for i in range(len(by_name))] == [
        list(w.shape) for w in by_name
    ]


def test_label_map_and_thresholds_travel_in_assets_extra(exported: Path):
    assert sorted(p.name for p in (exported / ASSETS_EXTRA).iterdir()) == [
        "label_map.json",
        "tf_serving_warmup_requests",
        "thresholds.json",
    ]
    assert load_assets(exported) == (label_map(), THRESHOLDS)
    shipped = json.loads((exported / ASSETS_EXTRA / THRESHOLDS_ASSET).read_text())["ground"]
    assert len(set(shipped.values())) == len(LABELS_GROUND)
    for label in LABELS_GROUND:
        assert shipped[label] == THRESHOLDS["ground"][label], label
    assert list(shipped) == list(THRESHOLDS["ground"])  # as evaluate wrote them: order means nothing
    # Written atomically: no temporary folder is left beside the version folder.
    assert [p.name for p in exported.parent.iterdir()] == [str(VERSION)]
    # A candidate: nothing is published before the smoke check passed.
    assert not (exported.parents[2] / MODEL_NAME).exists()


def test_serving_bytes_decodes_png_and_resizes_a_large_jpeg(project: Path, exported: Path, loaded):
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    rgba = np.dstack([small, rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)])
    big_jpeg = image_path(project / "data" / "raw", "train_0").read_bytes()
    big = tf.io.decode_jpeg(big_jpeg, channels=3)
    assert big.shape == (256, 256, 3)

    outputs = loaded.signatures[SIGNATURE_BYTES](image_bytes=tf.constant([png(small), png(rgba), big_jpeg]))

    assert outputs["weather"].shape == (3, 4) and outputs["ground"].shape == (3, 13)
    np.testing.assert_allclose(outputs["weather"].numpy().sum(axis=1), 1, atol=1e-5)
    assert 0 <= outputs["ground"].numpy().min() and outputs["ground"].numpy().max() <= 1
    # The same pixels through the float signature: an S x S image is not resized and
    # alpha is dropped; the 256 px chip is shrunk with antialiasing, to the nearest level.
    resized = np.round(tf.image.resize(tf.cast(big, tf.float32), (SIZE, SIZE), antialias=True).numpy())
    floats = np.stack([small / 255.0, small / 255.0, np.clip(resized, 0, 255) / 255.0]).astype(np.float32)
    expected = loaded.signatures[SIGNATURE_FLOAT](input_image=tf.constant(floats))
    for name in ("weather", "ground"):
        np.testing.assert_allclose(outputs[name].numpy(), expected[name].numpy(), atol=1e-5)


def test_the_warmup_file_replays_real_test_chips_through_both_signatures(
    project: Path, exported: Path, loaded
):
    requests = list(read_warmup_requests(exported))

    assert [(r.signature_name, *(len(v) for v in r.inputs.values())) for r in requests] == [
        (SIGNATURE_BYTES, 1),
        (SIGNATURE_BYTES, WARMUP_CHIPS),
        (SIGNATURE_FLOAT, 1),
        (SIGNATURE_FLOAT, WARMUP_CHIPS),
    ]
    files, floats = requests[1].inputs[INPUT_BYTES], requests[3].inputs[INPUT_NAME]
    np.testing.assert_array_equal(requests[0].inputs[INPUT_BYTES], files[:1])
    np.testing.assert_array_equal(requests[2].inputs[INPUT_NAME], floats[:1])
    # Real chips: byte for byte files of data/raw, the first of the test split's records.
    chips = [image_path(project / "data" / "raw", name).read_bytes() for name in stored_chip_names(project)]
    assert list(files) == chips[:WARMUP_CHIPS]
    # The same chips both ways: the model's pixels of those files, at its input size.
    assert floats.dtype == np.float32 and floats.shape == (WARMUP_CHIPS, SIZE, SIZE, 3)
    by_bytes = loaded.signatures[SIGNATURE_BYTES](image_bytes=tf.constant(files))
    by_pixels = loaded.signatures[SIGNATURE_FLOAT](input_image=tf.constant(floats))
    for name in ("weather", "ground"):
        np.testing.assert_allclose(by_bytes[name].numpy(), by_pixels[name].numpy(), atol=1e-5)


def test_the_warmup_file_is_the_same_bytes_for_the_same_model_and_chips(
    project: Path, exported: Path, tmp_path: Path
):
    repo = shutil.copytree(project, tmp_path / "repo")
    shutil.rmtree(repo / CANDIDATE)
    with contextlib.chdir(repo):
        export_stage.main()
    again = warmup_requests_path(repo / CANDIDATE).read_bytes()
    assert again == warmup_requests_path(exported).read_bytes()
    assert (repo / CANDIDATE / "saved_model.pb").read_bytes() != (exported / "saved_model.pb").read_bytes()


WARMUP_OF = "assets.extra/tf_serving_warmup_requests of {dir}"


def break_warmup_file(version_dir: Path, how: str) -> None:
    path = warmup_requests_path(version_dir)
    if how == "missing":
        path.unlink()
    elif how == "not a TFRecord file":
        path.write_bytes(b"not a TFRecord file")
    else:
        requests = list(read_warmup_requests(version_dir))
        if how == "serving_default only":
            requests = [r for r in requests if r.signature_name == SIGNATURE_FLOAT]
        else:  # chips of another size than the model's
            pixels = np.zeros((1, SIZE // 2, SIZE // 2, 3), np.float32)
            requests = [
                r
                if r.signature_name != SIGNATURE_FLOAT
                else WarmupRequest(SIGNATURE_FLOAT, {INPUT_NAME: pixels})
                for r in requests
            ]
        write_warmup_requests(version_dir, requests)


@pytest.mark.parametrize(
    "how, detail",
    [
        ("missing", "no " + WARMUP_OF + "; rerun 'dvc repro export'"),
        ("not a TFRecord file", "assets.extra/tf_serving_warmup_requests: record 0 is unreadable ("),
        ("serving_default only", WARMUP_OF + ": no request for serving_bytes, which would answer cold"),
        ("chips of another size", WARMUP_OF + ": request 2 (serving_default): "),
    ],
    ids=["missing", "not a TFRecord file", "serving_default only", "chips of another size"],
)
def test_smoke_check_names_a_missing_or_broken_warmup_file(
    project: Path, exported: Path, tmp_path: Path, how: str, detail: str
):
    copy = shutil.copytree(exported, tmp_path / "1")
    break_warmup_file(copy, how)

    report = run_smoke_check(copy, project / MODEL_KERAS, project / RECORDS_DIR / "test")

    failed = {c.name: c.detail for c in report.checks if c.ran and not c.passed}
    assert list(failed) == ["warmup requests"]
    assert failed["warmup requests"].startswith(detail.format(dir=copy)), failed
    # The slowest check waits for all the others.
    (cli,) = [c for c in report.checks if c.name == "saved_model_cli run"]
    assert (cli.ran, cli.detail) == (False, "not run: needs 'warmup requests', which did not pass")


@pytest.mark.slow
def test_smoke_check_passes_on_a_good_export(project: Path):
    with contextlib.chdir(project):
        smoke_stage.main()
    report = json.loads((project / SMOKE_JSON).read_text())

    assert report["passed"] is True, [c for c in report["checks"] if not c["passed"]]
    assert report["model"] == str(CANDIDATE)
    assert json.loads((project / BLESS_JSON).read_text())["verdict"] == "blessed"
    # Published: a copy of the candidate where servers poll, and nothing else beside it.
    assert files(project / PUBLISHED) == files(project / CANDIDATE)
    assert [p.name for p in (project / PUBLISHED).parent.iterdir()] == [str(VERSION)]
    names = {c["name"] for c in report["checks"]}
    assert {
        "files",
        "signature serving_default outputs",
        "no XLA",
        "saved model vs keras",
        "warmup requests",
        "saved_model_cli run",
    } <= names
    assert set(report["max_abs_diff"]) == {"saved_model_vs_keras", "bytes_vs_float", "cli_vs_python"}
    assert max(report["max_abs_diff"].values()) <= 1e-5
    assert sorted(report["signatures"]["serve"]) == ["serving_bytes", "serving_default"]


@pytest.mark.slow
def test_smoke_check_fails_without_variables_and_still_writes_its_report(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    repo = shutil.copytree(project, tmp_path / "repo")
    publish(repo / CANDIDATE, repo / PUBLISHED)  # a served version, as a passed check leaves it
    served = files(repo / PUBLISHED)
    shutil.rmtree(repo / CANDIDATE / "variables")

    with contextlib.chdir(repo), pytest.raises(SystemExit) as exited:
        run_stage(smoke_stage.main)

    assert exited.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith(
        "error: smoke check of models/candidates/PlanetModel/1: check 'files' failed: missing variables/"
    )
    assert "check 'load' failed:" in error and "Traceback" not in error
    report = json.loads((repo / SMOKE_JSON).read_text())
    assert report["passed"] is False
    assert json.loads((repo / BLESS_JSON).read_text())["verdict"] == "not judged: its smoke check failed"
    status = {c["name"]: c["passed"] for c in report["checks"]}
    assert not status["files"] and not status["load"] and not status["saved_model_cli run"]
    assert status["signature serving_default outputs"]  # saved_model.pb alone still shows the signatures
    # Not published: the served version is byte for byte what it was, with nothing beside it.
    assert files(repo / PUBLISHED) == served
    assert [p.name for p in (repo / PUBLISHED).parent.iterdir()] == [str(VERSION)]


@pytest.mark.slow
def test_smoke_check_names_a_wrong_output(project: Path, tmp_path: Path):
    inputs = keras.Input((SIZE, SIZE, 3), name=INPUT_NAME)
    features = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = {
        "weathr": keras.layers.Dense(4, activation="softmax", name="weathr")(features),
        "ground": keras.layers.Dense(13, activation="sigmoid", name="ground")(features),
    }
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "typo.keras")
    export_saved_model(model, tmp_path / "typo" / "1", label_map(), THRESHOLDS)

    report = run_smoke_check(tmp_path / "typo" / "1", tmp_path / "typo.keras", project / RECORDS_DIR / "test")

    expected = (
        "check 'signature serving_default outputs' failed: "
        "expected outputs ground, weather; found ground, weathr"
    )
    with pytest.raises(SmokeCheckError, match=re.escape(expected)):
        report.raise_if_failed()


@pytest.mark.slow
def test_smoke_check_names_a_wrong_input_shape(project: Path, tmp_path: Path):
    export_saved_model(small_model(24), tmp_path / "24px" / "1", label_map(), THRESHOLDS)

    # The chip size expected is the Keras model's (32 px), which this export was not made from.
    report = run_smoke_check(tmp_path / "24px" / "1", project / MODEL_KERAS, project / RECORDS_DIR / "test")

    expected = (
        "check 'signature serving_default inputs' failed: "
        "input input_image: expected float32 (-1, 32, 32, 3), found float32 (-1, 24, 24, 3)"
    )
    with pytest.raises(SmokeCheckError, match=re.escape(expected)):
        report.raise_if_failed()


def test_export_refuses_a_model_that_takes_no_square_chips_or_incomplete_thresholds(tmp_path: Path):
    inputs = keras.Input((SIZE, 2 * SIZE, 3), name=INPUT_NAME)
    wide = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs), name="wide")
    expected = "model 'wide' takes inputs of shape [(None, 32, 64, 3)], not one (None, S, S, 3) batch"
    with pytest.raises(ExportError, match=re.escape(expected)):
        export_saved_model(wide, tmp_path / "m" / "1", label_map(), THRESHOLDS)
    partial = {"ground": {t: 0.5 for t in LABELS_GROUND if t != "water"}}
    with pytest.raises(ExportError, match="missing: water"):
        export_saved_model(small_model(SIZE), tmp_path / "m" / "1", label_map(), partial)
    assert not (tmp_path / "m").exists()


class TwoScales(keras.layers.Layer):
    """A layer whose two weights share a name, which a custom layer can do."""

    def build(self, input_shape: tuple) -> None:
        self.first = self.add_weight(shape=(), initializer="ones", name="scale")
        self.second = self.add_weight(shape=(), initializer="ones", name="scale")

    def call(self, inputs):
        return inputs * self.first * self.second


def test_export_refuses_a_model_whose_variables_share_a_name(tmp_path: Path):
    inputs = keras.Input((SIZE, SIZE, 3), name=INPUT_NAME)
    pooled = keras.layers.GlobalAveragePooling2D()(TwoScales(name="scales")(inputs))
    outputs = {"weather": keras.layers.Dense(4, name="weather")(pooled)}
    model = keras.Model(inputs, outputs, name="twins")
    expected = (
        "model 'twins': more than one variable is named scales/scale:0; "
        "the export stores them in the order of their names: give each its own"
    )
    with pytest.raises(ExportError, match=re.escape(expected)):
        export_saved_model(model, tmp_path / "m" / "1", label_map(), THRESHOLDS)
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_with_tta_d4_both_signatures_average_the_eight_views_as_the_keras_reference_does(
    project: Path, tmp_path: Path
):
    model, test_split = load_trained_model(project / MODEL_KERAS), project / RECORDS_DIR / "test"
    warmup = warmup_from_split(model, test_split)
    export_saved_model(model, tmp_path / "d4" / "1", label_map(), THRESHOLDS, "d4", warmup)

    like_with_like = run_smoke_check(tmp_path / "d4" / "1", project / MODEL_KERAS, test_split, tta="d4")
    assert like_with_like.passed, [c.to_json() for c in like_with_like.checks if not c.passed]
    assert like_with_like.max_abs_diff["saved_model_vs_keras"] <= 1e-5

    # Held against the model without TTA, the same export fails the comparison.
    unlike = run_smoke_check(tmp_path / "d4" / "1", project / MODEL_KERAS, test_split, tta="none")
    failed = [c.name for c in unlike.checks if c.ran and not c.passed]
    assert failed == ["saved model vs keras"]


def grouped_model(image_size: int) -> keras.Model:
    """Two heads on a depthwise convolution written as Keras's grouped Conv2D, as ConvNeXt's
    are: one input channel per group, two outputs from each."""
    inputs = keras.Input((image_size, image_size, 3), name=INPUT_NAME)
    features = keras.layers.Conv2D(6, 3, padding="same", groups=3, name="grouped")(inputs)
    features = keras.layers.GlobalAveragePooling2D()(features)
    outputs = {
        "weather": keras.layers.Dense(4, activation="softmax", name="weather")(features),
        "ground": keras.layers.Dense(13, activation="sigmoid", name="ground")(features),
    }
    return keras.Model(inputs, outputs)


def test_a_rebuild_that_would_copy_weights_into_other_layers_is_refused():
    layers = [keras.Input((4,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(4, name="b")]
    model = keras.Sequential(layers, name="two")
    config = model.get_config()
    config["layers"][1:] = config["layers"][:0:-1]  # b before a: the same shapes, another order
    expected = (
        "two: rebuilt weights are in another order: "
        "[('two/a/kernel', 'b/kernel'), ('two/a/bias', 'b/bias'), ('two/b/kernel', 'a/kernel')]"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        rebuilt(model, config)


@pytest.mark.slow
def test_a_grouped_convolution_is_exported_without_xla_and_an_export_needing_xla_fails_the_smoke_check(
    project: Path, tmp_path: Path
):
    keras.utils.set_random_seed(2)
    model, test_split = grouped_model(SIZE), project / RECORDS_DIR / "test"
    model.save(tmp_path / "model.keras")

    # As the export stage loads it: the same convolution as a DepthwiseConv2D.
    inference = load_trained_model(tmp_path / "model.keras")
    depthwise = inference.get_layer("grouped")
    assert isinstance(depthwise, keras.layers.DepthwiseConv2D) and depthwise.depth_multiplier == 2
    chips = np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32)
    for head in ("weather", "ground"):
        np.testing.assert_allclose(inference(chips)[head], model(chips)[head], atol=1e-6)
    # A model trained in mixed precision before the backbones were built depthwise: both
    # rewrites in one rebuild.
    try:
        set_precision("mixed_bfloat16")
        mixed = grouped_model(SIZE)
    finally:
        set_precision("float32")
    swapped = for_inference(mixed)
    assert isinstance(swapped.get_layer("grouped"), keras.layers.DepthwiseConv2D)
    assert {layer.dtype_policy.name for layer in swapped.layers} == {"float32"}
    # Two input channels per group is no depthwise convolution: left as it is, for the check to name.
    two_per_group = keras.Sequential([keras.Input((SIZE, SIZE, 4)), keras.layers.Conv2D(4, 3, groups=2)])
    assert for_inference(two_per_group) is two_per_group
    warmup = warmup_from_split(inference, test_split)
    export_saved_model(inference, tmp_path / "depthwise" / "1", label_map(), THRESHOLDS, warmup=warmup)
    assert xla_functions(tmp_path / "depthwise" / "1") == []

    # The model as Keras runs it: its grouped convolution is a function XLA must compile.
    export_saved_model(model, tmp_path / "grouped" / "1", label_map(), THRESHOLDS, warmup=warmup)
    needing_xla = xla_functions(tmp_path / "grouped" / "1")
    assert needing_xla
    report = run_smoke_check(tmp_path / "grouped" / "1", tmp_path / "model.keras", test_split)
    failed = {c.name: c.detail for c in report.checks if c.ran and not c.passed}
    assert list(failed) == ["no XLA"], failed
    assert failed["no XLA"] == (
        f"{len(needing_xla)} function(s) must be compiled by XLA ({', '.join(needing_xla[:3])}"
        f"{f' and {len(needing_xla) - 3} more' if len(needing_xla) > 3 else ''}), "
        "which TF Serving leaves off on CPU (--xla_cpu_compilation_enabled=false: such a model returns "
        "a bad status on its first compilation request, TF Serving documents). "
        "Export what amazonia.model.network.for_inference makes of the model (depthwise grouped "
        "convolutions as DepthwiseConv2D), or leave out the layers that need XLA"
    )


def stored_chip_names(project: Path) -> list[str]:
    """The test split's image names in record order."""
    return read_chips(project / RECORDS_DIR / "test").names


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
