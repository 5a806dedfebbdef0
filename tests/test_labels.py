import json
from collections import Counter
from pathlib import Path

import pytest

from amazonia.data.labels import (
    LabelError,
    LabelRow,
    assign_split,
    encode_tags,
    format_vector,
    labels_csv_text,
    parse_vector,
    read_split_rows,
    read_tags_csv,
)
from amazonia.data.vocabulary import ALL_LABELS, LABELS_GROUND, LABELS_WEATHER
from tests.conftest import csv_rows

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
    encoded = {row.image_name: row for row in encode_tags(table, val=0.1, test=0.1).table}
    expected = {row["image_name"]: row for row in csv_rows(reference / "KagglePlanetMCML.csv")}
    assert len(encoded) == len(table) == 1001
    for name, row in encoded.items():
        assert row.weather_labels == expected[name]["weather_labels"], name
        assert row.ground_labels == expected[name]["ground_labels"], name


def test_encoding_matches_the_articles_on_the_hand_written_sample():
    table = read_tags_csv(SAMPLE_TAGS)
    encoded = encode_tags(table, val=0.1, test=0.1, source=str(SAMPLE_TAGS))
    got = [
        {"image_name": r.image_name, "weather_labels": r.weather_labels, "ground_labels": r.ground_labels}
        for r in encoded.table
    ]
    assert got == csv_rows(SAMPLE_ENCODED)
    assert encoded.dropped == [{"image_name": "handmade_50", "reason": "no weather tag"}]


def test_the_hand_written_sample_covers_every_tag():
    tags = {tag for row in read_tags_csv(SAMPLE_TAGS) for tag in row.tags.split()}
    assert tags == set(ALL_LABELS)
    assert len(csv_rows(SAMPLE_TAGS)) <= 100


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
    counts = Counter(after.values())
    assert counts["test"] / len(after) == pytest.approx(0.2, abs=0.02)
    assert counts["val"] / len(after) == pytest.approx(0.1, abs=0.02)


# Enough rows for every split to get some (encode_tags refuses an empty split).
CLEAR_ROWS = "".join(f"train_{i},clear primary\n" for i in range(60))


def test_missing_weather_is_dropped_and_counted(tmp_path):
    encoded = encode_text(tmp_path, f"image_name,tags\n{CLEAR_ROWS}train_24448,water\n")
    assert [row.image_name for row in encoded.table] == [f"train_{i}" for i in range(60)]
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
    labels_csv.write_text(labels_csv_text(encoded.table))
    rows = read_split_rows(labels_csv, "val")
    assert len(rows) > 0 and {row.split for row in rows} == {"val"}
    assert rows == [row for row in encoded.table if row.split == "val"]

    with pytest.raises(LabelError, match=r"nowhere.csv: not found; run 'dvc repro encode_labels' first"):
        read_split_rows(tmp_path / "nowhere.csv", "val")
    labels_csv.write_text("image_name,split\ntrain_0,val\n")
    with pytest.raises(
        LabelError, match=r"labels.csv: missing column\(s\) weather_labels, ground_labels; rerun"
    ):
        read_split_rows(labels_csv, "val")
    labels_csv.write_text(labels_csv_text(encoded.table) + "train_99,val\n")
    with pytest.raises(
        LabelError, match=rf"labels.csv, row {len(encoded.table) + 2}: 2 field\(s\), expected 4; rerun"
    ):
        read_split_rows(labels_csv, "val")


# Names a CSV reader could take for a number or a missing value, and names that need quoting.
AWKWARD = [
    LabelRow("NA", "[1, 0, 0, 0]", "[0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]", "val"),
    LabelRow("007", "[0, 1, 0, 0]", "[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]", "val"),
    LabelRow('a,"b"', "[0, 0, 1, 0]", "", "val"),
    LabelRow("nan", "[0, 0, 0, 1]", "[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]", "train"),
]


def test_labels_csv_is_written_in_one_fixed_format():
    """Its bytes are DVC's cache key for every serialize stage: a change of quoting or line
    ending would rewrite all the shards."""
    assert labels_csv_text(AWKWARD[2:]) == (
        "image_name,weather_labels,ground_labels,split\n"
        '"a,""b""","[0, 0, 1, 0]",,val\n'
        'nan,"[0, 0, 0, 1]","[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]",train\n'
    )


def test_split_rows_keep_every_field_as_written(tmp_path):
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text(labels_csv_text(AWKWARD))
    assert read_split_rows(labels_csv, "val") == AWKWARD[:3]
    assert read_split_rows(labels_csv, "train") == AWKWARD[3:]


@pytest.mark.parametrize("text", ["", "[0, 1", "[0, 1, 0, 2]", "[0, 1, 0]", '"0100"'])
def test_a_label_vector_that_is_not_one_is_named(text):
    with pytest.raises(LabelError) as caught:
        parse_vector(text, 4)
    assert str(caught.value) == f"not a 4-long 0/1 label vector: {text!r}"
