import io
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from amazonia.data.kaggle import image_path
from amazonia.data.labels import read_tags_csv
from amazonia.data.synthetic.generate import generate_dataset, render_jpeg, sample_tag_sets
from amazonia.data.vocabulary import ALL_LABELS, LABELS_WEATHER
from tests.conftest import csv_rows, file_digests, run_python


def reference_frequencies(reference) -> dict[str, float]:
    table = csv_rows(reference / "KagglePlanetMCML.csv")
    weather = np.array([json.loads(row["weather_labels"]) for row in table])
    ground = np.array([json.loads(row["ground_labels"]) for row in table])
    return dict(zip(ALL_LABELS, np.concatenate([weather.mean(0), ground.mean(0)])))


@pytest.mark.slow
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


def test_generated_folder_is_kaggles_layout(tmp_path):
    tag_sets = generate_dataset(tmp_path, 12, seed=9, workers=1)
    assert (tmp_path / "train_v2.csv").read_text().splitlines()[0] == "image_name,tags"
    table = read_tags_csv(tmp_path / "train_v2.csv")
    names = [row.image_name for row in table]
    assert names == [f"train_{i}" for i in range(12)]
    assert [tuple(row.tags.split()) for row in table] == tag_sets
    for i, (name, tags) in enumerate(zip(names, tag_sets)):
        assert image_path(tmp_path, name).read_bytes() == render_jpeg(i, tags, seed=9)
    assert {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jpg")} == {
        image_path(tmp_path, n).relative_to(tmp_path).as_posix() for n in names
    }


GENERATE = """
import sys

from amazonia.data.synthetic.generate import generate_dataset

generate_dataset(sys.argv[1], int(sys.argv[2]), seed=9, workers=int(sys.argv[3]))
"""


@pytest.mark.slow
def test_generated_folder_is_the_same_bytes_whatever_the_process_hash_seed_and_workers(tmp_path):
    """The ingest stage's output is cached by content: chips and train_v2.csv must not
    depend on the process (hash seed) or on how chips are spread over workers."""
    n = 70  # the pool hands out chunks of 32 chips: three chunks for two workers
    for name, hash_seed, workers in (("a", "1", 1), ("b", "2", 2)):
        run_python(GENERATE, tmp_path / name, n, workers, cwd=tmp_path, PYTHONHASHSEED=hash_seed)
    first, second = file_digests(tmp_path / "a"), file_digests(tmp_path / "b")
    assert len(first) == n + 1  # the chips and train_v2.csv
    assert first == second


def weather_stats(weather: str) -> tuple[float, float]:
    """Mean brightness and mean contrast (pixel standard deviation) of 12 chips."""
    ground = () if weather == "cloudy" else ("primary",)
    chips = [
        np.asarray(Image.open(io.BytesIO(render_jpeg(i, (weather, *ground), seed=0))), dtype=float)
        for i in range(12)
    ]
    return float(np.mean([c.mean() for c in chips])), float(np.mean([c.std() for c in chips]))


@pytest.mark.parametrize("weather", LABELS_WEATHER)
def test_weather_leaves_visible_evidence(weather):
    """Haze and overcast brighten and flatten a chip, scattered clouds brighten it and make
    it patchy; clear does neither, so it is darker than every other weather."""
    brightness, contrast = weather_stats(weather)
    if weather == "clear":
        others = {w: weather_stats(w)[0] for w in LABELS_WEATHER if w != "clear"}
        assert all(brightness < b - 10 for b in others.values()), (brightness, others)
        return
    clear_brightness, clear_contrast = weather_stats("clear")
    assert brightness > clear_brightness + 10, (weather, brightness, clear_brightness)
    if weather == "partly_cloudy":
        assert contrast > 2 * clear_contrast, (weather, contrast, clear_contrast)
    else:
        assert contrast < clear_contrast - 3, (weather, contrast, clear_contrast)
