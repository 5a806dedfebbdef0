"""Hostile and unlucky Kaggle downloads: ingest checks train_v2.csv before it touches
data/raw, names the file and row of what is wrong, draws the chips it can, and leaves a
bad chip to serialize's ``on_bad_image`` policy."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from amazonia.data.contact_sheet import write_contact_sheet
from amazonia.data.kaggle import IMAGE_DIR, TAGS_CSV, image_path
from amazonia.data.labels import LabelError, assign_split, encode_tags, read_tags_csv
from tests.conftest import BIN, TINY_PARAMS, copy_project, file_digests, run, set_params

PYTHON = str(BIN / "python")
DVC = str(BIN / "dvc")

# Enough rows for encode_labels to give every split (val 0.1, test 0.1) some chips.
ROW_COUNT = 60
GOOD_ROWS = [(f"train_{i}", "clear primary") for i in range(ROW_COUNT)]


def jpeg_bytes(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (index * 4 % 256, 120, 60)).save(buffer, format="JPEG")
    return buffer.getvalue()


def csv_text(rows: list[tuple[str, str]]) -> str:
    return "image_name,tags\n" + "".join(f"{name},{tags}\n" for name, tags in rows)


def make_download(root: Path, csv_data: bytes | str = csv_text(GOOD_ROWS), rows: int = ROW_COUNT) -> Path:
    """A Kaggle-layout folder: ``rows`` small JPEG chips and ``csv_data`` as train_v2.csv."""
    (root / IMAGE_DIR).mkdir(parents=True)
    for i in range(rows):
        image_path(root, f"train_{i}").write_bytes(jpeg_bytes(i))
    data = csv_data.encode("utf-8") if isinstance(csv_data, str) else csv_data
    (root / TAGS_CSV).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def kaggle_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with ``data.source: kaggle`` whose data/raw holds one good ingest."""
    base = tmp_path_factory.mktemp("ingest")
    repo = copy_project(base / "repo")
    set_params(repo, {**TINY_PARAMS, "data": {**TINY_PARAMS["data"], "source": "kaggle"}})
    result = ingest(repo, make_download(base / "good"))
    assert result.returncode == 0, result.stderr
    return repo


def ingest(repo: Path, download: Path):
    set_params(repo, {"data": {"kaggle_dir": str(download)}})
    return run([PYTHON, "-m", "stages.ingest"], repo, check=False)


# --- train_v2.csv, read by both ingest and encode_labels -----------------------------------

BAD_CSVS = {
    "not-utf8": (
        "image_name,tags\ntrain_0,clear\ntrain_\xe9,clear\n".encode("latin-1"),
        "row 3: not UTF-8 text (byte 0xe9 at offset 36); save the file as UTF-8",
    ),
    "extra-field": (
        "image_name,tags\ntrain_0,clear\ntrain_1,clear,primary\ntrain_2,clear\n",
        "row 3: 3 field(s), expected 2 (image_name,tags); remove the extra field, "
        "or quote a field that holds a comma",
    ),
    "missing-field": (
        "image_name,tags\ntrain_0,clear\ntrain_1\n",
        "row 3: 1 field(s), expected 2 (image_name,tags); add the missing field",
    ),
    "unclosed-quote": (
        'image_name,tags\ntrain_0,clear\ntrain_1,"clear primary\ntrain_2,clear\n',
        "row 3: a quote opened on this row is never closed; close it or remove it",
    ),
    "quote-over-rows": (
        'image_name,tags\ntrain_0,clear\ntrain_1,"clear\ntrain_2",clear\n',
        "row 3: a quoted field runs on to row 4",
    ),
    "path-like-name": (
        "image_name,tags\ntrain_0,clear\n../../secret,clear\n",
        "row 3: image_name '../../secret' is not a plain file name",
    ),
    "no-tags-column": ("image_name\ntrain_0\n", "missing column(s) tags; found ['image_name']"),
    "empty": ("", "the CSV is empty; expected a header 'image_name,tags' and rows"),
    "bom-only": (b"\xef\xbb\xbf", "the CSV is empty"),
}


@pytest.mark.parametrize("csv_data, message", BAD_CSVS.values(), ids=BAD_CSVS.keys())
def test_a_bad_tags_csv_is_refused_naming_the_file_and_row(tmp_path, csv_data, message):
    path = tmp_path / TAGS_CSV
    path.write_bytes(csv_data.encode("utf-8") if isinstance(csv_data, str) else csv_data)
    with pytest.raises(LabelError) as info:
        read_tags_csv(path)
    assert str(info.value).startswith(f"{path}"), str(info.value)
    assert message in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("csv_data, message", BAD_CSVS.values(), ids=BAD_CSVS.keys())
def test_ingest_refuses_a_bad_tags_csv_in_one_line_leaving_data_raw_alone(
    kaggle_project, tmp_path, csv_data, message
):
    before = file_digests(kaggle_project / "data/raw")
    download = make_download(tmp_path / "kaggle", csv_data, rows=3)

    result = ingest(kaggle_project, download)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [result.stderr.strip()], "expected one line, no traceback"
    assert result.stderr.startswith(f"error: {download / TAGS_CSV}")
    assert message in result.stderr
    assert file_digests(kaggle_project / "data/raw") == before


def test_an_unclosed_quote_in_a_file_the_size_of_kaggles_names_its_row(tmp_path):
    """The rest of a 40k-row file is more than the csv module's field size limit, which
    it reports before the end of the data: still an unclosed quote."""
    path = tmp_path / TAGS_CSV
    rows = [("train_0", "clear"), ("train_1", '"clear primary')] + [
        (f"train_{i}", "haze road") for i in range(2, 40_000)
    ]
    path.write_text(csv_text(rows))
    with pytest.raises(LabelError) as info:
        read_tags_csv(path)
    assert (
        str(info.value) == f"{path}, row 3: a quote opened on this row is never closed; close it or remove it"
    )


def test_a_column_named_twice_is_refused(tmp_path):
    path = tmp_path / TAGS_CSV
    path.write_text("image_name,tags,tags\ntrain_0,clear,haze\n")
    with pytest.raises(LabelError) as info:
        read_tags_csv(path)
    assert str(info.value) == f"{path}: column(s) tags appear more than once in the header; keep one of each"


def test_row_numbers_are_lines_in_the_file_blank_lines_included(tmp_path):
    path = tmp_path / TAGS_CSV
    path.write_text("image_name,tags\ntrain_0,clear\n\ntrain_2,clear jungle\n")
    with pytest.raises(LabelError, match=r"train_v2.csv, row 4 \(train_2\): unknown tag\(s\) jungle"):
        encode_tags(read_tags_csv(path), val=0.1, test=0.1, source=str(path))


@pytest.mark.parametrize(
    "prefix, newline", [(b"\xef\xbb\xbf", "\n"), (b"\xef\xbb\xbf", "\r\n")], ids=["bom", "bom-crlf"]
)
def test_excels_utf8_csv_reads_like_kaggles(reference, tmp_path, prefix, newline):
    """Excel's "CSV UTF-8" starts with a byte-order mark and ends rows with CRLF."""
    kaggle = read_tags_csv(reference / "train_v2_head.csv")
    text = (reference / "train_v2_head.csv").read_text()
    excel = tmp_path / TAGS_CSV
    excel.write_bytes(prefix + text.replace("\n", newline).encode("utf-8"))
    assert read_tags_csv(excel).equals(kaggle)


@pytest.mark.slow
def test_ingest_accepts_a_csv_saved_by_excel(kaggle_project, tmp_path):
    excel = b"\xef\xbb\xbf" + csv_text(GOOD_ROWS).replace("\n", "\r\n").encode("utf-8")
    download = make_download(tmp_path / "kaggle", excel)

    result = ingest(kaggle_project, download)

    assert result.returncode == 0, result.stderr
    assert (kaggle_project / "data/raw" / TAGS_CSV).read_bytes() == excel
    assert (kaggle_project / "metrics/samples.png").is_file()
    encoded = run([PYTHON, "-m", "stages.encode_labels"], kaggle_project, check=False)
    assert encoded.returncode == 0, encoded.stderr
    assert json.loads((kaggle_project / "metrics/labels.json").read_text())["encoded"] == ROW_COUNT


# --- chips -----------------------------------------------------------------------------------


def test_contact_sheet_draws_a_placeholder_for_a_chip_it_cannot_decode(tmp_path):
    good, truncated, text, missing = (tmp_path / f"{n}.jpg" for n in ("good", "truncated", "text", "missing"))
    good.write_bytes(jpeg_bytes(1))
    truncated.write_bytes(jpeg_bytes(2)[:200])
    text.write_bytes(b"not an image")

    undrawn = write_contact_sheet(
        tmp_path / "sheet.png", [(p, "clear") for p in (good, truncated, text, missing)], columns=2, thumb=40
    )

    assert [path for path, _ in undrawn] == [truncated, text, missing]
    reasons = [reason for _, reason in undrawn]
    assert reasons[0].startswith("cannot decode: ")
    assert reasons[1:] == ["not an image PIL can identify", "no such file"]
    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.size == (2 * 40, 2 * (40 + 34))


@pytest.mark.slow
def test_a_bad_chip_among_the_first_rows_is_left_to_on_bad_image_skip(kaggle_project, tmp_path):
    download = make_download(tmp_path / "kaggle")
    image_path(download, "train_1").write_bytes(jpeg_bytes(1)[:200])  # truncated
    image_path(download, "train_2").write_bytes(b"<html>not found</html>")
    set_params(kaggle_project, {"serialize": {"on_bad_image": "skip"}})

    result = ingest(kaggle_project, download)

    assert result.returncode == 0, result.stderr
    assert (kaggle_project / "metrics/samples.png").is_file()
    run([PYTHON, "-m", "stages.encode_labels"], kaggle_project)
    skipped = []
    for split in sorted({assign_split(name, 0.1, 0.1) for name in ("train_1", "train_2")}):
        run([PYTHON, "-m", "stages.serialize", split], kaggle_project)
        manifest = json.loads((kaggle_project / "data/tfrecords" / split / "manifest.json").read_text())
        skipped += manifest["skipped"]
    assert sorted(s["image_name"] for s in skipped) == ["train_1", "train_2"]
    assert all(s["reason"].startswith("not a readable image") for s in skipped), skipped


@pytest.mark.slow
def test_a_chip_file_name_that_is_not_utf8_is_skipped_by_name_and_dvc_runs(kaggle_project, tmp_path):
    """DVC cannot hash such a name ("'utf-8' codec can't encode character '\\udce9'", no
    file named), and no row of a UTF-8 train_v2.csv can name the chip: ingest leaves it out."""
    download = make_download(tmp_path / "kaggle")
    stray = os.fsencode(download / IMAGE_DIR) + b"/train_\xe9.jpg"
    with open(stray, "wb") as handle:
        handle.write(jpeg_bytes(3))
    set_params(kaggle_project, {"data": {"kaggle_dir": str(download)}})

    result = run([DVC, "repro", "ingest"], kaggle_project, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "skipped 1 file(s) whose names are not UTF-8: b'train_\\xe9.jpg'" in output
    assert "rename them to UTF-8" in output
    raw_names = os.listdir(os.fsencode(kaggle_project / "data/raw" / IMAGE_DIR))
    assert b"train_\xe9.jpg" not in raw_names and len(raw_names) == ROW_COUNT
