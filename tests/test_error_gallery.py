"""The error gallery (amazonia/model/error_gallery.py): which chips it picks and how it
captions them, on made-up predictions; then on the tiny run: the chips' captions carry
the tags Kaggle's CSV gives those chips, and evaluate writes the same bytes twice."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER
from amazonia.model import error_gallery
from amazonia.model.error_gallery import GalleryChip, Mistake
from tests.conftest import BIN, run_python

DVC = str(BIN / "dvc")


def weather(**probs: float) -> list[float]:
    return [probs.get(name, 0.0) for name in LABELS_WEATHER]


def ground(**probs: float) -> list[float]:
    return [probs.get(name, 0.0) for name in LABELS_GROUND]


# Four chips, record order. 0: road seen where there is none. 1: haze read as clear, water
# missed. 2: all right. 3: agriculture missed, cultivation seen.
WEATHER_TRUE = np.array([weather(clear=1), weather(haze=1), weather(clear=1), weather(partly_cloudy=1)])
GROUND_TRUE = np.array(
    [
        ground(primary=1),
        ground(primary=1, water=1),
        ground(primary=1),
        ground(agriculture=1),
    ]
)
WEATHER_PROB = np.array(
    [weather(clear=0.9), weather(clear=0.7, haze=0.2), weather(clear=0.8), weather(partly_cloudy=0.6)],
    dtype=np.float32,
)
GROUND_PROB = np.array(
    [
        ground(primary=0.95, road=0.8),
        ground(primary=0.9, water=0.05),
        ground(primary=0.9),
        ground(agriculture=0.1, cultivation=0.6),
    ],
    dtype=np.float32,
)
THRESHOLDS = np.array([{"road": 0.3, "water": 0.4}.get(name, 0.5) for name in LABELS_GROUND])


def select(size: int) -> list[GalleryChip]:
    return error_gallery.select_chips(WEATHER_TRUE, GROUND_TRUE, WEATHER_PROB, GROUND_PROB, THRESHOLDS, size)


def test_half_the_places_go_to_false_positives_half_to_false_negatives() -> None:
    # By their most confident mistake: false positives 0 (road .80), 1 (clear .70), 3 (cultivation .60);
    # false negatives 1 (water, 1 - .05), 3 (agriculture, 1 - .10). Chip 2 has none.
    assert [(c.index, c.false_positive) for c in select(2)] == [(0, True), (1, False)]
    assert [(c.index, c.false_positive) for c in select(4)] == [(0, True), (1, True), (3, False)]
    assert [c.index for c in select(16)] == [0, 1, 3]
    assert select(16) == select(16)


def test_captions_show_true_and_predicted_tags_and_what_decided_them() -> None:
    chips = {c.index: c for c in select(4)}
    assert chips[1].caption("train_7") == [
        "train_7",
        "FP clear p 0.70 (top weather)",  # the kind it was picked for comes first
        "FN water p 0.05 < t 0.40",
        "FN haze p 0.20 (not top weather)",
        "true: haze primary water",
        "predicted: clear primary",
    ]
    assert chips[0].caption("train_3") == [
        "train_3",
        "FP road p 0.80 >= t 0.30",
        "true: clear primary",
        "predicted: clear primary road",
    ]
    assert chips[3].caption("train_9")[1:3] == [
        "FN agriculture p 0.10 < t 0.50",
        "FP cultivation p 0.60 >= t 0.50",
    ]


def test_ties_go_to_the_earlier_record_and_long_lists_are_cut() -> None:
    same = GROUND_PROB.copy()
    same[3] = ground(agriculture=0.1, cultivation=0.8)  # chip 3's false positive as confident as chip 0's
    chips = error_gallery.select_chips(WEATHER_TRUE, GROUND_TRUE, WEATHER_PROB, same, THRESHOLDS, 2)
    assert [(c.index, c.false_positive) for c in chips] == [(0, True), (1, False)]

    many = tuple(Mistake(name, 0.9, 0.5, True) for name in LABELS_GROUND[:5])
    chip = GalleryChip(0, True, ("clear",), ("clear", *LABELS_GROUND[:5]), many)
    assert chip.caption("x")[1:5] == [*(m.describe() for m in many[:3]), "... 2 more"]


def tiles(chips: list[GalleryChip], size_px: int) -> list[tuple[GalleryChip, str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        (chip, f"train_{chip.index}", rng.integers(0, 256, (size_px, size_px, 3), dtype=np.uint8))
        for chip in chips
    ]


def test_the_gallery_frames_each_chip_in_its_kind_colour() -> None:
    chips = select(4)
    png = error_gallery.render_gallery(tiles(chips, 32))
    image = Image.open(io.BytesIO(png))
    tile_w = 2 * error_gallery.FRAME_PX + error_gallery.CHIP_PX + error_gallery.GAP_PX + error_gallery.TEXT_PX
    assert image.size == (
        error_gallery.GAP_PX + 3 * (tile_w + error_gallery.GAP_PX),
        error_gallery.HEADER_PX
        + 2 * error_gallery.GAP_PX
        + 2 * error_gallery.FRAME_PX
        + error_gallery.CHIP_PX,
    )
    top = error_gallery.HEADER_PX + error_gallery.GAP_PX
    frames = [
        image.getpixel((error_gallery.GAP_PX + n * (tile_w + error_gallery.GAP_PX), top)) for n in range(3)
    ]
    red, blue = error_gallery.FALSE_POSITIVE_RGB, error_gallery.FALSE_NEGATIVE_RGB
    assert frames == [red, red, blue]
    # A 32 px chip is drawn 4x, pixel for pixel.
    chip_pixel = tiles(chips, 32)[0][2][0, 0]
    corner = (error_gallery.GAP_PX + error_gallery.FRAME_PX + 3, top + error_gallery.FRAME_PX + 3)
    assert image.getpixel(corner) == tuple(chip_pixel)


def test_no_mistakes_gives_a_banner_not_an_error() -> None:
    image = Image.open(io.BytesIO(error_gallery.render_gallery([])))
    assert image.size[1] == error_gallery.HEADER_PX + error_gallery.GAP_PX


RENDER = """
import hashlib
from tests.test_error_gallery import select, tiles
from amazonia.model import error_gallery
print(hashlib.sha256(error_gallery.render_gallery(tiles(select(4), 128))).hexdigest())
"""


@pytest.mark.slow
def test_the_same_chips_give_the_same_bytes_in_any_process() -> None:
    root = Path(__file__).resolve().parents[1]
    outputs = {run_python(RENDER, cwd=root, PYTHONHASHSEED=seed).stdout for seed in ("1", "2")}
    assert len(outputs) == 1


# --- on the tiny run --------------------------------------------------------------------------


@pytest.mark.slow
def test_gallery_chips_carry_the_tags_kaggles_csv_gives_them(tiny_pipeline: Path) -> None:
    """The chips of the tiny run's gallery, named by the test records, have as true tags
    exactly what data/raw/train_v2.csv says, and metrics/eval/errors.png is their rendering."""
    from amazonia.model import evaluation
    from amazonia.model.network import load_for_inference

    repo = tiny_pipeline
    model = load_for_inference(repo / "models/model.keras")  # float32, as evaluate runs it
    test = evaluation.predict_split(model, repo / "data/tfrecords/test")
    tuned = json.loads((repo / "models/thresholds.json").read_text())["ground"]
    thresholds = np.array([tuned[name] for name in LABELS_GROUND])
    chips = error_gallery.select_chips(*test, thresholds)
    assert chips, "the tiny model should get some test chip wrong"
    found = evaluation.chips_at(repo / "data/tfrecords/test", [c.index for c in chips])

    with (repo / "data/raw/train_v2.csv").open(newline="") as handle:
        kaggle = {row["image_name"]: set(row["tags"].split()) for row in csv.DictReader(handle)}
    for chip in chips:
        name, image = found[chip.index]
        assert set(chip.true_tags) == kaggle[name], name
        assert set(chip.true_tags) != set(chip.predicted_tags), name
        # The stored file, decoded whole: the gallery scales it to its tiles.
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8

    rendered = error_gallery.render_gallery([(c, *found[c.index]) for c in chips])
    assert (repo / "metrics/eval/errors.png").read_bytes() == rendered
