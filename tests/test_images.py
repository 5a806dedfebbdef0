"""Chip preparation for the serialize stage: conversions, bad files and the decode budget."""

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
    BadImageError,
    ImageTooLargeError,
    check_decode_budget,
    prepare_chip,
    prepare_chip_bytes,
)
from amazonia.data.records.schema import FEATURE_IMAGE, FEATURE_NAME, feature_spec
from amazonia.data.records.writer import write_split
from amazonia.data.synthetic.generate import generate_dataset
from amazonia.export import saved_model
from tests.test_decode_parity import gif


def encoded(mode: str, fmt: str = "JPEG", size: int = 64) -> bytes:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), "RGB")
    buffer = io.BytesIO()
    rgb.convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_rgb_jpeg_of_the_right_size_is_kept_byte_for_byte():
    data = encoded("RGB", size=32)
    chip = prepare_chip_bytes(data, 32)
    assert chip.jpeg == data and chip.converted_from is None


def test_larger_jpeg_is_resized_not_marked_converted():
    chip = prepare_chip_bytes(encoded("RGB", size=256), 128)
    image = decoded(chip.jpeg)
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (128, 128))
    assert chip.converted_from is None


@pytest.mark.parametrize(
    "mode, fmt, kind",
    [
        ("L", "JPEG", "JPEG/L"),
        ("CMYK", "JPEG", "JPEG/CMYK"),
        ("RGBA", "PNG", "PNG/RGBA"),
        ("RGB", "PNG", "PNG/RGB"),
        ("P", "PNG", "PNG/P"),
    ],
)
def test_other_modes_and_formats_become_rgb_jpeg(mode, fmt, kind):
    chip = prepare_chip_bytes(encoded(mode, fmt, size=48), 32)
    image = decoded(chip.jpeg)
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (32, 32))
    assert chip.converted_from == kind


def test_truncated_jpeg_is_rejected():
    data = encoded("RGB", size=128)
    with pytest.raises(BadImageError, match="not a readable image"):
        prepare_chip_bytes(data[: len(data) // 2], 64)


@pytest.mark.parametrize(
    "data, message", [(b"", "empty file"), (b"not an image at all", "not a readable image")]
)
def test_garbage_is_rejected(data, message):
    with pytest.raises(BadImageError, match=message):
        prepare_chip_bytes(data, 32)


def test_missing_file_is_a_bad_image(tmp_path):
    with pytest.raises(BadImageError, match="cannot read"):
        prepare_chip(tmp_path / "nope.jpg", 32)


# --- the decode budget -----------------------------------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header claiming ``width`` x ``height``, with a token of data: what a
    decoder allocates for before reading a row."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


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
        check_decode_budget(data)
    assert str(caught.value) == (what if what.startswith("a GIF of") else f"{what}, {SHRINK}")


def test_a_gif_of_too_many_frames_is_refused_however_small_they_are():
    check_decode_budget(gif_on_canvas((1, 1), [(1, 1)] * MAX_GIF_FRAMES))
    with pytest.raises(ImageTooLargeError) as caught:
        check_decode_budget(gif_on_canvas((1, 1), [(1, 1)] * (MAX_GIF_FRAMES + 1)))
    assert str(caught.value) == (
        "a GIF of more than 1,000 frames, the most decoded per image (TensorFlow decodes every frame, "
        "then keeps the first): send its first frame alone"
    )


@pytest.mark.parametrize(
    "data, kind",
    [
        (b"\xff\xd8" + b"\xff\xe0\x00\x02" * 300_000, "JPEG"),  # empty APP0 segments
        (gif_on_canvas((1, 1), [(1, 1)])[:-1] + b"\x21\xfe\x00" * 300_000 + b"\x3b", "GIF"),  # comments
    ],
)
def test_a_header_of_endless_tiny_blocks_is_refused_unread(data, kind):
    with pytest.raises(ImageTooLargeError) as caught:
        check_decode_budget(data)
    assert str(caught.value) == (
        f"a {kind} file whose header takes more than 200,000 blocks to read (real files need a few "
        "dozen to a few thousand): refused unread; re-encode it"
    )


def test_what_pil_refuses_as_a_bomb_is_over_budget_not_unreadable():
    data = png_claiming(20_000, 20_000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))
    with pytest.raises(
        ImageTooLargeError, match=r"^a PNG image of 20000x20000 pixels: 400,000,000 pixels to decode"
    ):
        prepare_chip_bytes(data, 32)


def test_a_gif_passing_a_first_frame_check_is_counted_by_all_its_frames():
    data = gif_of_frames(17, 1024)
    with Image.open(io.BytesIO(data)) as image:
        assert image.width * image.height <= MAX_DECODED_PIXELS and image.n_frames == 17
    with pytest.raises(ImageTooLargeError, match="a GIF of 17 frames"):
        prepare_chip_bytes(data, 32)


@pytest.mark.parametrize(
    "tail", [b"\x21", b"\x21\xf9", b"\x2c\x00\x00"], ids=["extension", "control extension", "descriptor"]
)
def test_a_gif_cut_after_its_frames_is_still_counted_by_them(tail):
    """giflib keeps the frames it read before a cut and TensorFlow decodes them (one
    byte in place of the trailer is enough), so a cut header still counts them."""
    data = gif_of_frames(17, 1024)[:-1] + tail
    with pytest.raises(ImageTooLargeError, match="a GIF of 17 frames"):
        check_decode_budget(data)
    decoded = tf.io.decode_image(data, channels=0, expand_animations=False)
    assert tuple(decoded.shape) == (1024, 1024, 3)


@pytest.mark.parametrize(
    "data",
    [
        png_claiming(4096, 4096),
        gif_of_frames(16, 1024),
        webp_claiming(4096, 4096),
        encoded("RGB", "GIF"),
        b"not an image at all",
        b"\x89PNG\r\n\x1a\n",  # cut inside the header: the decoder says so
    ],
    ids=["PNG at the limit", "GIF frames at the limit", "WebP at the limit", "small GIF", "garbage", "cut"],
)
def test_images_within_the_budget_or_unreadable_pass_the_check(data):
    check_decode_budget(data)


# --- what the served model could not read is not trained on --------------------------------


def bmp(mode: str, bits: int | None = None) -> bytes:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8), "RGB")
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format="BMP", **({"bits": bits} if bits else {}))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data, reason",
    [
        (
            encoded("RGB", "TIFF"),
            "a TIFF image: the served model decodes only JPEG, PNG, GIF, BMP, WebP, "
            "JPEG XL (TensorFlow's decode_image), so it could not read this one; convert it to PNG",
        ),
        (
            jxl_claiming(64, 64),
            "a JPEG XL image: this stage decodes with PIL, which has no JPEG XL decoder; convert it to PNG",
        ),
        (
            bmp("P"),
            "an 8-bit BMP with a colour palette: TensorFlow's decoder reads its palette indices as "
            "gray levels, so the served model would see other pixels; convert it to PNG",
        ),
        (bmp("1"), "a 1-bit BMP: TensorFlow's decoder reads only 8-, 24- and 32-bit BMPs; convert it to PNG"),
    ],
    ids=["TIFF", "JPEG XL", "palette BMP", "1-bit BMP"],
)
def test_images_the_served_model_cannot_read_as_served_are_refused(data, reason):
    with pytest.raises(BadImageError) as caught:
        prepare_chip_bytes(data, 16)
    assert str(caught.value) == reason


# --- the serialize stage -------------------------------------------------------------------


def white_free_png16(size: int = 64) -> bytes:
    """A 16-bit gray PNG, mid-gray to bright: PIL's convert("RGB") made it all white."""
    ramp = np.tile(np.linspace(0x4000, 0xF000, size, dtype=np.uint16), (size, 1))
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    generate_dataset(root, 40, seed=5, workers=1)
    image_path(root, "train_1").write_bytes(png_claiming(100_000, 100_000))
    image_path(root, "train_2").write_bytes(gif_of_frames(17, 1024))
    image_path(root, "train_3").write_bytes(white_free_png16())
    return root


def rows(raw):
    return encode_tags(read_tags_csv(raw / "train_v2.csv"), val=0.2, test=0.2).table


def test_serialize_skips_over_budget_chips_with_their_reason_and_converts_16_bit(raw, tmp_path):
    manifest = write_split(
        rows(raw), raw, tmp_path / "train", split="train", image_size=32, shard_mb=16, workers=1
    )
    reasons = {s["image_name"]: s["reason"] for s in manifest.skipped}
    assert reasons == {
        "train_1": f"a PNG image of 100000x100000 pixels: 10,000,000,000 pixels to decode, {SHRINK}",
        "train_2": f"a GIF of 17 frames on a 1024x1024 canvas: 17,825,792 pixels to decode {ONE_FRAME}",
    }
    assert {"image_name": "train_3", "from": "PNG/I;16"} in manifest.converted
    files = [str(tmp_path / "train" / s.file) for s in manifest.shards]
    examples = tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r, feature_spec()))
    chips = {e[FEATURE_NAME].decode(): e[FEATURE_IMAGE] for e in examples.as_numpy_iterator()}
    trained = tf.io.decode_jpeg(chips["train_3"]).numpy().astype(int)
    served = saved_model.decode_rgb(tf.constant(white_free_png16())).numpy()
    expected = np.asarray(Image.fromarray(served).resize((32, 32), Image.Resampling.BILINEAR)).astype(int)
    assert trained.min() < 100 and np.abs(trained - expected).mean() < 2


def test_serialize_stops_on_an_over_budget_chip_under_the_error_policy(raw, tmp_path):
    with pytest.raises(
        BadImageError,
        match=r"train_1\.jpg: a PNG image of 100000x100000 pixels: .*"
        r"serialize\.on_bad_image: skip",
    ):
        write_split(
            rows(raw),
            raw,
            tmp_path / "train",
            split="train",
            image_size=32,
            shard_mb=16,
            workers=1,
            on_bad_image="error",
        )
