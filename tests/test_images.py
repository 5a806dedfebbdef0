import io

import numpy as np
import pytest
from PIL import Image

from amazonia.data.records.images import BadImageError, prepare_chip, prepare_chip_bytes


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
