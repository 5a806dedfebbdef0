import json
from pathlib import Path

import pandas as pd
import pytest

from amazonia.data.labels import (
    LabelError,
    assign_split,
    encode_tags,
    format_vector,
    read_split_rows,
    read_tags_csv,
)
from amazonia.data.vocabulary import ALL_LABELS, LABELS_GROUND, LABELS_WEATHER

# Hand-written rows in train_v2.csv's layout and the article's encoding of each
# (tests/fixtures/README.md says how they were made and what they cover).
FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE_TAGS = FIXTURES / "kaggle_tags_sample.csv"
SAMPLE_ENCODED = FIXTURES / "kaggle_tags_sample_encoded.csv"


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train_v2.csv"
    path.write_text(text)
    return path


def encode_text(tmp_path: Path, text: str, **kwargs):
    path = write_csv(tmp_path, text)
    return encode_tags(read_tags_csv(path), val=0.1, test=0.1, source=str(path), **kwargs)


def test_encoding_matches_the_articles_rows(reference):
    table = read_tags_csv(reference / "train_v2_head.csv")
    encoded = encode_tags(table, val=0.1, test=0.1).table.set_index("image_name")
    expected = pd.read_csv(reference / "KagglePlanetMCML.csv", dtype=str).set_index("image_name")
    assert len(encoded) == len(table) == 1001
    for name, row in encoded.iterrows():
        assert row["weather_labels"] == expected.loc[name, "weather_labels"], name
        assert row["ground_labels"] == expected.loc[name, "ground_labels"], name


def test_encoding_matches_the_articles_on_the_hand_written_sample():
    table = read_tags_csv(SAMPLE_TAGS)
    encoded = encode_tags(table, val=0.1, test=0.1, source=str(SAMPLE_TAGS))
    expected = pd.read_csv(SAMPLE_ENCODED, dtype=str, keep_default_na=False)
    got = encoded.table[["image_name", "weather_labels", "ground_labels"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)
    assert encoded.dropped == [{"image_name": "handmade_50", "reason": "no weather tag"}]


def test_the_hand_written_sample_covers_every_tag():
    tags = {tag for text in read_tags_csv(SAMPLE_TAGS)["tags"] for tag in text.split()}
    assert tags == set(ALL_LABELS)
    assert len(pd.read_csv(SAMPLE_TAGS)) <= 100


def test_vocabulary_is_alphabetical_as_in_the_article():
    assert list(LABELS_WEATHER) == sorted(LABELS_WEATHER)
    assert list(LABELS_GROUND) == sorted(LABELS_GROUND)
    assert format_vector([0, 0, 1, 0]) == "[0, 0, 1, 0]"


def test_split_is_stable_when_images_are_added():
    names = [f"train_{i}" for i in range(3000)]
    before = {n: assign_split(n, 0.1, 0.2) for n in names}
    more = names + [f"file_{i}" for i in range(3000)]
    after = {n: assign_split(n, 0.1, 0.2) for n in more}
    assert all(after[n] == before[n] for n in names)
    shares = pd.Series(list(after.values())).value_counts(normalize=True)
    assert shares["test"] == pytest.approx(0.2, abs=0.02)
    assert shares["val"] == pytest.approx(0.1, abs=0.02)


# Enough rows for every split to get some (encode_tags refuses an empty split).
CLEAR_ROWS = "".join(f"train_{i},clear primary\n" for i in range(60))


def test_missing_weather_is_dropped_and_counted(tmp_path):
    encoded = encode_text(tmp_path, f"image_name,tags\n{CLEAR_ROWS}train_24448,water\n")
    assert list(encoded.table["image_name"]) == [f"train_{i}" for i in range(60)]
    assert encoded.dropped == [{"image_name": "train_24448", "reason": "no weather tag"}]


def test_missing_weather_error_names_the_row(tmp_path):
    with pytest.raises(LabelError, match=r"row 62 \(train_24448\).*labels.missing_weather"):
        encode_text(tmp_path, f"image_name,tags\n{CLEAR_ROWS}train_24448,water\n", missing_weather="error")


def test_an_empty_split_is_refused_naming_the_param(tmp_path):
    with pytest.raises(
        LabelError,
        match=r"train_v2.csv: 2 encoded row\(s\) leave no examples in split\(s\) .*split\.val = 0\.1",
    ):
        encode_text(tmp_path, "image_name,tags\ntrain_0,clear primary\ntrain_1,haze\n")
    with pytest.raises(LabelError, match=r"all 1 row\(s\) were dropped for having no weather tag"):
        encode_text(tmp_path, "image_name,tags\ntrain_24448,water\n")


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "image_name,tags\ntrain_0,clear primary\ntrain_1,clear jungle\n",
            r"row 3 \(train_1\): unknown tag\(s\) jungle",
        ),
        (
            "image_name,tags\ntrain_0,clear haze primary\n",
            r"row 2 \(train_0\): two weather tags \(clear, haze\)",
        ),
        (
            "image_name,tags\ntrain_0,clear\ntrain_1,haze\ntrain_0,cloudy\n",
            r"row 4: duplicate image_name 'train_0' \(first seen at row 2\)",
        ),
        ("image_name,labels\ntrain_0,clear\n", r"missing column\(s\) tags"),
        ("", r"the CSV is empty"),
        ("image_name,tags\n", r"has a header but no rows"),
    ],
    ids=["unknown-tag", "two-weather", "duplicate", "missing-column", "empty", "header-only"],
)
def test_bad_tag_files_are_rejected_naming_the_row(tmp_path, text, message):
    with pytest.raises(LabelError, match=message) as info:
        encode_text(tmp_path, text)
    assert "train_v2.csv" in str(info.value)


def test_label_map_lists_the_vocabulary():
    from amazonia.data.labels import label_map

    data = json.loads(json.dumps(label_map()))
    assert data["weather"] == list(LABELS_WEATHER) and data["ground"] == list(LABELS_GROUND)


def test_split_rows_come_from_labels_csv_and_a_bad_one_is_named(tmp_path):
    encoded = encode_text(tmp_path, f"image_name,tags\n{CLEAR_ROWS}")
    labels_csv = tmp_path / "labels.csv"
    encoded.table.to_csv(labels_csv, index=False)
    rows = read_split_rows(labels_csv, "val")
    assert len(rows) > 0 and set(rows["split"]) == {"val"}
    assert list(rows["image_name"]) == list(encoded.table[encoded.table["split"] == "val"]["image_name"])

    with pytest.raises(LabelError, match=r"nowhere.csv: not found; run 'dvc repro encode_labels' first"):
        read_split_rows(tmp_path / "nowhere.csv", "val")
    labels_csv.write_text("image_name,split\ntrain_0,val\n")
    with pytest.raises(
        LabelError, match=r"labels.csv: missing column\(s\) weather_labels, ground_labels; rerun"
    ):
        read_split_rows(labels_csv, "val")
