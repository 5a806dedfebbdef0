"""Hostile and unlucky Kaggle downloads: ingest checks train_v2.csv before it touches
data/raw, names the file and row of what is wrong, draws the chips it can, and leaves a
bad chip to serialize's ``on_bad_image`` policy."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import pytest
from PIL import Image

from amazonia.data.contact_sheet import MAX_CHIP_BYTES, write_contact_sheet
from amazonia.data.kaggle import IMAGE_DIR, TAGS_CSV, image_path
from amazonia.data.labels import LabelError, assign_split, encode_tags, read_tags_csv
from tests.conftest import BIN, TINY_PARAMS, copy_project, file_digests, on_small_filesystem, run, set_params

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
    assert read_tags_csv(excel) == kaggle


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
    # Refused by the check serve and serialize run, before PIL reads a byte of them.
    assert reasons[0].startswith("not decoded: not a readable image: a JPEG cut short")
    assert reasons[1].startswith("not decoded: not a readable image: Unknown image file format.")
    assert reasons[2] == "no such file"
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


# --- what ingest reads: regular files inside the download, nothing else ----------------------

# Random per session, so finding it in the project can only mean ingest copied it there.
SECRET = f"-----BEGIN OPENSSH PRIVATE KEY----- {os.urandom(16).hex()}".encode()
UNSAFE_NAMES = [f"train_{i}" for i in range(1, 6)]


def hostile_download(base: Path) -> tuple[Path, dict[str, str]]:
    """A download whose train-jpg/ holds, besides good chips, each kind of entry ingest must
    not read; and why each is refused, as the message says it."""
    download = make_download(base / "kaggle")
    key = base / "id_ed25519"
    key.write_bytes(SECRET)
    chip = {name: image_path(download, name) for name in (*UNSAFE_NAMES, "train_6")}
    for path in chip.values():
        path.unlink()
    chip["train_1"].symlink_to(key)
    os.mkfifo(chip["train_2"])
    chip["train_3"].mkdir()
    chip["train_4"].symlink_to(base / "gone.jpg")
    chip["train_5"].symlink_to(chip["train_5"].name)
    chip["train_6"].symlink_to(f"../{IMAGE_DIR}/train_7.jpg")  # inside the download: fine
    reasons = {
        "train_1": f"a symlink to {key}, outside the download",
        "train_2": "a FIFO",
        "train_3": "a folder",
        "train_4": f"a symlink to {base / 'gone.jpg'}, which does not exist",
        "train_5": "a symlink to train_5.jpg, which is a loop of symlinks",
    }
    return download, reasons


def files_holding(root: Path, data: bytes) -> list[Path]:
    """Every file under ``root`` (DVC's cache included) whose bytes contain ``data``."""
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and data in p.read_bytes()]


@pytest.mark.slow
def test_ingest_refuses_entries_that_are_not_regular_files_inside_the_download(kaggle_project, tmp_path):
    download, reasons = hostile_download(tmp_path)
    set_params(kaggle_project, {"data": {"kaggle_dir": str(download), "on_unsafe_chip": "error"}})

    result = run([DVC, "repro", "ingest"], kaggle_project, check=False)

    assert result.returncode != 0
    listing = ", ".join(f"{name}.jpg ({why})" for name, why in reasons.items())
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {download / IMAGE_DIR}: 5 entries are not a regular file inside the download "
        f"(data.kaggle_dir: {download}), so nothing of it was read: {listing}; put the chips' own files "
        "there, or set data.on_unsafe_chip: skip to leave such entries, and their rows of train_v2.csv, "
        "out of data/raw"
    ], result.stderr
    assert "Traceback" not in result.stderr
    assert files_holding(kaggle_project, SECRET) == []
    assert not list((kaggle_project / "data").glob(".tmp-*"))
    # DVC removed data/raw before running the stage; the module's other tests want one.
    assert ingest(kaggle_project, make_download(tmp_path / "good")).returncode == 0


@pytest.mark.slow
def test_ingest_can_skip_unsafe_entries_with_their_rows_copying_nothing_outside(kaggle_project, tmp_path):
    download, reasons = hostile_download(tmp_path)
    set_params(kaggle_project, {"data": {"kaggle_dir": str(download), "on_unsafe_chip": "skip"}})

    result = run([DVC, "repro", "ingest", "encode_labels"], kaggle_project, check=False)

    assert result.returncode == 0, result.stderr
    for name, why in reasons.items():
        assert f"{name}.jpg ({why})" in result.stderr
    assert f"{download / TAGS_CSV}: 5 row(s) left out of data/raw with their chips" in result.stderr
    raw = kaggle_project / "data/raw"
    assert sorted(p.stem for p in (raw / IMAGE_DIR).iterdir()) == sorted(
        n for n, _ in GOOD_ROWS if n not in UNSAFE_NAMES
    )
    inside = image_path(raw, "train_6")
    assert not inside.is_symlink() and inside.read_bytes() == image_path(download, "train_7").read_bytes()
    kept = [(n, t) for n, t in GOOD_ROWS if n not in UNSAFE_NAMES]
    assert (raw / TAGS_CSV).read_text() == csv_text(kept)
    assert json.loads((kaggle_project / "metrics/labels.json").read_text())["rows"] == len(kept)
    assert files_holding(kaggle_project, SECRET) == [], "the key reached data/raw or DVC's cache"


# Run in a mount namespace whose tmpfs holds the download: hard links cannot cross to data/raw.
ACROSS_FILESYSTEMS = """
import json, os, subprocess, sys
from pathlib import Path
from tests.conftest import set_params
from tests.test_ingest_hardening import SECRET, hostile_download
download, reasons = hostile_download(Path(sys.argv[1]))
set_params(Path.cwd(), {"data": {"kaggle_dir": str(download), "on_unsafe_chip": "skip"}})
ingest = subprocess.run([sys.executable, "-m", "stages.ingest"], capture_output=True, text=True)
raw = Path("data/raw/train-jpg")
print(json.dumps({
    "returncode": ingest.returncode,
    "stderr": ingest.stderr,
    "chips": sorted(p.stem for p in raw.iterdir()),
    "inside": (raw / "train_6.jpg").read_bytes() == (download / "train-jpg/train_7.jpg").read_bytes(),
    "secret": [str(p) for p in Path("data").rglob("*") if p.is_file() and SECRET in p.read_bytes()],
}))
"""


@pytest.mark.slow
def test_a_download_on_another_filesystem_is_copied_under_the_same_checks(kaggle_project, tmp_path):
    other_disk = tmp_path / "other-disk"
    other_disk.mkdir()

    result = on_small_filesystem(
        other_disk, 8192, [PYTHON, "-c", ACROSS_FILESYSTEMS, str(other_disk)], kaggle_project
    )

    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[0])
    assert outcome["returncode"] == 0, outcome["stderr"]
    assert "hard links not possible" in outcome["stderr"] and "copying" in outcome["stderr"]
    assert outcome["chips"] == sorted(n for n, _ in GOOD_ROWS if n not in UNSAFE_NAMES)
    assert outcome["inside"] is True
    assert outcome["secret"] == []


@pytest.mark.parametrize("entry", [TAGS_CSV, IMAGE_DIR])
def test_a_tags_csv_or_chip_folder_that_links_out_of_the_download_is_refused(kaggle_project, tmp_path, entry):
    download = make_download(tmp_path / "kaggle")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (download / entry).rename(elsewhere / entry)
    (download / entry).symlink_to(elsewhere / entry)
    before = file_digests(kaggle_project / "data/raw")
    set_params(kaggle_project, {"data": {"on_unsafe_chip": "skip"}})  # these are never skipped

    result = ingest(kaggle_project, download)

    assert result.returncode == 1
    kind = "file" if entry == TAGS_CSV else "folder"
    assert result.stderr == (
        f"error: {download / entry}: a symlink to {elsewhere / entry}, outside the download; not read. "
        f"Put the {kind} itself inside {download}, or set data.kaggle_dir to the folder that really "
        "holds the download\n"
    )
    assert file_digests(kaggle_project / "data/raw") == before


def test_kaggle_dir_itself_may_be_a_symlink(kaggle_project, tmp_path):
    download = make_download(tmp_path / "disk" / "planet")
    (tmp_path / "kaggle").symlink_to(download)
    set_params(kaggle_project, {"data": {"on_unsafe_chip": "error"}})

    result = ingest(kaggle_project, tmp_path / "kaggle")

    assert result.returncode == 0, result.stderr
    assert len(list((kaggle_project / "data/raw" / IMAGE_DIR).iterdir())) == ROW_COUNT


# --- the contact sheet reads regular files, decodes within the budget -------------------------


def sheet_reasons(tmp_path: Path, chips: list[Path]) -> dict[str, str]:
    """Why each chip the contact sheet drew as a grey tile was not drawn, by file name; fails
    if the sheet takes more than a minute (a FIFO it waited on)."""
    undrawn: list[tuple[Path, str]] = []
    worker = threading.Thread(
        target=lambda: undrawn.extend(write_contact_sheet(tmp_path / "sheet.png", [(c, "") for c in chips])),
        daemon=True,
    )
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the contact sheet hangs"
    return {path.name: reason for path, reason in undrawn}


def test_contact_sheet_reads_only_regular_files(tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes(1))
    (tmp_path / "link.jpg").symlink_to(good)
    os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "folder.jpg").mkdir()
    with open(tmp_path / "huge.jpg", "wb") as huge:
        huge.truncate(MAX_CHIP_BYTES + 1)  # sparse: no disk used

    names = ("good", "link", "fifo", "folder", "huge")
    reasons = sheet_reasons(tmp_path, [tmp_path / f"{n}.jpg" for n in names])

    assert reasons == {
        "link.jpg": "a symlink, not a regular file; not read",
        "fifo.jpg": "a FIFO, not a regular file; not read",
        "folder.jpg": "a folder, not a regular file; not read",
        "huge.jpg": "more than 64.0 MiB; not read",
    }


def gif_bytes(frames: int) -> bytes:
    buffer = io.BytesIO()
    first, *rest = (Image.new("L", (1, 1), 255 * (i % 2)) for i in range(frames))
    first.save(buffer, format="GIF", save_all=True, append_images=rest, duration=10)
    return buffer.getvalue()


def test_contact_sheet_keeps_to_the_decode_budget_serialize_and_serve_enforce(tmp_path):
    """A GIF of 1,001 frames: PIL would draw its first, the decode budget refuses it."""
    chip = tmp_path / "frames.jpg"
    chip.write_bytes(gif_bytes(1001))

    assert sheet_reasons(tmp_path, [chip]) == {
        "frames.jpg": "not decoded: a GIF of more than 1,000 frames, the most decoded per image "
        "(TensorFlow decodes every frame, then keeps the first): send its first frame alone"
    }


def progressive_jpeg_with_scans(scans: int, size: int = 256) -> bytes:
    """A valid progressive JPEG whose last scan (with its Huffman tables) is repeated
    ``scans`` times: a few bytes each, each making the decoder walk every block again."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (90, 120, 60)).save(buffer, format="JPEG", progressive=True)
    data = buffer.getvalue()
    segments, i = [], 2
    while data[i + 1] != 0xD9:  # EOI
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if data[i + 1] == 0xDA:  # a scan: its entropy-coded data runs to the next marker
            while not (data[end] == 0xFF and data[end + 1] not in (0x00, *range(0xD0, 0xD8))):
                end += 1
        segments.append((data[i + 1], data[i:end]))
        i = end
    last = max(k for k, (marker, _) in enumerate(segments) if marker == 0xDA)
    first = last - 1 if segments[last - 1][0] == 0xC4 else last  # its DHT, if it has one
    repeated = b"".join(segment for _, segment in segments[first : last + 1])
    return data[:2] + b"".join(s for _, s in segments) + repeated * scans + b"\xff\xd9"


def test_contact_sheet_does_not_decode_a_progressive_jpeg_of_thousands_of_scans(tmp_path):
    chip = tmp_path / "scans.jpg"
    chip.write_bytes(progressive_jpeg_with_scans(5000))
    with Image.open(chip) as image:
        image.load()  # a valid JPEG: PIL decodes it, all 5,000 scans
    reasons = sheet_reasons(tmp_path, [chip])
    assert reasons["scans.jpg"].startswith("not decoded: "), reasons
