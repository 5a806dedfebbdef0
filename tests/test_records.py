"""write_split + the Example schema + manifest checks, on real chips and real TFRecords."""

import io
import json
import shutil
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from amazonia.data.kaggle import image_path
from amazonia.data.labels import encode_tags, read_tags_csv
from amazonia.data.records.images import BadImageError, check_image
from amazonia.data.records.manifest import RecordsError, check_manifest
from amazonia.data.records.naming import MANIFEST_FILE
from amazonia.data.records.schema import (
    FEATURE_GROUND,
    FEATURE_IMAGE,
    FEATURE_NAME,
    FEATURE_WEATHER,
    feature_spec,
)
from amazonia.data.records.writer import write_split
from amazonia.data.synthetic.generate import generate_dataset
from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER
from tests.conftest import file_digests, run_python
from tests.image_corpus import chip, encode

N_CHIPS = 140


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    generate_dataset(root, N_CHIPS, seed=3, workers=1)
    return root


def labelled(raw):
    """Every row of ``raw``, encoded (write_split ignores the split column)."""
    return encode_tags(read_tags_csv(raw / "train_v2.csv"), val=0.2, test=0.2).table


def corrupt_some(raw, tmp_path):
    """A copy of ``raw`` with one chip of each awkward kind: three other modes and formats
    (stored as they are), a truncated one and one that is no image (skipped)."""
    root = tmp_path / "raw"
    shutil.copytree(raw, root)

    def save(name, mode, fmt):
        image = Image.open(image_path(raw, name)).convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        image_path(root, name).write_bytes(buffer.getvalue())

    save("train_1", "L", "JPEG")
    save("train_2", "RGBA", "PNG")
    save("train_3", "CMYK", "JPEG")
    data = image_path(raw, "train_4").read_bytes()
    image_path(root, "train_4").write_bytes(data[: len(data) // 3])
    image_path(root, "train_5").write_bytes(b"\x00" * 100)
    return root


def read_records(directory, manifest):
    files = [str(directory / s.file) for s in manifest.shards]
    records = tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r, feature_spec()))
    return list(records.as_numpy_iterator())


def test_shards_and_manifest_agree(raw, tmp_path):
    rows = labelled(raw)
    out = tmp_path / "train"
    manifest = write_split(rows, raw, out, split="train", shard_mb=0.05)
    assert manifest.examples == len(rows) == N_CHIPS
    total = len(manifest.shards)
    assert total > 1
    assert [s.file for s in manifest.shards] == [
        f"planet-train.tfrecord-{i:05d}-of-{total:05d}" for i in range(total)
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_FILE, *manifest.files])
    assert sum(s.examples for s in manifest.shards) == manifest.examples
    assert check_manifest(out).examples == N_CHIPS

    records = read_records(out, manifest)
    assert [r[FEATURE_NAME].decode() for r in records] == [row.image_name for row in rows]
    first = records[0]
    assert first[FEATURE_IMAGE] == image_path(raw, rows[0].image_name).read_bytes()
    assert first[FEATURE_WEATHER].shape == (len(LABELS_WEATHER),) and first[FEATURE_WEATHER].sum() == 1
    assert first[FEATURE_GROUND].shape == (len(LABELS_GROUND),)
    assert json.loads(rows[0].weather_labels) == list(first[FEATURE_WEATHER])
    weather_counts = np.sum([r[FEATURE_WEATHER] for r in records], axis=0)
    assert [manifest.label_counts[t] for t in LABELS_WEATHER] == list(weather_counts)


def test_chips_of_any_format_are_stored_as_they_are_and_bad_ones_skipped_and_listed(raw, tmp_path):
    root = corrupt_some(raw, tmp_path)
    rows = labelled(root)
    out = tmp_path / "train"
    manifest = write_split(rows, root, out, split="train", shard_mb=16)
    reasons = {s["image_name"]: s["reason"] for s in manifest.skipped}
    # The whole reason: it lands in manifest.json, a DVC output that must be the same bytes
    # on every run, so no path, nothing that differs between runs.
    assert reasons == {
        "train_4": "not a readable image: a JPEG cut short: its data ends before the end-of-image marker "
        "(TensorFlow's decoder refuses it); re-encode it",
        "train_5": "not a readable image: Unknown image file format. One of JPEG, JPEG XL, PNG, GIF, BMP, "
        "WebP required (its first bytes are those of no format TensorFlow decodes); convert it to PNG",
    }
    text = (out / MANIFEST_FILE).read_text()
    assert str(tmp_path) not in text and str(root) not in text
    assert manifest.formats == {"JPEG": len(rows) - 3, "PNG": 1}
    assert manifest.examples == len(rows) - 2
    stored = {r[FEATURE_NAME].decode(): r[FEATURE_IMAGE] for r in read_records(out, manifest)}
    assert "train_4" not in stored
    for name in ("train_1", "train_2", "train_3"):
        assert stored[name] == image_path(root, name).read_bytes()


def webp_with_its_bitstream_cut() -> bytes:
    """A lossless WebP whose VP8L payload is cut short, its RIFF and chunk sizes mended:
    well-formed to a structure walk, refused by libwebp once it decodes the pixels."""
    data = encode(chip(64), "WEBP", lossless=True)
    payload = data[20:220]
    body = b"WEBP" + data[12:16] + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_a_chip_whose_damage_only_decoding_shows_is_decoded_by_tensorflow_and_skipped(raw, tmp_path):
    damaged = webp_with_its_bitstream_cut()
    assert check_image(damaged) == "WebP"  # the structure walk passes it
    root = tmp_path / "raw"
    shutil.copytree(raw, root)
    image_path(root, "train_6").write_bytes(damaged)
    image_path(root, "train_7").write_bytes(encode(chip(64), "WEBP", lossless=True))
    manifest = write_split(labelled(root), root, tmp_path / "train", split="train", shard_mb=16)
    assert {s["image_name"]: s["reason"] for s in manifest.skipped} == {
        "train_6": "not a readable image: a WebP file TensorFlow's decoder refuses "
        "(Failed to decode WebP image.); re-encode it"
    }
    assert manifest.formats["WebP"] == 1


def test_bad_chip_with_error_policy_stops_before_any_output(raw, tmp_path):
    root = corrupt_some(raw, tmp_path)
    out = tmp_path / "train"
    with pytest.raises(
        BadImageError, match=r"train_4\.jpg: not a readable image.*serialize.on_bad_image: skip"
    ):
        write_split(labelled(root), root, out, split="train", shard_mb=16, on_bad_image="error")
    assert not out.exists()
    assert list(tmp_path.glob(".tmp-*")) == []


@pytest.fixture
def written(raw, tmp_path):
    out = tmp_path / "test"
    write_split(labelled(raw), raw, out, split="test", shard_mb=0.05)
    return out


def test_half_written_shard_is_refused(written):
    shard = sorted(written.glob("planet-test.tfrecord-*"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(RecordsError, match=r"bytes, the manifest says .*half-written"):
        check_manifest(written)


def test_altered_shard_is_refused(written):
    shard = sorted(written.glob("planet-test.tfrecord-*"))[0]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(RecordsError, match="SHA-256 differs"):
        check_manifest(written)


def test_missing_and_stray_shards_are_refused(written):
    (written / "planet-test.tfrecord-00099-of-00100").write_bytes(b"")
    with pytest.raises(RecordsError, match="shard files not in the manifest"):
        check_manifest(written)
    (written / "planet-test.tfrecord-00099-of-00100").unlink()
    sorted(written.glob("planet-test.tfrecord-*"))[-1].unlink()
    with pytest.raises(RecordsError, match="listed in the manifest but missing"):
        check_manifest(written)
    (written / MANIFEST_FILE).unlink()
    with pytest.raises(RecordsError, match="manifest.json: missing"):
        check_manifest(written)


WRITE_SPLIT = """
import sys
from pathlib import Path

from amazonia.data.labels import encode_tags, read_tags_csv
from amazonia.data.records.writer import write_split

raw, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = encode_tags(read_tags_csv(raw / "train_v2.csv"), val=0.2, test=0.2).table
write_split(rows, raw, out, split="train", shard_mb=0.05)
"""


@pytest.mark.slow
def test_the_same_split_is_the_same_bytes_whatever_the_process_hash_seed(raw, tmp_path):
    """DVC caches serialize's outputs by content: two runs over the same chips must write
    byte-identical shards and manifest.json, skipped chips' reasons included."""
    root = corrupt_some(raw, tmp_path)
    for name, hash_seed in (("a", "1"), ("b", "2")):
        run_python(WRITE_SPLIT, root, tmp_path / name, cwd=tmp_path, PYTHONHASHSEED=hash_seed)
    first, second = file_digests(tmp_path / "a"), file_digests(tmp_path / "b")
    assert MANIFEST_FILE in first and len(first) > 2
    assert first == second
    manifest = json.loads((tmp_path / "a" / MANIFEST_FILE).read_text())
    assert {s["image_name"] for s in manifest["skipped"]} == {"train_4", "train_5"}
    assert manifest["examples"] + len(manifest["skipped"]) == N_CHIPS
