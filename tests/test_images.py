"""The one pre-decode check (check_image): the decode budget, decoder bombs, and the
serialize stage keeping the chips that pass it byte for byte and skipping the others."""

import io
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from amazonia.data.kaggle import image_path
from amazonia.data.labels import encode_tags, read_tags_csv
from amazonia.data.records.images import (
    MAX_DECODED_PIXELS,
    MAX_GIF_FRAMES,
    MAX_JPEG_SCANS,
    MAX_PNG_METADATA_BYTES,
    BadImageError,
    ImageTooLargeError,
    check_image,
)
from amazonia.data.records.schema import FEATURE_IMAGE, FEATURE_NAME, feature_spec
from amazonia.data.records.writer import write_split
from amazonia.data.synthetic.generate import generate_dataset
from tests.image_corpus import (
    BOMBS,
    VALID,
    damaged_files,
    encode,
    gif,
    png_chunk,
    png_file,
    progressive_jpeg_repeating_its_last_scan,
)


def encoded(mode: str, fmt: str = "JPEG", size: int = 64) -> bytes:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), "RGB")
    return encode(rgb.convert(mode), fmt)


def test_a_chip_that_passes_is_named_by_its_format():
    assert check_image(encoded("RGB")) == "JPEG"
    assert check_image(encoded("RGBA", "PNG")) == "PNG"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (
            b"not an image at all",
            "not a readable image: Unknown image file format. One of JPEG, JPEG XL, PNG, GIF, BMP, WebP "
            "required (its first bytes are those of no format TensorFlow decodes); convert it to PNG",
        ),
        (
            encoded("RGB", "TIFF"),
            "not a readable image: Unknown image file format. One of JPEG, JPEG XL, PNG, GIF, BMP, WebP "
            "required (a TIFF image); convert it to PNG",
        ),
        (
            encoded("RGB")[:300],
            "not a readable image: a JPEG cut short: its data ends before the end-of-image marker "
            "(TensorFlow's decoder refuses it); re-encode it",
        ),
    ],
    ids=["empty", "garbage", "TIFF", "truncated JPEG"],
)
def test_what_tensorflow_cannot_read_is_refused_saying_why(data, message):
    with pytest.raises(BadImageError) as caught:
        check_image(data)
    assert str(caught.value) == message


# --- the decode budget -----------------------------------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header claiming ``width`` x ``height``, with a token of data: what a
    decoder allocates for before reading a row."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return png_file(ihdr, zlib.compress(b"\x00" * 4096))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 8x8 JPEG whose frame header is rewritten to ``width`` x ``height``."""
    data = bytearray(encoded("RGB", size=8))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def jxl_claiming(width: int, height: int) -> bytes:
    """A bare JPEG XL codestream header: signature, SizeHeader (both sizes in 18-bit
    fields), then ImageMetadata's all_default bit. TensorFlow's decoder allocates
    ``height x width x 3`` bytes from these 9 bytes before failing on the missing data."""
    fields = [(0, 1), (2, 2), (height - 1, 18), (0, 3), (2, 2), (width - 1, 18), (1, 1)]
    value, offset = 0, 0
    for field, bits in fields:
        value |= field << offset
        offset += bits
    return b"\xff\x0a" + value.to_bytes((offset + 7) // 8, "little")


def bmp_claiming(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + info


def gif_of_frames(count: int, side: int) -> bytes:
    """A real animated GIF: ``count`` full ``side`` x ``side`` frames, black and white in turn."""
    frames = [Image.new("P", (side, side), i % 2) for i in range(count)]
    for frame in frames:
        frame.putpalette([0, 0, 0, 255, 255, 255])
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], optimize=False)
    return buffer.getvalue()


def gif_on_canvas(screen: tuple[int, int], frame_sizes: list[tuple[int, int]]) -> bytes:
    palette = np.zeros((256, 3), np.uint8)
    return gif(screen, palette, [(0, 0, np.zeros((h, w), np.uint8), None) for w, h in frame_sizes])


LIMIT = f"more than the {MAX_DECODED_PIXELS:,} (4096x4096) decoded per image"
SHRINK = f"{LIMIT}: scale it down first"
ONE_FRAME = (
    f"(TensorFlow decodes every frame, then keeps the first), {LIMIT}: send its first frame alone, "
    "scaled down if need be"
)


@pytest.mark.parametrize(
    "data, what",
    [
        (
            png_claiming(100_000, 100_000),
            "a PNG image of 100000x100000 pixels: 10,000,000,000 pixels to decode",
        ),
        (png_claiming(4097, 4096), "a PNG image of 4097x4096 pixels: 16,781,312 pixels to decode"),
        (jpeg_claiming(60_000, 60_000), "a JPEG image of 60000x60000 pixels: 3,600,000,000 pixels to decode"),
        (webp_claiming(16_384, 16_384), "a WebP image of 16384x16384 pixels: 268,435,456 pixels to decode"),
        (
            jxl_claiming(70_000, 100_000),
            "a JPEG XL image of 70000x100000 pixels: 7,000,000,000 pixels to decode",
        ),
        (bmp_claiming(5000, -5000), "a BMP image of 5000x5000 pixels: 25,000,000 pixels to decode"),
        (
            gif_of_frames(17, 1024),
            f"a GIF of 17 frames on a 1024x1024 canvas: 17,825,792 pixels to decode {ONE_FRAME}",
        ),
        # giflib holds each frame, TensorFlow's canvas is the largest width by the largest height
        (
            gif_on_canvas((4, 4), [(4, 4100), (4100, 4)]),
            f"a GIF of 2 frames on a 4100x4100 canvas: 16,810,000 pixels to decode {ONE_FRAME}",
        ),
        # PIL paints frame 0 on the logical screen, however small the frame
        (
            gif_on_canvas((65_535, 65_535), [(1, 1)]),
            "a GIF image of 65535x65535 pixels: 4,294,836,225 pixels to decode",
        ),
    ],
    ids=[
        "PNG bomb",
        "PNG one column over",
        "JPEG",
        "WebP",
        "JPEG XL",
        "BMP",
        "GIF frames",
        "GIF canvas",
        "GIF screen",
    ],
)
def test_images_over_the_decode_budget_are_refused_from_their_headers(data, what):
    assert len(data) < 50_000  # a few KB claim what a decoder would allocate gigabytes for
    with pytest.raises(ImageTooLargeError) as caught:
        check_image(data)
    assert str(caught.value) == (what if what.startswith("a GIF of") else f"{what}, {SHRINK}")


def test_a_gif_of_too_many_frames_is_refused_however_small_they_are():
    assert check_image(gif_on_canvas((1, 1), [(1, 1)] * MAX_GIF_FRAMES)) == "GIF"
    with pytest.raises(ImageTooLargeError) as caught:
        check_image(gif_on_canvas((1, 1), [(1, 1)] * (MAX_GIF_FRAMES + 1)))
    assert str(caught.value) == (
        "a GIF of more than 1,000 frames, the most decoded per image (TensorFlow decodes every frame, "
        "then keeps the first): send its first frame alone"
    )


@pytest.mark.parametrize(
    "data, kind",
    [
        (b"\xff\xd8" + b"\xff\xe0\x00\x02" * 300_000, "JPEG"),  # empty APP0 segments
        (gif_on_canvas((1, 1), [(1, 1)])[:-1] + b"\x21\xfe\x00" * 300_000 + b"\x3b", "GIF"),  # comments
        (png_claiming(1, 1)[:-12] + png_chunk(b"abCd", b"") * 300_000 + png_chunk(b"IEND", b""), "PNG"),
    ],
    ids=["JPEG segments", "GIF comments", "PNG chunks"],
)
def test_a_header_of_endless_tiny_blocks_is_refused_unread(data, kind):
    with pytest.raises(ImageTooLargeError) as caught:
        check_image(data)
    assert str(caught.value) == (
        f"a {kind} file whose header takes more than 200,000 blocks to read (real files need a few "
        "dozen to a few thousand): refused unread; re-encode it"
    )


@pytest.mark.parametrize(
    "tail", [b"\x21", b"\x21\xf9", b"\x2c\x00\x00"], ids=["extension", "control extension", "descriptor"]
)
def test_a_gif_cut_after_its_frames_is_still_counted_by_them(tail):
    """giflib keeps the frames it read before a cut and TensorFlow decodes them (one
    byte in place of the trailer is enough), so a cut header still counts them."""
    data = gif_of_frames(17, 1024)[:-1] + tail
    with pytest.raises(ImageTooLargeError, match="a GIF of 17 frames"):
        check_image(data)
    decoded = tf.io.decode_image(data, channels=0, expand_animations=False)
    assert tuple(decoded.shape) == (1024, 1024, 3)


@pytest.mark.parametrize(
    "data",
    [png_claiming(4096, 4096), gif_of_frames(16, 1024), webp_claiming(4096, 4096)],
    ids=["PNG at the limit", "GIF frames at the limit", "WebP at the limit"],
)
def test_images_at_the_budget_are_not_refused_as_too_large(data):
    try:
        check_image(data)
    except ImageTooLargeError as err:
        pytest.fail(str(err))
    except BadImageError:
        pass  # the PNG and the WebP are headers without image data


# --- decoder bombs: within the pixel budget, far over it in work --------------------------

BOMB_MESSAGES = {
    "progressive JPEG of 2,000 repeated scans": (
        "a JPEG of more than 100 scans (libjpeg decodes each over the whole image; encoders write at "
        "most a few dozen): re-encode it"
    ),
    "PNG of compressed text chunks": (
        "a PNG whose compressed text and colour-profile chunks inflate to more than 1,048,576 bytes "
        "(libpng inflates them all): strip its metadata (e.g. re-save it without text chunks)"
    ),
    "PNG of image data past its last row": (
        "a PNG whose image data inflates to more than 1,048,576 bytes past its last row (libpng "
        "inflates and discards them): re-encode it"
    ),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_decoder_bombs_are_refused_before_decoding(name):
    data = BOMBS[name]()
    assert len(data) < 400_000  # one request carries it
    with pytest.raises(ImageTooLargeError) as caught:
        check_image(data)
    assert str(caught.value) == BOMB_MESSAGES[name]


def test_jpeg_scans_are_refused_past_the_limit_not_at_it():
    base = encode(Image.new("RGB", (64, 64), (90, 120, 60)), "JPEG", progressive=True)
    scans = base.count(b"\xff\xda")
    at_limit = progressive_jpeg_repeating_its_last_scan(64, MAX_JPEG_SCANS - scans)
    assert at_limit.count(b"\xff\xda") == MAX_JPEG_SCANS
    assert check_image(at_limit) == "JPEG"
    with pytest.raises(ImageTooLargeError, match="more than 100 scans"):
        check_image(progressive_jpeg_repeating_its_last_scan(64, MAX_JPEG_SCANS - scans + 1))


def test_png_metadata_is_refused_past_the_limit_not_at_it():
    def with_text(inflated: int) -> bytes:
        text = png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"\x00" * inflated))
        return png_file(
            struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0), zlib.compress(b"\x00\x01\x02\x03"), text
        )

    assert check_image(with_text(MAX_PNG_METADATA_BYTES)) == "PNG"
    with pytest.raises(ImageTooLargeError, match="inflate to more than 1,048,576 bytes"):
        check_image(with_text(MAX_PNG_METADATA_BYTES + 1))


# --- the serialize stage -------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    generate_dataset(root, 40, seed=5, workers=1)
    image_path(root, "train_1").write_bytes(png_claiming(100_000, 100_000))
    image_path(root, "train_2").write_bytes(gif_of_frames(17, 1024))
    image_path(root, "train_3").write_bytes(VALID["PNG 16-bit RGB"](64))
    image_path(root, "train_4").write_bytes(BOMBS["progressive JPEG of 2,000 repeated scans"]())
    image_path(root, "train_5").write_bytes(BOMBS["PNG of compressed text chunks"]())
    image_path(root, "train_6").write_bytes(BOMBS["PNG of image data past its last row"]())
    return root


def rows(raw):
    return encode_tags(read_tags_csv(raw / "train_v2.csv"), val=0.2, test=0.2).table


@pytest.mark.slow
def test_serialize_stores_chips_byte_for_byte_and_skips_bombs_with_their_reason(raw, tmp_path):
    manifest = write_split(rows(raw), raw, tmp_path / "train", split="train", shard_mb=16)
    reasons = {s["image_name"]: s["reason"] for s in manifest.skipped}
    assert reasons == {
        "train_1": f"a PNG image of 100000x100000 pixels: 10,000,000,000 pixels to decode, {SHRINK}",
        "train_2": f"a GIF of 17 frames on a 1024x1024 canvas: 17,825,792 pixels to decode {ONE_FRAME}",
        "train_4": BOMB_MESSAGES["progressive JPEG of 2,000 repeated scans"],
        "train_5": BOMB_MESSAGES["PNG of compressed text chunks"],
        "train_6": BOMB_MESSAGES["PNG of image data past its last row"],
    }
    assert manifest.formats == {"JPEG": 34, "PNG": 1}
    files = [str(tmp_path / "train" / s.file) for s in manifest.shards]
    examples = tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r, feature_spec()))
    chips = {e[FEATURE_NAME].decode(): e[FEATURE_IMAGE] for e in examples.as_numpy_iterator()}
    assert len(chips) == 35
    for name, stored in chips.items():
        assert stored == image_path(raw, name).read_bytes(), name


def test_serialize_stops_on_an_over_budget_chip_under_the_error_policy(raw, tmp_path):
    with pytest.raises(
        BadImageError,
        match=r"train_1\.jpg: a PNG image of 100000x100000 pixels: .*serialize\.on_bad_image: skip",
    ):
        write_split(rows(raw), raw, tmp_path / "train", split="train", shard_mb=16, on_bad_image="error")
    assert not (tmp_path / "train").exists()


def test_a_jpegs_reason_does_not_depend_on_the_chips_checked_before_it():
    """Headers of a JPEG that passed are remembered, and the next chip with the same headers
    skips to its entropy data. A reason lands in manifest.json, which must be the same bytes
    whatever order the chips were checked in (Beam's workers take them in any order)."""
    from amazonia.data.records import image_structure

    def reasons(files: dict[str, bytes], forget: bool) -> dict[str, str | None]:
        found = {}
        for name, data in files.items():
            if forget:
                image_structure._SINGLE_SCAN_HEADERS.clear()
            try:
                found[name] = check_image(data)
            except BadImageError as err:
                found[name] = str(err)
        return found

    jpegs = {name: data for name, data in damaged_files(64).items() if name.startswith("JPEG")}
    unseen = reasons(jpegs, forget=True)
    check_image(VALID["JPEG RGB"](64))
    assert image_structure._SINGLE_SCAN_HEADERS, "the valid chip's headers are remembered"
    assert reasons(jpegs, forget=False) == unseen
