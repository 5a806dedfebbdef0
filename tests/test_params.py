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
    assert params.serialize.shard_mb == 16
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
