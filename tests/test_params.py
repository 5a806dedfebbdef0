import re

import numpy as np
import pytest
import yaml

from amazonia.common.params import MAX_SEED, MAX_VERSION, ParamsError, load_params
from amazonia.data.synthetic.generate import render_jpeg, sample_tag_sets
from tests.conftest import BIN, ROOT, run, set_params


def write(tmp_path, params):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_the_projects_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.serialize.shard_mb == 16
    assert params.train.image_size == 128 and params.train.architecture == "article"
    assert params.data.source == "synthetic"


@pytest.mark.parametrize(
    "params, message",
    [
        ({"serialize": {"image_sise": 64}}, r"serialize.image_sise: unknown key"),
        ({"serialize": {"shard_mb": "big"}}, r"serialize.shard_mb: Input should be a valid number"),
        (
            {"serialize": {"shard_mb": -5}},
            r"serialize.shard_mb: Input should be greater than 0 \(got -5\)",
        ),
        ({"split": {"val": 0.5, "test": 0.5}}, r"split: split.val \+ split.test must be < 1"),
        ({"data": {"source": "s3"}}, r"data.source: Input should be 'synthetic' or 'kaggle'"),
        (
            {"labels": {"missing_weather": "ignore"}},
            r"labels.missing_weather: Input should be 'drop' or 'error'",
        ),
        ({"serialize": {"on_bad_image": "retry"}}, r"serialize.on_bad_image"),
        ({"runtime": {"workers": -1}}, r"runtime.workers: Input should be greater than or equal to 0"),
        # runtime settings live in their own section, which no stage declares as a param
        ({"serialize": {"workers": 2}}, r"serialize.workers: unknown key"),
        ({"split": {"val": 0.0}}, r"split: split.val is 0, which leaves the val split empty"),
        ({"split": {"test": 0.0}}, r"split: split.test is 0, which leaves the test split empty"),
        ({"datum": {}}, r"datum: unknown key"),
        ({"serialize": {"runner": "spark"}}, r"serialize.runner: Input should be 'local' or 'beam'"),
        (
            {"serialize": {"beam_options": ["--runner", "DataflowRunner"]}},
            r"serialize.beam_options: 'DataflowRunner' is not a pipeline flag; write each as one list item",
        ),
        (
            {"train": {"architecture": "vgg16"}},
            r"train.architecture: Input should be 'article', 'mobilenet_v3_small', 'efficientnet_v2_b0', "
            r"'resnet50' or 'convnext_tiny'",
        ),
        (
            {"train": {"weights": "imagenet"}},  # the default architecture is the article's
            r"train: train.weights: imagenet needs a pretrained backbone, and train.architecture: article "
            r"has none; set train.weights: none, or train.architecture to one of mobilenet_v3_small, ",
        ),
        (
            {"train": {"architecture": "convnext_tiny", "image_size": 31}},
            r"train: train.image_size: 31 is below 32, the smallest input train.architecture: convnext_tiny "
            r"takes; set train.image_size >= 32",
        ),
        (
            {"train": {"image_size": 3}},  # two 2x2 max-pools of 3 px leave nothing
            r"train: train.image_size: 3 is below 4, the smallest input train.architecture: article takes",
        ),
        (
            {"train": {"architecture": "resnet50", "weights": "imagenet", "epochs": 3, "warmup_epochs": 4}},
            r"train: train.warmup_epochs \(4\) is more than train.epochs \(3\); set it to at most",
        ),
        (
            {"data": {"seed": -1}},
            r"data.seed: Input should be greater than or equal to 0 \(got -1\); "
            r"accepted: 0 <= seed <= 4294967295",
        ),
        ({"data": {"seed": 2**32}}, r"data.seed: .* \(got 4294967296\); accepted: 0 <= seed <= 4294967295"),
        ({"train": {"seed": -1}}, r"train.seed: .* \(got -1\); accepted: 0 <= seed <= 4294967295"),
        ({"train": {"seed": 2**32}}, r"train.seed: .* \(got 4294967296\); accepted: 0 <= seed <= 4294967295"),
        (
            {"serialize": {"shard_mb": float("inf")}},
            r"serialize.shard_mb: Input should be a finite number \(got inf\); "
            r"accepted: 0 < shard_mb <= 1024",
        ),
        ({"serialize": {"shard_mb": float("nan")}}, r"serialize.shard_mb: Input should be a finite number"),
        (
            {"serialize": {"shard_mb": 4096}},
            r"serialize.shard_mb: .* \(got 4096\); accepted: 0 < shard_mb <= 1024",
        ),
        ({"train": {"learning_rate": float("inf")}}, r"train.learning_rate: Input should be a finite number"),
        (
            {"export": {"version": 2**63}},
            r"export.version: .* \(got 9223372036854775808\); accepted: 0 < version <= 9223372036854775807",
        ),
        (
            {"data": {"kaggle_dir": ""}},
            r"data.kaggle_dir: data.kaggle_dir is empty, which would name the project",
        ),
        ({"data": {"kaggle_dir": "  "}}, r"data.kaggle_dir: data.kaggle_dir is empty"),
        ({"data": {"on_unsafe_chip": "follow"}}, r"data.on_unsafe_chip: Input should be 'error' or 'skip'"),
    ],
)
def test_bad_params_name_the_key(tmp_path, params, message):
    with pytest.raises(ParamsError, match=message):
        load_params(write(tmp_path, params))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "params.yaml").write_text("data: [1, 2\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_the_ends_of_each_range_are_accepted(tmp_path):
    params = load_params(
        write(
            tmp_path,
            {
                "data": {"seed": MAX_SEED},
                "train": {"seed": 0},
                "serialize": {"shard_mb": 1024},
                "export": {"version": MAX_VERSION},
            },
        )
    )
    assert (params.data.seed, params.train.seed, params.export.version) == (2**32 - 1, 0, 2**63 - 1)


@pytest.mark.parametrize("seed", [0, MAX_SEED])
def test_every_seed_params_accept_is_one_the_libraries_accept(seed):
    """What each seed reaches: keras.utils.set_random_seed (train.seed), numpy's Generator as
    the synthetic data draws tags and pixels (data.seed), tf.data's shuffle (train.seed)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    assert len(sample_tag_sets(3, seed)) == 3
    assert render_jpeg(0, ("clear", "primary"), seed)[:2] == b"\xff\xd8"
    assert sorted(tf.data.Dataset.range(4).shuffle(4, seed=seed).as_numpy_iterator()) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        keras.utils.set_random_seed(MAX_SEED + 1)  # the bound is the library's, not ours
    assert np.random.default_rng(seed).integers(10) < 10


DUPLICATES = {
    "a section": (
        "data:\n  seed: 1\ntrain:\n  seed: 2\ndata:\n  n_images: 5\n",
        "line 5: data is given twice (first on line 1)",
    ),
    "a key in a section": (
        "data:\n  seed: 1\n  n_images: 5\n  seed: 2\n",
        "line 4: data.seed is given twice (first on line 2)",
    ),
    "a key in a list item": (
        "serialize:\n  beam_options:\n    - {a: 1, a: 2}\n",
        "line 3: serialize.beam_options.0.a is given twice (first on line 3)",
    ),
    "a key spelled two ways": (
        "data:\n  seed: 1\n  'seed': 2\n",
        "line 3: data.seed is given twice (first on line 2)",
    ),
}


@pytest.mark.parametrize("text, message", DUPLICATES.values(), ids=DUPLICATES.keys())
def test_a_key_given_twice_is_refused_naming_it_and_both_lines(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value) == f"{path}, {message}; YAML would keep only the last: delete one"


def test_a_merge_key_may_be_overridden(tmp_path):
    """``<<: *anchor`` then a key of its own is how YAML overrides a default: not a duplicate."""
    path = tmp_path / "params.yaml"
    path.write_text("train: &train\n  seed: 1\n  epochs: 2\nserve:\n  port: 9000\n")
    assert load_params(path).train.seed == 1
    path.write_text("data:\n  <<: {seed: 1, n_images: 5}\n  seed: 3\n")
    assert load_params(path).data.seed == 3


@pytest.mark.slow
def test_params_that_would_crash_a_stage_stop_it_in_one_line(project):
    """Under a real ``dvc repro``; each value validated before, then crashed the stage
    that used it (numpy's and Keras's seeding, the shard planner) or meant nothing."""
    cases = [
        ({"data": {"seed": -1}}, "data.seed: Input should be greater than or equal to 0 (got -1)"),
        ({"train": {"seed": 2**32}}, "train.seed: Input should be less than or equal to 4294967295"),
        ({"serialize": {"shard_mb": float("inf")}}, "serialize.shard_mb: Input should be a finite number"),
        ({"export": {"version": 2**63}}, "export.version: Input should be less than or equal to"),
        ({"data": {"kaggle_dir": ""}}, "data.kaggle_dir: data.kaggle_dir is empty"),
    ]
    original = (project / "params.yaml").read_text()
    for updates, message in cases:
        (project / "params.yaml").write_text(original)
        set_params(project, updates)
        result = run([str(BIN / "dvc"), "repro"], project, check=False)
        assert result.returncode != 0, updates
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and message in errors[0], result.stderr
        assert "Traceback" not in result.stderr
        assert not (project / "data/raw").exists()


@pytest.mark.slow
def test_a_stage_run_by_hand_refuses_a_key_given_twice(project):
    """``dvc repro`` refuses a duplicated key itself (ruamel.yaml); the stages, run by
    hand or by ``amazonia serve``, must not quietly take the last."""
    path = project / "params.yaml"
    path.write_text(path.read_text().replace("data:\n", "data:\n  seed: 5\n", 1))
    result = run([str(BIN / "python"), "-m", "stages.ingest"], project, check=False)
    assert result.returncode == 1
    assert re.fullmatch(
        r"error: params.yaml, line \d+: data.seed is given twice \(first on line 2\); "
        r"YAML would keep only the last: delete one\n",
        result.stderr,
    ), result.stderr


def test_every_architecture_takes_its_smallest_input_size():
    from amazonia.common.params import ARCHITECTURES, MIN_IMAGE_SIZE, TrainParams

    for architecture in ARCHITECTURES:
        smallest = MIN_IMAGE_SIZE[architecture]
        assert TrainParams(architecture=architecture, image_size=smallest).image_size == smallest
    # Warm-up epochs count only with pretrained weights.
    assert TrainParams(epochs=2, warmup_epochs=5).warmup_epochs == 5
