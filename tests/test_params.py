import pytest
import yaml

from amazonia.common.params import ParamsError, load_params
from tests.conftest import ROOT


def write(tmp_path, params):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_the_projects_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.serialize.image_size == params.train.image_size == 128
    assert params.data.source == "synthetic"


@pytest.mark.parametrize(
    "params, message",
    [
        ({"serialize": {"image_sise": 64}}, r"serialize.image_sise: unknown key"),
        ({"serialize": {"image_size": "big"}}, r"serialize.image_size: Input should be a valid integer"),
        (
            {"serialize": {"image_size": -5}},
            r"serialize.image_size: Input should be greater than 0 \(got -5\)",
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


def test_every_architecture_takes_its_smallest_input_size():
    from amazonia.common.params import ARCHITECTURES, MIN_IMAGE_SIZE, TrainParams

    for architecture in ARCHITECTURES:
        smallest = MIN_IMAGE_SIZE[architecture]
        assert TrainParams(architecture=architecture, image_size=smallest).image_size == smallest
    # Warm-up epochs count only with pretrained weights.
    assert TrainParams(epochs=2, warmup_epochs=5).warmup_epochs == 5
