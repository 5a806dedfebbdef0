"""train.architecture and train.weights: every architecture from training to an answer of
``amazonia serve``, and pretrained weights brought in by ``dvc import-url``.

No weights can be downloaded here, so the Keras Applications files are stood in for by files
written locally in their format (``tests.conftest.write_keras_weights``), which Keras loads
the way it loads the real ones.
"""

from __future__ import annotations

import base64
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import requests

from amazonia.common.params import ARCHITECTURES
from amazonia.model import pretrained
from tests.conftest import (
    BIN,
    ROOT,
    S3_ACCESS_KEY_ID,
    S3_BUCKET,
    S3_SECRET,
    TINY_PARAMS,
    ran_stages,
    read_keras_weights,
    run,
    run_python,
    serve_models,
    set_params,
    write_keras_weights,
)

DVC = str(BIN / "dvc")
SIZE = TINY_PARAMS["train"]["image_size"]
BACKBONES = [a for a in ARCHITECTURES if a != "article"]
LIGHTEST = "mobilenet_v3_small"
TOLERANCE = 1e-5  # served answers vs the float32 Keras model, same pixels


# --- Which file each backbone loads -------------------------------------------------------


def test_the_weights_table_names_the_files_keras_applications_downloads():
    """Each name, URL and hash derived as Keras's own code derives them, from its constants."""
    from keras.src.applications import convnext, efficientnet_v2, mobilenet_v3, resnet

    small = "small_224_1.0_float"  # MobileNetV3Small(alpha=1.0, minimalistic=False)
    derived = {
        "mobilenet_v3_small": (
            mobilenet_v3.BASE_WEIGHT_PATH,
            f"weights_mobilenet_v3_{small}_no_top_v2.h5",
            mobilenet_v3.WEIGHTS_HASHES[small][1],
        ),
        "efficientnet_v2_b0": (
            efficientnet_v2.BASE_WEIGHTS_PATH,
            "efficientnetv2-b0" + "_notop.h5",
            efficientnet_v2.WEIGHTS_HASHES["b0"][1],
        ),
        "resnet50": (
            resnet.BASE_WEIGHTS_PATH,
            "resnet50" + "_weights_tf_dim_ordering_tf_kernels_notop.h5",
            resnet.WEIGHTS_HASHES["resnet50"][1],
        ),
        "convnext_tiny": (
            convnext.BASE_WEIGHTS_PATH,
            "convnext_tiny" + "_notop.h5",
            convnext.WEIGHTS_HASHES["convnext_tiny"][1],
        ),
    }
    # The formulas above, as they stand in Keras's sources.
    for module, formula in (
        (mobilenet_v3, 'f"weights_mobilenet_v3_{model_name}_no_top_v2.h5"'),
        (efficientnet_v2, 'file_suffix = "_notop.h5"'),
        (resnet, 'f"{weights_name}_weights_tf_dim_ordering_tf_kernels_notop.h5"'),
        (convnext, 'file_suffix = "_notop.h5"'),
    ):
        assert formula in inspect.getsource(module), module.__name__
    assert set(derived) == set(pretrained.WEIGHTS) == set(BACKBONES)
    for architecture, (base, name, keras_hash) in derived.items():
        assert pretrained.WEIGHTS[architecture] == pretrained.WeightsFile(name, base + name, keras_hash)


def test_a_missing_weights_file_is_one_line_naming_the_import_command(tmp_path):
    folder = tmp_path / "models/pretrained"
    with pytest.raises(pretrained.PretrainedError) as caught:
        pretrained.weights_path("efficientnet_v2_b0", folder)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{folder}/efficientnetv2-b0_notop.h5: not found")
    assert (
        f"'dvc import-url https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/"
        f"efficientnetv2-b0_notop.h5 {folder.as_posix()}/'" in message
    )


@pytest.mark.slow
@pytest.mark.parametrize("architecture", BACKBONES)
def test_a_weights_file_in_keras_applications_format_loads_into_the_backbone(architecture, tmp_path):
    import keras

    from amazonia.model import architectures
    from amazonia.model.architectures import all_layers, backbone_of
    from amazonia.model.network import build_model

    path = tmp_path / pretrained.WEIGHTS[architecture].name
    written = write_keras_weights(architecture, path, seed=3)
    model = build_model(SIZE, architecture, weights=path)
    backbone = backbone_of(model)
    loaded = backbone.get_weights()
    assert len(loaded) == len(written)
    assert all(np.array_equal(a, b.reshape(a.shape)) for a, b in zip(loaded, written))
    assert all(np.array_equal(a, b) for a, b in zip(read_keras_weights(path), written))
    # Reshaped only where Keras's grouped Conv2D became a DepthwiseConv2D (ConvNeXt's 18).
    reshaped = {w.path.split("/")[-2] for w, b in zip(backbone.weights, written) if w.shape != b.shape}
    depthwise = {x.name for x in all_layers(backbone) if isinstance(x, keras.layers.DepthwiseConv2D)}
    assert not [x for x in all_layers(backbone) if isinstance(x, keras.layers.Conv2D) and x.groups > 1]
    assert reshaped <= depthwise and len(reshaped) == (18 if architecture == "convnext_tiny" else 0)
    # And it computes what Keras's own backbone computes from the file.
    keras_own = architectures.BACKBONES[architecture](
        include_top=False, weights=str(path), input_shape=(SIZE, SIZE, 3)
    )
    pixels = np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32) * 255
    np.testing.assert_allclose(backbone(pixels), keras_own(pixels), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_backbone_from_random_weights_averages_its_batch_statistics_at_0_9(tmp_path):
    """Keras builds MobileNetV3 with a batch-norm momentum of 0.999: trained from random weights
    for a few epochs its inference-mode outputs are constant (test F2 the baseline's). A
    from-scratch backbone gets 0.9, kept through save and load; a pretrained one keeps Keras's."""
    import keras

    from amazonia.model.architectures import FROM_SCRATCH_BN_MOMENTUM, backbone_of, load_model
    from amazonia.model.network import build_model
    from amazonia.model.training import save_model_atomic

    def momenta(model):
        norms = [x for x in backbone_of(model).layers if isinstance(x, keras.layers.BatchNormalization)]
        return {layer.momentum for layer in norms}

    scratch = build_model(SIZE, "mobilenet_v3_small")
    assert momenta(scratch) == {FROM_SCRATCH_BN_MOMENTUM}
    save_model_atomic(scratch, tmp_path / "model.keras")
    assert momenta(load_model(tmp_path / "model.keras", compile=False)) == {FROM_SCRATCH_BN_MOMENTUM}

    path = tmp_path / pretrained.WEIGHTS["mobilenet_v3_small"].name
    write_keras_weights("mobilenet_v3_small", path, seed=3)
    assert momenta(build_model(SIZE, "mobilenet_v3_small", weights=path)) == {0.999}


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_params_smallest_input_size_is_the_networks(architecture):
    """MIN_IMAGE_SIZE (which params.py checks train.image_size against) is where the network
    itself stops: it builds and answers at that size, and fails one pixel below."""
    from amazonia.common.params import MIN_IMAGE_SIZE
    from amazonia.model.network import build_model

    smallest = MIN_IMAGE_SIZE[architecture]
    model = build_model(smallest, architecture, filters=2, dense_units=2)
    outputs = model(np.zeros((1, smallest, smallest, 3), np.float32))
    assert outputs["weather"].shape == (1, 4) and outputs["ground"].shape == (1, 13)
    with pytest.raises(ValueError):
        build_model(smallest - 1, architecture, filters=2, dense_units=2)


def test_resnet50_normalises_as_keras_preprocess_input_inside_the_model():
    import keras

    from amazonia.model.architectures import CaffePreprocessing

    chips = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    inside = CaffePreprocessing()(keras.layers.Rescaling(255.0)(chips))
    expected = keras.applications.resnet50.preprocess_input(chips * 255.0)
    np.testing.assert_allclose(np.asarray(inside), expected, atol=1e-4)


# --- Every architecture: one epoch, export, smoke check, amazonia serve --------------------

# In a process of its own (it sets Keras's global dtype policy and seed). One step, run
# eagerly: tracing a backbone's training step costs 10-20 s of CPU each, and fitting a
# backbone in graph mode is what the pretrained and resume tests do. The export is of the
# float32 inference model made in memory; the smoke check loads the saved .keras as the
# export stage does, and holds the export against it. SERVE_CHIPS test chips are pushed
# through each inference model here, for the serving test to compare answers with.
TRAIN_AND_EXPORT = """
import sys
from pathlib import Path
import keras
import numpy as np
import tensorflow as tf
from amazonia.data.labels import label_map
from amazonia.data.records.schema import FEATURE_IMAGE, feature_spec
from amazonia.export.saved_model import export_saved_model, warmup_from_split
from amazonia.model.distribute import set_precision
from amazonia.model.input_pipeline import load_split
from amazonia.model.network import build_model, compile_model, for_inference
from amazonia.model.preprocessing import preprocess, to_model_input
from amazonia.model.training import save_model_atomic

records, work, size, serve_chips = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
architectures = sys.argv[5:]
thresholds = {"ground": {label: 0.5 for label in label_map()["ground"]}}
chips, labels = next(iter(load_split(records / "train", size, batch_size=8)[0]))
shards = sorted(str(p) for p in (records / "test").glob("*.tfrecord-*"))
jpegs = [
    tf.io.parse_single_example(record, feature_spec())[FEATURE_IMAGE]
    for record in tf.data.TFRecordDataset(shards).take(serve_chips)
]
served_chips = np.stack([to_model_input(preprocess(jpeg, size)).numpy() for jpeg in jpegs])
np.save(work / "served_chips.npy", served_chips)
set_precision("mixed_bfloat16")  # train.precision's default: export must serve it in float32
keras.utils.set_random_seed(0)
for version, architecture in enumerate(architectures, 1):
    model = compile_model(build_model(size, architecture), learning_rate=0.001)
    model.run_eagerly = True
    before = [w.copy() for w in model.get_weights()]
    model.train_on_batch(chips, labels)
    assert any((a != b).any() for a, b in zip(before, model.get_weights())), architecture
    (work / architecture).mkdir()
    save_model_atomic(model, work / architecture / "model.keras")
    inference = for_inference(model)
    outputs = {head: np.asarray(values) for head, values in inference(served_chips).items()}
    np.savez(work / architecture / "served_chips_outputs.npz", **outputs)
    warmup = warmup_from_split(inference, records / "test")  # as the export stage ships it
    version_dir = work / "models/Backbones" / str(version)
    export_saved_model(inference, version_dir, label_map(), thresholds, warmup=warmup)
"""
SERVE_CHIPS = 3


@pytest.fixture(scope="module")
def exported_architectures(tiny_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every architecture trained one step on the tiny shards in mixed_bfloat16, saved as
    ``<work>/<architecture>/model.keras`` and exported as version N of model ``Backbones``,
    N in ARCHITECTURES' order; its float32 answers to the first SERVE_CHIPS test chips
    (``<work>/served_chips.npy``) in ``<work>/<architecture>/served_chips_outputs.npz``."""
    work = tmp_path_factory.mktemp("architectures")
    records = tiny_pipeline / "data/tfrecords"
    run_python(TRAIN_AND_EXPORT, records, work, SIZE, SERVE_CHIPS, *ARCHITECTURES, cwd=ROOT)
    return work


@pytest.mark.slow
@pytest.mark.parametrize(  # the article's: the tiny pipeline's smoke_check stage
    "architecture",
    BACKBONES,
)
def test_every_backbone_exports_and_passes_the_smoke_check(
    architecture, exported_architectures, tiny_pipeline
):
    from amazonia.export.smoke import run_smoke_check

    version = ARCHITECTURES.index(architecture) + 1
    report = run_smoke_check(
        exported_architectures / "models/Backbones" / str(version),
        keras_model=exported_architectures / architecture / "model.keras",
        test_split=tiny_pipeline / "data/tfrecords/test",
    )
    assert report.passed, report.to_json()
    assert {c["name"] for c in report.to_json()["checks"]} >= {"saved_model_cli run", "saved model vs keras"}


@pytest.mark.slow
def test_amazonia_serve_answers_every_architecture_through_both_signatures(
    exported_architectures, tiny_pipeline, tmp_path
):
    import tensorflow as tf

    from amazonia.data.records.schema import FEATURE_IMAGE, feature_spec

    shards = sorted(str(p) for p in (tiny_pipeline / "data/tfrecords/test").glob("*.tfrecord-*"))
    jpegs = [
        tf.io.parse_single_example(record, feature_spec())[FEATURE_IMAGE].numpy()
        for record in tf.data.TFRecordDataset(shards).take(SERVE_CHIPS)
    ]
    # The fixture's pixels of these files, which the Keras models answered there: that
    # serving_bytes, given the files, answers the same ties the two together.
    chips = np.load(exported_architectures / "served_chips.npy")
    float_body = {"instances": chips.tolist()}
    bytes_body = {
        "signature_name": "serving_bytes",
        "instances": [{"b64": base64.b64encode(jpeg).decode("ascii")} for jpeg in jpegs],
    }
    versions = [str(v) for v in range(1, len(ARCHITECTURES) + 1)]
    base = exported_architectures / "models/Backbones"
    for _, port in serve_models(base, tmp_path / "serve.log", "Backbones", "--poll-seconds", "0.3"):
        url = f"http://127.0.0.1:{port}/v1/models/Backbones"
        status = requests.get(url, timeout=30).json()["model_version_status"]
        assert sorted(s["version"] for s in status if s["state"] == "AVAILABLE") == sorted(versions)
        for version, architecture in zip(versions, ARCHITECTURES):
            expected = np.load(exported_architectures / architecture / "served_chips_outputs.npz")
            for body in (float_body, bytes_body):
                response = requests.post(f"{url}/versions/{version}:predict", json=body, timeout=120)
                assert response.status_code == 200, (architecture, response.text)
                predictions = response.json()["predictions"]
                for head in ("weather", "ground"):
                    np.testing.assert_allclose(
                        [p[head] for p in predictions],
                        np.asarray(expected[head]),
                        atol=TOLERANCE,
                        err_msg=f"{architecture} {body.get('signature_name', 'serving_default')} {head}",
                    )


# --- Pretrained weights as a tracked input: dvc import-url, dvc repro ------------------------


def trained_backbone(repo: Path) -> list[np.ndarray]:
    from amazonia.model.architectures import backbone_of, load_model

    return backbone_of(load_model(repo / "models/model.keras")).get_weights()


def same_arrays(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.slow
def test_imported_weights_are_what_train_starts_from_and_new_bytes_make_it_stale(
    pipeline_copy, s3_endpoint, tmp_path
):
    """``dvc import-url`` from a local path and from S3 puts the file where train reads it;
    after an epoch of warm-up (backbone frozen) the model's backbone holds exactly the
    file's weights; other bytes make train stale; a clone pulls the file from the team's
    remote with its source gone."""
    import boto3

    repo = pipeline_copy
    name = pretrained.WEIGHTS[LIGHTEST].name
    set_params(
        repo, {"train": {"architecture": LIGHTEST, "weights": "imagenet", "epochs": 1, "warmup_epochs": 1}}
    )
    run(["git", "commit", "-qam", "pretrained mobilenet"], repo)

    # No file yet: one line naming the command, before anything is written.
    result = run([DVC, "repro", "train"], repo, check=False)
    assert result.returncode != 0
    line = f"dvc import-url {pretrained.WEIGHTS[LIGHTEST].url} models/pretrained/"
    assert line in result.stderr and "Traceback" not in result.stderr

    # (a) From a local path.
    local = tmp_path / "source" / name
    first = write_keras_weights(LIGHTEST, local, seed=1)
    run([DVC, "import-url", str(local), "models/pretrained/"], repo)
    assert ran_stages(run([DVC, "repro", "train"], repo).stdout) == {"train"}
    assert same_arrays(trained_backbone(repo), first)
    assert same_arrays(read_keras_weights(repo / "models/pretrained" / name), first)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "weights from a local path"], repo)
    assert ran_stages(run([DVC, "repro", "train"], repo).stdout) == set()  # frozen: nothing fetched

    # (b) Other bytes, from an S3-compatible endpoint (credentials in the environment only).
    s3_env = {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    second = write_keras_weights(LIGHTEST, tmp_path / "s3" / name, seed=2)
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=S3_ACCESS_KEY_ID,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    )
    s3.upload_file(str(tmp_path / "s3" / name), S3_BUCKET, f"keras/{name}")
    run(
        [DVC, "import-url", "--force", "--fs-config", f"endpointurl={s3_endpoint}", "--",
         f"s3://{S3_BUCKET}/keras/{name}", "models/pretrained/"],
        repo,
        env_extra=s3_env,
    )  # fmt: skip
    assert S3_SECRET not in (repo / "models/pretrained" / f"{name}.dvc").read_text()
    # Train reads the file as (a) showed; that it reruns on other bytes is DVC's to say.
    status = run([DVC, "status", "train"], repo).stdout
    changed = ["train:", "\tchanged deps:", "\t\tmodified:           models/pretrained"]
    assert status.splitlines()[:3] == changed, status
    assert same_arrays(read_keras_weights(repo / "models/pretrained" / name), second)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "weights from S3"], repo)

    # A clone gets the same bytes from the team's remote, never from the source.
    run([DVC, "push", f"models/pretrained/{name}.dvc"], repo)
    s3.delete_object(Bucket=S3_BUCKET, Key=f"keras/{name}")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    run([DVC, "pull", f"models/pretrained/{name}.dvc"], clone)
    assert (clone / "models/pretrained" / name).read_bytes() == (
        repo / "models/pretrained" / name
    ).read_bytes()
    assert json.loads((repo / "metrics/train/metrics.json").read_text())["step"] == 0
