import hashlib
import io
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from amazonia.data.kaggle import image_path
from amazonia.data.labels import ALL_LABELS, LABELS_WEATHER, read_tags_csv
from amazonia.data.synthetic.generate import generate_dataset, render_jpeg, sample_tag_sets


def reference_frequencies(reference) -> dict[str, float]:
    table = pd.read_csv(reference / "KagglePlanetMCML.csv")
    weather = np.array([json.loads(v) for v in table["weather_labels"]])
    ground = np.array([json.loads(v) for v in table["ground_labels"]])
    return dict(zip(ALL_LABELS, np.concatenate([weather.mean(0), ground.mean(0)])))


def test_tag_frequencies_match_the_real_data(reference):
    tag_sets = sample_tag_sets(5000, seed=123)
    counts = Counter(t for tags in tag_sets for t in tags)
    expected = reference_frequencies(reference)
    for tag in ALL_LABELS:
        assert abs(counts[tag] / 5000 - expected[tag]) < 0.02, (tag, counts[tag] / 5000, expected[tag])


def test_tag_sets_are_well_formed_and_co_occur_as_in_real_data():
    tag_sets = sample_tag_sets(5000, seed=5)
    assert all(sum(t in LABELS_WEATHER for t in tags) == 1 for tags in tag_sets)
    assert all(tags == ("cloudy",) for tags in tag_sets if "cloudy" in tags)
    primary = sum("primary" in tags for tags in tag_sets) / 5000
    assert 0.90 < primary < 0.95

    def conditional(a, b):
        with_b = [tags for tags in tag_sets if b in tags]
        return sum(a in tags for tags in with_b) / len(with_b)

    assert conditional("road", "habitation") > 0.6 > sum("road" in t for t in tag_sets) / 5000
    assert conditional("road", "agriculture") > conditional("road", "primary")


def test_chips_are_deterministic_real_jpegs():
    tags = ("clear", "primary", "road", "water")
    first, again = render_jpeg(7, tags, seed=1), render_jpeg(7, tags, seed=1)
    assert first == again
    assert render_jpeg(7, tags, seed=2) != first
    image = Image.open(io.BytesIO(first))
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (256, 256))
    pixels = np.asarray(image).astype(float)
    assert pixels.std() > 5  # texture, not a solid colour


def test_generated_folder_is_kaggles_layout_and_independent_of_workers(tmp_path):
    generate_dataset(tmp_path / "a", 12, seed=9, workers=1)
    generate_dataset(tmp_path / "b", 12, seed=9, workers=2)
    table = read_tags_csv(tmp_path / "a" / "train_v2.csv")
    assert list(table.columns) == ["image_name", "tags"]
    assert list(table["image_name"]) == [f"train_{i}" for i in range(12)]
    for name in table["image_name"]:
        digest = [hashlib.sha256(image_path(tmp_path / d, name).read_bytes()).hexdigest() for d in "ab"]
        assert digest[0] == digest[1]
    assert (tmp_path / "a" / "train_v2.csv").read_text() == (tmp_path / "b" / "train_v2.csv").read_text()


@pytest.mark.parametrize("weather", LABELS_WEATHER)
def test_weather_leaves_visible_evidence(weather):
    """Cloud and haze brighten and flatten a chip; clear does not."""
    ground = () if weather == "cloudy" else ("primary",)
    stats = []
    for i in range(12):
        pixels = np.asarray(Image.open(io.BytesIO(render_jpeg(i, (weather, *ground), seed=0))), dtype=float)
        stats.append(pixels.mean())
    clear = [
        np.asarray(Image.open(io.BytesIO(render_jpeg(i, ("clear", "primary"), seed=0))), dtype=float).mean()
        for i in range(12)
    ]
    if weather == "clear":
        assert np.mean(stats) == pytest.approx(np.mean(clear))
    else:
        assert np.mean(stats) > np.mean(clear) + 10, weather
