"""Image files of every kind TensorFlow's ``decode_image`` reads, built in memory.

``CASES`` maps a description to a builder ``size -> file bytes`` of a synthetic chip
that size (a GIF whose frames are laid out by hand may be larger than ``size``): JPEG
RGB, gray, CMYK and MPO; PNG 1/4/8/16-bit, gray, RGB, alpha, palette, transparency and
APNG; GIF with transparency, animation and odd frame layouts; BMP 24 and 32 bit; WebP
lossy, lossless, alpha and animated. Shared by the decoder tests, with
:func:`write_split_of_files`, a split folder whose records hold such files as they are.
"""

import io
import struct
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from amazonia.data.records.manifest import ChipOutcome, ShardInfo, build_manifest
from amazonia.data.records.naming import shard_filename
from amazonia.data.records.schema import make_example
from amazonia.data.records.tfrecord import ShardFile
from amazonia.data.synthetic.render import render_chip
from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER


def chip(size: int, seed: int = 1) -> Image.Image:
    tags = ("clear", "primary", "road", "water", "habitation")
    return Image.fromarray(render_chip(tags, np.random.default_rng(seed), size=size), "RGB")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def with_alpha(image: Image.Image, mode: str = "RGBA") -> Image.Image:
    """``image`` with a graded alpha, fully transparent in one corner."""
    alpha = np.tile(np.linspace(0, 255, image.width, dtype=np.uint8), (image.height, 1))
    alpha[: image.height // 4, : image.width // 4] = 0
    out = image.convert(mode[:-1] if mode != "RGBA" else "RGB").convert(mode)
    out.putalpha(Image.fromarray(alpha, "L"))
    return out


def png16(image: Image.Image, channels: int) -> bytes:
    """A 16-bit PNG (PIL cannot write 16-bit colour), samples spread over 0..65535."""
    rgb = np.asarray(image).astype(np.uint16) * 257 + np.uint16(100)
    planes = {
        1: rgb[..., :1],
        2: np.dstack([rgb[..., :1], rgb[..., 1:2]]),
        3: rgb,
        4: np.dstack([rgb, rgb[..., :1]]),
    }
    return tf.io.encode_png(planes[channels]).numpy()


def palette_image(image: Image.Image) -> Image.Image:
    return image.convert("P", palette=Image.Palette.ADAPTIVE, colors=200)


def frames(image: Image.Image) -> list[Image.Image]:
    return [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), image.rotate(90)]


def lzw_raw(indices: np.ndarray) -> bytes:
    """GIF image data without compression: 9-bit literal codes, a clear code before the
    table would grow. Lets a test place frames freely (PIL's writer re-lays them)."""
    clear, end = 256, 257
    codes = []
    for i, value in enumerate(indices.ravel().tolist()):
        if i % 254 == 0:
            codes.append(clear)
        codes.append(value)
    codes.append(end)
    packed = sum(code << (9 * i) for i, code in enumerate(codes)).to_bytes(
        (9 * len(codes) + 7) // 8, "little"
    )
    blocks = b"".join(
        bytes([len(packed[i : i + 255])]) + packed[i : i + 255] for i in range(0, len(packed), 255)
    )
    return b"\x08" + blocks + b"\x00"


def gif(
    screen: tuple[int, int], palette: np.ndarray, layers: list[tuple[int, int, np.ndarray, int | None]]
) -> bytes:
    """A GIF of ``(left, top, indices, transparent index)`` frames."""
    out = b"GIF89a" + struct.pack("<HHBBB", *screen, 0xF7, 0, 0) + palette.astype(np.uint8).tobytes()
    for left, top, indices, transparent in layers:
        if transparent is not None:
            out += b"\x21\xf9\x04\x01\x00\x00" + bytes([transparent]) + b"\x00"
        out += b"\x2c" + struct.pack("<HHHHB", left, top, indices.shape[1], indices.shape[0], 0)
        out += lzw_raw(indices)
    return out + b"\x3b"


def gif_parts(size: int) -> tuple[np.ndarray, np.ndarray]:
    image = palette_image(chip(size))
    palette = np.zeros((256, 3), np.uint8)
    colours = np.asarray(image.getpalette("RGB"), np.uint8).reshape(-1, 3)
    palette[: len(colours)] = colours
    return palette, np.asarray(image)


def gif_offset_first_frame(size: int) -> bytes:
    """Frame 0 covers part of the canvas and has transparent pixels; frame 1 is larger."""
    palette, indices = gif_parts(size)
    first = indices[: size * 5 // 8, : size * 3 // 4].copy()
    first[: size // 8] = 7  # the transparent index
    return gif((size, size), palette, [(size // 8, size // 4, first, 7), (0, 0, indices, None)])


def gif_canvas_beyond_screen(size: int) -> bytes:
    """A later frame is larger than the logical screen: TensorFlow's canvas is the
    largest frame, PIL's the screen."""
    palette, indices = gif_parts(size)
    half = size // 2
    return gif((half, half), palette, [(0, 0, indices[:half, :half], None), (0, 0, indices, None)])


def bmp32(image: Image.Image) -> bytes:
    """A 32-bit BGRA BMP (PIL writes none)."""
    rgba = np.asarray(image.convert("RGBA"))
    pixels = rgba[::-1][..., [2, 1, 0, 3]].tobytes()
    header = b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, image.width, image.height, 1, 32, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


CASES = {
    "JPEG RGB": lambda n: encode(chip(n), "JPEG", quality=95),
    "JPEG progressive": lambda n: encode(chip(n), "JPEG", quality=95, progressive=True),
    "JPEG L": lambda n: encode(chip(n).convert("L"), "JPEG", quality=95),
    "JPEG CMYK": lambda n: encode(chip(n).convert("CMYK"), "JPEG", quality=95),
    "JPEG MPO (first image)": lambda n: encode(
        chip(n), "MPO", save_all=True, append_images=[chip(n, seed=2)]
    ),
    "PNG RGB": lambda n: encode(chip(n), "PNG"),
    "PNG RGBA": lambda n: encode(with_alpha(chip(n)), "PNG"),
    "PNG L": lambda n: encode(chip(n).convert("L"), "PNG"),
    "PNG LA": lambda n: encode(with_alpha(chip(n), "LA"), "PNG"),
    "PNG 1-bit": lambda n: encode(chip(n).convert("1"), "PNG"),
    "PNG L 4-bit": lambda n: encode(chip(n).convert("L"), "PNG", bits=4),
    "PNG P": lambda n: encode(palette_image(chip(n)), "PNG"),
    "PNG P + transparency": lambda n: encode(palette_image(chip(n)), "PNG", transparency=5),
    "PNG L + transparency": lambda n: encode(chip(n).convert("L"), "PNG", transparency=90),
    "PNG RGB + transparency": lambda n: encode(chip(n), "PNG", transparency=(40, 60, 30)),
    "PNG 16-bit L": lambda n: png16(chip(n), 1),
    "PNG 16-bit LA": lambda n: png16(chip(n), 2),
    "PNG 16-bit RGB": lambda n: png16(chip(n), 3),
    "PNG 16-bit RGBA": lambda n: png16(chip(n), 4),
    "APNG (first frame)": lambda n: encode(chip(n), "PNG", save_all=True, append_images=frames(chip(n))[1:]),
    "APNG, default image outside the animation": lambda n: encode(
        chip(n), "PNG", save_all=True, append_images=frames(chip(n, seed=2)), default_image=True
    ),
    "GIF": lambda n: encode(chip(n), "GIF"),
    "GIF + transparency": lambda n: encode(palette_image(chip(n)), "GIF", transparency=5),
    "GIF animated (first frame)": lambda n: encode(
        chip(n), "GIF", save_all=True, append_images=frames(chip(n))[1:]
    ),
    "GIF, offset and transparent first frame": gif_offset_first_frame,
    "GIF, frame larger than the screen": gif_canvas_beyond_screen,
    "BMP RGB": lambda n: encode(chip(n), "BMP"),
    "BMP L": lambda n: encode(chip(n).convert("L"), "BMP"),
    "BMP 32-bit": lambda n: bmp32(with_alpha(chip(n))),
    "WebP lossless": lambda n: encode(chip(n), "WEBP", lossless=True),
    "WebP lossy": lambda n: encode(chip(n), "WEBP", quality=90),
    "WebP + alpha": lambda n: encode(with_alpha(chip(n)), "WEBP", lossless=True),
    "WebP lossy + alpha": lambda n: encode(with_alpha(chip(n)), "WEBP", quality=90),
    "WebP animated (first frame)": lambda n: encode(
        chip(n), "WEBP", save_all=True, append_images=frames(chip(n))[1:], lossless=True
    ),
}
JPEG_SOURCES = {"JPEG RGB", "JPEG progressive", "JPEG L", "JPEG CMYK", "JPEG MPO (first image)"}


def write_split_of_files(
    directory: Path, files: dict[str, bytes], split: str = "test", shards: int = 2
) -> Path:
    """A split folder (shards + manifest) whose records hold ``files`` as they are, by image
    name, dealt round-robin over ``shards`` shards; every chip labelled clear + primary."""
    directory.mkdir(parents=True, exist_ok=True)
    weather = [int(t == "clear") for t in LABELS_WEATHER]
    ground = [int(t == "primary") for t in LABELS_GROUND]
    shards = max(1, min(shards, len(files)))
    infos = []
    for index in range(shards):
        name = shard_filename(split, index, shards)
        with open(directory / name, "wb") as handle:
            shard = ShardFile(handle)
            for image_name, data in list(files.items())[index::shards]:
                shard.write(make_example(image_name, data, weather, ground))
        stats = shard.stats()
        infos.append(ShardInfo(name, stats.examples, stats.bytes, stats.sha256))
    outcomes = [ChipOutcome(name, tuple(weather), tuple(ground), None, None) for name in files]
    # Original files have no one size: the readers under test never read the manifest's.
    build_manifest(split, 0, infos, outcomes).write(directory)
    return directory
