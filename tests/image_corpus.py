"""Image files of every kind ``tf.io.decode_image`` reads, damaged ones, and decoder bombs.

Built in memory from synthetic chips with PIL and by hand, no TensorFlow, so any test
can import it:

- ``VALID``: name -> ``builder(size) -> bytes``, one file per format and mode the model
  may be given (JPEG gray/RGB/CMYK/progressive/restart markers/MPO, PNG of every colour
  type and depth, interlaced, APNG, GIF still/animated/offset/transparent, BMP, WebP
  lossy/lossless/alpha/animated). ``valid_files(size)`` builds them all.
- ``damaged_files(size)``: name -> bytes, each valid kind cut at several offsets, plus
  header and data corruptions of each format (``"<kind>: <damage>"``).
- ``BOMBS``: name -> ``builder() -> bytes``, files within the pixel budget that cost a
  decoder far more than their pixels (each under 0.5 MB, so one request carries it).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from amazonia.data.synthetic.render import render_chip

# --- building blocks ---------------------------------------------------------------------------


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


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_file(ihdr: bytes, idat: bytes, before_idat: bytes = b"", after_idat: bytes = b"") -> bytes:
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + before_idat
        + png_chunk(b"IDAT", idat)
        + after_idat
        + png_chunk(b"IEND", b"")
    )


def png16(image: Image.Image, channels: int) -> bytes:
    """A 16-bit PNG written by hand (PIL writes no 16-bit colour), samples over 0..65535."""
    rgb = np.asarray(image).astype(np.uint16) * 257 + np.uint16(100)
    planes = {1: rgb[..., :1], 2: rgb[..., :2], 3: rgb, 4: np.dstack([rgb, rgb[..., :1]])}[channels]
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = planes.astype(">u2").reshape(image.height, -1).tobytes()
    stride = image.width * channels * 2
    raw = b"".join(b"\x00" + rows[i * stride : (i + 1) * stride] for i in range(image.height))
    ihdr = struct.pack(">IIBBBBB", image.width, image.height, 16, colour, 0, 0, 0)
    return png_file(ihdr, zlib.compress(raw))


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


# --- every kind decode_image reads ---------------------------------------------------------

VALID: dict[str, Callable[[int], bytes]] = {
    "JPEG RGB": lambda n: encode(chip(n), "JPEG", quality=95),
    "JPEG L": lambda n: encode(chip(n).convert("L"), "JPEG", quality=95),
    "JPEG CMYK": lambda n: encode(chip(n).convert("CMYK"), "JPEG", quality=95),
    "JPEG 4:2:0": lambda n: encode(chip(n), "JPEG", quality=90, subsampling=2),
    "JPEG progressive": lambda n: encode(chip(n), "JPEG", quality=90, progressive=True),
    "JPEG restart markers": lambda n: encode(chip(n), "JPEG", quality=90, restart_marker_blocks=2),
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
    "PNG interlaced": lambda n: encode(chip(n), "PNG", interlace=1),
    "PNG + text and profile": lambda n: _png_with_metadata(chip(n)),
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
    "BMP with a colour palette": lambda n: encode(palette_image(chip(n)), "BMP"),
    "WebP lossless": lambda n: encode(chip(n), "WEBP", lossless=True),
    "WebP lossy": lambda n: encode(chip(n), "WEBP", quality=90),
    "WebP + alpha": lambda n: encode(with_alpha(chip(n)), "WEBP", lossless=True),
    "WebP lossy + alpha": lambda n: encode(with_alpha(chip(n)), "WEBP", quality=90),
    "WebP animated (first frame)": lambda n: encode(
        with_alpha(chip(n)),
        "WEBP",
        save_all=True,
        append_images=frames(with_alpha(chip(n)))[1:],
        lossless=True,
    ),
}


def _png_with_metadata(image: Image.Image) -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "a chip", zip=True)
    info.add_itxt("XML:com.adobe.xmp", "<x/>" * 50, zip=True)
    return encode(image, "PNG", pnginfo=info, icc_profile=b"\x00" * 400)


def valid_files(size: int = 64) -> dict[str, bytes]:
    return {name: build(size) for name, build in VALID.items()}


# --- damaged files ---------------------------------------------------------------------------

CUTS = (0.1, 0.5, 0.9)  # fractions of the file kept, plus one and two bytes short of the end


def _truncations(name: str, data: bytes) -> dict[str, bytes]:
    cuts = {f"{name}: cut at {fraction:.0%}": data[: int(len(data) * fraction)] for fraction in CUTS}
    cuts[f"{name}: last byte missing"] = data[:-1]
    cuts[f"{name}: last two bytes missing"] = data[:-2]
    return cuts


def _replace(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data, old
    return data.replace(old, new, 1)


def _jpeg_segment(data: bytes, marker: int) -> tuple[int, int]:
    """``(start, end)`` of the first segment with ``marker``, marker bytes included."""
    start = data.index(bytes([0xFF, marker]))
    return start, start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")


def _without_segments(data: bytes, marker: int) -> bytes:
    while bytes([0xFF, marker]) in data[: data.index(b"\xff\xda")]:
        start, end = _jpeg_segment(data, marker)
        data = data[:start] + data[end:]
    return data


def _entropy_middle(data: bytes) -> int:
    """An offset in the middle of the first scan's entropy data, not next to an 0xFF."""
    start, end = _jpeg_segment(data, 0xDA)
    pos = (end + data.index(b"\xff\xd9", end)) // 2
    while 0xFF in data[pos - 1 : pos + 2]:
        pos += 1
    return pos


def _at(data: bytes, pos: int, new: bytes, replace: int = 0) -> bytes:
    return data[:pos] + new + data[pos + replace :]


def _jpeg_damage(size: int) -> dict[str, bytes]:
    rgb, gray = VALID["JPEG RGB"](size), VALID["JPEG L"](size)
    progressive = VALID["JPEG progressive"](size)
    restart = VALID["JPEG restart markers"](size)
    sof = rgb.index(b"\xff\xc0")
    sos_start, sos_end = _jpeg_segment(rgb, 0xDA)
    mid = _entropy_middle(rgb)
    flipped = bytearray(rgb)
    for offset in range(mid, mid + 40, 4):
        if flipped[offset] != 0xFF and flipped[offset] ^ 0x5A != 0xFF and flipped[offset - 1] != 0xFF:
            flipped[offset] ^= 0x5A
    sampling = bytearray(rgb)
    sampling[sof + 11] = 0x31  # 3x1 luma over 1x1 chroma is fine; 3x1 and 2x1 is not
    sampling[sof + 14] = 0x21
    two_components = bytearray(gray)
    gray_sof = gray.index(b"\xff\xc0")
    return {
        "JPEG: 12-bit samples": _at(rgb, sof + 4, b"\x0c", 1),
        "JPEG: lossless process (SOF3)": _at(rgb, sof + 1, b"\xc3", 1),
        "JPEG: arithmetic coding (SOF9) over Huffman data": _at(rgb, sof + 1, b"\xc9", 1),
        "JPEG: zero width": _at(rgb, sof + 7, b"\x00\x00", 2),
        "JPEG: fractional chroma sampling": bytes(sampling),
        "JPEG: 2 components": bytes(two_components[: gray_sof + 9])
        + b"\x02"
        + bytes(two_components[gray_sof + 10 :]),
        "JPEG: two frame headers": rgb[:sos_start] + rgb[sof : _jpeg_segment(rgb, 0xC0)[1]] + rgb[sos_start:],
        "JPEG: Huffman tables removed": _without_segments(rgb, 0xC4),
        "JPEG: progressive, Huffman tables removed": _without_segments(progressive, 0xC4),
        "JPEG: quantization tables removed": _without_segments(rgb, 0xDB),
        "JPEG: unknown marker before the scan": rgb[:sos_start] + b"\xff\x02\x00\x02" + rgb[sos_start:],
        "JPEG: scan names an unknown component": _at(rgb, sos_start + 5, b"\x09", 1),
        "JPEG: scan header length wrong": _at(rgb, sos_start + 3, b"\x0d", 1),
        "JPEG: second scan in a sequential file": rgb[:-2]
        + rgb[sos_start:sos_end]
        + b"\x00" * 8
        + b"\xff\xd9",
        "JPEG: restart interval segment malformed": rgb[:sos_start]
        + b"\xff\xdd\x00\x05\x00\x01\x00"
        + rgb[sos_start:],
        "JPEG: empty APP1 segment": rgb[:2] + b"\xff\xe1\x00\x00" + rgb[2:],
        "JPEG: APP1 segment past the end": rgb[:2] + b"\xff\xe1\xff\xff" + rgb[2:100],
        "JPEG: entropy data bytes flipped": bytes(flipped),
        "JPEG: end-of-image marker inside the scan": _at(rgb, mid, b"\xff\xd9"),
        "JPEG: restart marker inside the scan": _at(rgb, mid, b"\xff\xd3"),
        "JPEG: unknown marker inside the scan": _at(rgb, mid, b"\xff\x02"),
        "JPEG: frame header inside the scan": _at(rgb, mid, rgb[sof : _jpeg_segment(rgb, 0xC0)[1]]),
        "JPEG: restart markers removed": restart.replace(b"\xff\xd0", b"").replace(b"\xff\xd1", b""),
        "JPEG: garbage after the end": rgb + b"\x00garbage\xff\x02",
        "JPEG: garbage before the end-of-image marker": rgb[:-2] + b"\x12\x34\x56" + rgb[-2:],
        "JPEG: end-of-image replaced by zeros": rgb[:-2] + b"\x00\x00",
        "JPEG: progressive scan with invalid spectral selection": _at(
            progressive, _jpeg_segment(progressive, 0xDA)[1] - 2, b"\x40", 1
        ),
    }


def _png_image_data(data: bytes) -> bytes:
    """The zlib stream of a PNG: its IDAT chunks' data, joined."""
    stream, pos = b"", 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        if data[pos + 4 : pos + 8] == b"IDAT":
            stream += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return stream


def _unterminated(raw: bytes) -> bytes:
    """A zlib stream holding ``raw``, flushed but never finished (no final block, no checksum)."""
    compressor = zlib.compressobj()
    return compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)


def _png_damage(size: int) -> dict[str, bytes]:
    rgb = VALID["PNG RGB"](size)
    palette = VALID["PNG P"](size)
    ihdr_end = 8 + 8 + 13 + 4
    idat = rgb.index(b"IDAT") - 4
    (idat_length,) = struct.unpack_from(">I", rgb, idat)
    idat_body = _png_image_data(rgb)
    image = Image.open(io.BytesIO(rgb))
    raw = zlib.decompress(idat_body)
    row = 1 + 3 * image.width
    bad_filter = bytearray(raw)
    bad_filter[row * 3] = 5
    ihdr = rgb[16:29]
    plte = palette.index(b"PLTE") - 4
    (plte_length,) = struct.unpack_from(">I", palette, plte)
    plte_chunk = palette[plte : plte + 12 + plte_length]
    iend = rgb.index(b"IEND") - 4

    def corrupt(data: bytes, at: int) -> bytes:
        return data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1 :]

    def with_ihdr(body: bytes, idat_data: bytes = idat_body) -> bytes:
        return png_file(body, idat_data)

    return {
        "PNG: IHDR CRC wrong": corrupt(rgb, ihdr_end - 1),
        "PNG: IDAT CRC wrong": corrupt(rgb, idat + 8 + idat_length),
        "PNG: ancillary chunk CRC wrong": rgb[:ihdr_end]
        + png_chunk(b"tEXt", b"k\x00v")[:-1]
        + b"\x00"
        + rgb[ihdr_end:],
        "PNG: IEND missing": rgb[:iend],
        "PNG: IEND CRC wrong": corrupt(rgb, len(rgb) - 1),
        "PNG: invalid bit depth": with_ihdr(ihdr[:8] + b"\x03" + ihdr[9:]),
        "PNG: invalid colour type": with_ihdr(ihdr[:9] + b"\x05" + ihdr[10:]),
        "PNG: zero width": with_ihdr(b"\x00\x00\x00\x00" + ihdr[4:]),
        "PNG: wider than libpng's limit": png_file(
            struct.pack(">IIBBBBB", 1_000_001, 1, 8, 0, 0, 0, 0), zlib.compress(b"\x00" * 1_000_002)
        ),
        "PNG: unknown interlace method": with_ihdr(ihdr[:12] + b"\x02"),
        "PNG: image data corrupt": rgb[: idat + 8 + idat_length // 2]
        + bytes([rgb[idat + 8 + idat_length // 2] ^ 0xFF])
        + rgb[idat + 9 + idat_length // 2 :],
        "PNG: image data corrupt, CRC recomputed": with_ihdr(
            ihdr, idat_body[: len(idat_body) // 2] + b"\xff\xff\xff" + idat_body[len(idat_body) // 2 + 3 :]
        ),
        "PNG: image data one row short": with_ihdr(ihdr, zlib.compress(raw[:-row])),
        "PNG: invalid row filter type": with_ihdr(ihdr, zlib.compress(bytes(bad_filter))),
        "PNG: image data with a little extra": with_ihdr(ihdr, zlib.compress(raw + b"\x00" * 100)),
        "PNG: image data checksum wrong": with_ihdr(ihdr, idat_body[:-1] + bytes([idat_body[-1] ^ 1])),
        "PNG: image data not zlib": with_ihdr(ihdr, b"\x00\x00" + idat_body[2:]),
        "PNG: image data stream unterminated": with_ihdr(ihdr, _unterminated(raw)),
        "PNG: image data cut after the last row": with_ihdr(ihdr, _unterminated(raw)[:-4]),
        "PNG: unknown critical chunk": rgb[:ihdr_end] + png_chunk(b"ABCD", b"x") + rgb[ihdr_end:],
        "PNG: unknown ancillary chunk": rgb[:ihdr_end] + png_chunk(b"abCd", b"x") + rgb[ihdr_end:],
        "PNG: chunk name not letters": rgb[:ihdr_end] + png_chunk(b"ab1d", b"x") + rgb[ihdr_end:],
        "PNG: ancillary chunk before IHDR": rgb[:8] + png_chunk(b"tEXt", b"k\x00v") + rgb[8:],
        "PNG: palette image without its palette": palette[:plte] + palette[plte + 12 + plte_length :],
        "PNG: two palettes": palette[: plte + 12 + plte_length]
        + plte_chunk
        + palette[plte + 12 + plte_length :],
        "PNG: palette after the image data": palette[:plte]
        + palette[plte + 12 + plte_length : palette.index(b"IEND") - 4]
        + plte_chunk
        + palette[palette.index(b"IEND") - 4 :],
        "PNG: IDAT after IEND": rgb + png_chunk(b"IDAT", b"junk"),
        "PNG: chunk over 8 MB": rgb[:ihdr_end]
        + png_chunk(b"tEXt", b"k\x00" + b"v" * 8_000_000)
        + rgb[ihdr_end:],
    }


def _gif_first_descriptor(data: bytes) -> int:
    pos = 13 + (3 * (2 << (data[10] & 7)) if data[10] & 0x80 else 0)
    while data[pos] == 0x21:  # extensions: label, then sub-blocks to a zero-length one
        pos += 2
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    assert data[pos] == 0x2C
    return pos


def _gif_damage(size: int) -> dict[str, bytes]:
    still = VALID["GIF"](size)
    animated = VALID["GIF animated (first frame)"](size)
    first = _gif_first_descriptor(still)
    no_table = bytearray(still)
    no_table[10] &= 0x7F  # drop the global colour table flag; its bytes become records
    palette, indices = gif_parts(size)
    code_size = first + 10 + (3 * (2 << (still[first + 9] & 7)) if still[first + 9] & 0x80 else 0)
    return {
        "GIF: no colour table": b"GIF89a" + struct.pack("<HHBBB", size, size, 0, 0, 0) + still[first:],
        "GIF: global colour table flag dropped": bytes(no_table),
        "GIF: trailer missing": still[:-1],
        "GIF: unknown record after the image": still[:-1] + b"\x99",
        "GIF: zero-width frame": still[: first + 5] + b"\x00\x00" + still[first + 7 :],
        "GIF: LZW code size 12": still[:code_size] + b"\x0c" + still[code_size + 1 :],
        "GIF: cut after the descriptor": still[: first + 10],
        "GIF: cut at the LZW code size": still[:code_size],
        "GIF: second frame zero-width": animated[:-1]
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 0, 4, 0)
        + b"\x08\x00\x3b",
        "GIF: no image": still[:first] + b"\x3b",
        "GIF: frame outside the canvas": gif((size // 2, size // 2), palette, [(size, size, indices, None)]),
    }


def _bmp_damage(size: int) -> dict[str, bytes]:
    rgb = VALID["BMP RGB"](size)
    return {
        "BMP: 16-bit": _at(rgb, 28, b"\x10\x00", 2),
        "BMP: one byte too many": rgb + b"\x00",
        "BMP: compression flag set": _at(rgb, 30, b"\x01\x00\x00\x00", 4),
        "BMP: negative pixel offset": _at(rgb, 10, struct.pack("<i", -1), 4),
        "BMP: zero height": _at(rgb, 22, b"\x00\x00\x00\x00", 4),
        "BMP: top-down": _at(rgb, 22, struct.pack("<i", -size), 4),
    }


def _webp_damage(size: int) -> dict[str, bytes]:
    lossy, lossless = VALID["WebP lossy"](size), VALID["WebP lossless"](size)
    alpha = VALID["WebP lossy + alpha"](size)
    animated = VALID["WebP animated (first frame)"](size)
    anim = animated.index(b"ANIM")
    (anim_size,) = struct.unpack_from("<I", animated, anim + 4)
    riff_smaller = struct.pack("<I", len(animated) - 8 - 8 - anim_size)
    return {
        "WebP: RIFF size past the end": _at(lossy, 4, struct.pack("<I", len(lossy)), 4),
        "WebP: RIFF size shorter, trailing data": _at(lossy, 4, struct.pack("<I", len(lossy) - 8 - 2), 4)
        + b"xx",
        "WebP: VP8 chunk size past the end": _at(lossy, 16, struct.pack("<I", len(lossy)), 4),
        "WebP: VP8 signature broken": _at(lossy, 23, b"\x00", 1),
        "WebP: VP8 not a key frame": _at(lossy, 20, bytes([lossy[20] | 1]), 1),
        "WebP: VP8L signature broken": _at(lossless, 20, b"\x00", 1),
        "WebP: VP8L version bits set": _at(lossless, 24, bytes([lossless[24] | 0x20]), 1),
        "WebP: unknown first chunk": _at(lossy, 12, b"ABCD", 4),
        "WebP: alpha chunk size past the end": _at(
            alpha, alpha.index(b"ALPH") + 4, struct.pack("<I", 10**6), 4
        ),
        "WebP: animation without its ANIM chunk": _at(
            animated[:anim] + animated[anim + 8 + anim_size :], 4, riff_smaller, 4
        ),
        "WebP: VP8X size wrong": _at(lossy if lossy[12:16] == b"VP8X" else alpha, 16, b"\x0b", 1),
    }


def damaged_files(size: int = 64) -> dict[str, bytes]:
    """Every valid kind cut short, and corruptions of each format's headers and data."""
    damaged: dict[str, bytes] = {}
    for name, data in valid_files(size).items():
        damaged.update(_truncations(name, data))
    for build in (_jpeg_damage, _png_damage, _gif_damage, _bmp_damage, _webp_damage):
        damaged.update(build(size))
    return damaged


# --- decoder bombs ----------------------------------------------------------------------------


def progressive_jpeg_repeating_its_last_scan(side: int = 2048, repeats: int = 2000) -> bytes:
    """A flat progressive JPEG whose last scan is repeated: each scan is a few bytes,
    and libjpeg decodes each over every block of the image."""
    data = encode(Image.new("RGB", (side, side), (90, 120, 60)), "JPEG", progressive=True, quality=50)
    last = data.rfind(b"\xff\xda")
    return data[:-2] + data[last:-2] * repeats + b"\xff\xd9"


def png_with_compressed_text(chunks: int = 40, inflated: int = 7_900_000) -> bytes:
    """A 1x1 PNG carrying zTXt chunks of a few KB that inflate to ~8 MB each."""
    text = png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"\x00" * inflated, 9))
    return png_file(
        struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0), zlib.compress(b"\x00\x01\x02\x03"), text * chunks
    )


def png_with_data_past_its_image(inflated: int = 200_000_000) -> bytes:
    """A 1x1 PNG whose image data goes on, inflating to ``inflated`` bytes past its one row."""
    compressor = zlib.compressobj(9)
    stream = compressor.compress(b"\x00\x01\x02\x03")
    zeros = b"\x00" * (1 << 24)
    for _ in range(inflated >> 24):
        stream += compressor.compress(zeros)
    stream += compressor.flush()
    return png_file(struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0), stream)


BOMBS: dict[str, Callable[[], bytes]] = {
    "progressive JPEG of 2,000 repeated scans": progressive_jpeg_repeating_its_last_scan,
    "PNG of compressed text chunks": png_with_compressed_text,
    "PNG of image data past its last row": png_with_data_past_its_image,
}


# --- a split folder of such files ------------------------------------------------------------


def write_split_of_files(
    directory: Path, files: dict[str, bytes], split: str = "test", shards: int = 2
) -> Path:
    """A split folder (shards + manifest) whose records hold ``files`` as they are, by image
    name, dealt round-robin over ``shards`` shards; every chip labelled clear + primary.

    Written record by record, without the serialize stage's checks, so a test can store a
    file the check would refuse (a chip TensorFlow cannot decode) and see what reads it."""
    from amazonia.data.records.manifest import ChipOutcome, ShardInfo, build_manifest
    from amazonia.data.records.naming import shard_filename
    from amazonia.data.records.schema import make_example
    from amazonia.data.records.tfrecord import ShardFile
    from amazonia.data.vocabulary import LABELS_GROUND, LABELS_WEATHER

    directory.mkdir(parents=True, exist_ok=True)
    weather = tuple(int(t == "clear") for t in LABELS_WEATHER)
    ground = tuple(int(t == "primary") for t in LABELS_GROUND)
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
    outcomes = [ChipOutcome(name, weather, ground, None, "unchecked") for name in files]
    build_manifest(split, infos, outcomes).write(directory)
    return directory
