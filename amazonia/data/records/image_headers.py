"""Image sizes read from file headers the way TensorFlow's ``decode_image`` reads them.

No pixel is decoded here: the serving budget check runs this on every request image
and the serialize stage on every chip, before any decoder allocates memory. The
format is picked from the first bytes in TensorFlow's order (``ClassifyFileFormat``
in ``decode_image_op.cc``), so a file is measured as the decoder that would read it
sees it, whatever its name says. Pure Python, no PIL, no TensorFlow.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

JPEG, PNG, GIF, BMP, WEBP, JXL = "JPEG", "PNG", "GIF", "BMP", "WebP", "JPEG XL"
TF_FORMATS = (JPEG, PNG, GIF, BMP, WEBP, JXL)  # what decode_image reads; it refuses anything else

# Blocks walked before giving up on a header: a JPEG's segments before its frame
# header, a GIF's records and data sub-blocks. Real files need a few dozen, a GIF a
# few per 255 bytes (a 30 MB one about 120,000); a crafted file of 1-byte blocks would
# otherwise cost seconds of Python per request image.
MAX_HEADER_BLOCKS = 200_000

_JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
# SOFn markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_FILL = re.compile(rb"\xff+")  # libjpeg skips to an 0xFF, then past any 0xFF fill bytes
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD9)])  # TEM, RSTn, SOI: no length field
_WEBP_ANIMATION, _WEBP_ALPHA = 0x02, 0x10  # VP8X flags, as libwebp's WebPGetFeatures reads them
# xsize = ysize * num / den for the JPEG XL SizeHeader's ratio codes 1..7.
_JXL_RATIOS = ((1, 1), (12, 10), (4, 3), (3, 2), (16, 9), (5, 4), (2, 1))


@dataclass(frozen=True)
class GifFrame:
    left: int
    top: int
    width: int
    height: int
    colors: int  # entries of the colour table it is drawn with; 0 when it has none
    transparent_index: int | None  # from its Graphic Control Extension


@dataclass(frozen=True)
class ImageHeader:
    format: str  # one of TF_FORMATS
    width: int  # of the image decode_image returns; a GIF's canvas is its largest frame
    height: int
    gif_frames: tuple[GifFrame, ...] = ()  # a GIF's every frame, in file order
    gif_screen: tuple[int, int] = (0, 0)  # a GIF's logical screen (what PIL allocates)
    # An extended WebP flagged animated but not alpha: TensorFlow's decode_image(channels=0)
    # corrupts its heap on it (the process aborts); PIL reads it.
    webp_animated_without_alpha: bool = False

    @property
    def frames(self) -> int:
        return len(self.gif_frames) or 1

    @property
    def canvas(self) -> tuple[int, int]:
        """The largest image a decoder paints: for a GIF, TensorFlow's canvas or the
        logical screen PIL paints frame 0 on, whichever has more pixels."""
        return max((self.width, self.height), self.gif_screen, key=lambda size: size[0] * size[1])

    @property
    def decoded_pixels(self) -> int:
        """The most pixels one decoder holds for this file.

        A GIF goes through giflib's DGifSlurp, which decodes every frame before
        TensorFlow keeps the first one (``gif_io.cc``), so its frames count together,
        or its canvas if larger. Every other format decodes one image (an APNG,
        animated WebP or JPEG XL its first frame only).
        """
        width, height = self.canvas
        return max(width * height, sum(f.width * f.height for f in self.gif_frames))


def sniff_format(data: bytes) -> str | None:
    """The decoder ``tf.io.decode_image`` picks for ``data``; None when it refuses the file."""
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if data.startswith(b"GIF8"):
        return GIF
    if data.startswith(b"BM"):
        return BMP
    if data.startswith(b"RIFF") and len(data) > 12 and data[8:12] == b"WEBP":
        return WEBP
    if data.startswith(b"\xff\x0a") or data.startswith(_JXL_CONTAINER):
        return JXL
    return None


def read_header(data: bytes, max_gif_frames: int | None = None) -> ImageHeader | None:
    """The size of what TensorFlow would decode from ``data``.

    None when TensorFlow does not read the format, or when the header is cut short
    or malformed so that its decoder fails before allocating the image. A GIF's frames
    are read up to ``max_gif_frames + 1``: enough to tell there are too many, without
    walking millions of them. Raises :class:`HeaderTooLongError` past
    :data:`MAX_HEADER_BLOCKS`.
    """
    kind = sniff_format(data)
    if kind is None:
        return None
    try:
        if kind == GIF:
            return _gif(data, max_gif_frames)
        return {JPEG: _jpeg, PNG: _png, BMP: _bmp, WEBP: _webp, JXL: _jxl}[kind](data)
    except (IndexError, struct.error, _Truncated):
        return None


class HeaderTooLongError(Exception):
    """Reading the header takes more than MAX_HEADER_BLOCKS blocks."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.format = kind


class _Truncated(Exception):
    pass


def _jpeg(data: bytes) -> ImageHeader | None:
    # Walks the markers as libjpeg's next_marker does: bytes before an 0xFF and any
    # run of 0xFF fill bytes are skipped, so padding cannot hide the frame header.
    # A segment's length may not exceed the data (libjpeg then fails): no check needed.
    pos = 2
    for _ in range(MAX_HEADER_BLOCKS):
        fill = _JPEG_FILL.search(data, pos)
        if fill is None:
            return None
        pos = fill.end()
        marker = data[pos]
        pos += 1
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, pos + 3)
            return ImageHeader(JPEG, width, height)
        if marker in (0xD9, 0xDA):  # EOI or scan data before any frame header: libjpeg fails
            return None
        if marker == 0x00 or marker in _JPEG_STANDALONE:
            continue
        (length,) = struct.unpack_from(">H", data, pos)
        pos += length
    raise HeaderTooLongError(JPEG)


def _png(data: bytes) -> ImageHeader | None:
    # libpng insists on IHDR first; an APNG's frames are ignored, the default image is decoded.
    if data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    return ImageHeader(PNG, width, height)


def _bmp(data: bytes) -> ImageHeader | None:
    # TensorFlow reads these two fields at fixed offsets, whatever the header version.
    width, height = struct.unpack_from("<ii", data, 18)
    if width <= 0 or height == 0:
        return None
    return ImageHeader(BMP, width, abs(height))


def _webp(data: bytes) -> ImageHeader | None:
    # What WebPGetFeatures reports: the canvas of an extended (VP8X) file, animated or
    # not, else the size in the VP8 or VP8L bitstream header.
    chunk = data[12:16]
    animated_without_alpha = False
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        animated_without_alpha = data[20] & (_WEBP_ANIMATION | _WEBP_ALPHA) == _WEBP_ANIMATION
    elif chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = (v & 0x3FFF for v in struct.unpack_from("<HH", data, 26))
    elif chunk == b"VP8L":
        if data[20] != 0x2F:
            return None
        bits = int.from_bytes(data[21:25], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    else:
        return None
    return ImageHeader(WEBP, width, height, webp_animated_without_alpha=animated_without_alpha)


def _gif(data: bytes, max_frames: int | None) -> ImageHeader | None:
    screen = struct.unpack_from("<HH", data, 6)
    packed = data[10]
    global_colors = 2 << (packed & 7) if packed & 0x80 else 0
    pos = 13 + 3 * global_colors
    frames: list[GifFrame] = []
    transparent: int | None = None
    end = len(data)
    blocks_left = MAX_HEADER_BLOCKS
    # Records as DGifSlurp reads them. It keeps the frames read before an unknown
    # record or a cut, and TensorFlow decodes a GIF whose slurp failed after a frame
    # (gif_io.cc), so the walk stops there too and counts what came before: a cut
    # must not turn the frames before it into an unmeasured header.
    while pos < end and (max_frames is None or len(frames) <= max_frames):
        try:
            record = data[pos]
            if record == 0x2C:  # image descriptor
                left, top, width, height, flags = struct.unpack_from("<HHHHB", data, pos + 1)
                local_colors = 2 << (flags & 7) if flags & 0x80 else 0
                pos += 10 + 3 * local_colors + 1  # + LZW minimum code size
                frames.append(GifFrame(left, top, width, height, local_colors or global_colors, transparent))
                transparent = None
                pos, blocks_left = _skip_sub_blocks(data, pos, blocks_left)
            elif record == 0x21:  # extension
                if data[pos + 1] == 0xF9 and data[pos + 2] >= 4:  # Graphic Control Extension
                    transparent = data[pos + 6] if data[pos + 3] & 1 else None
                pos, blocks_left = _skip_sub_blocks(data, pos + 2, blocks_left)
            else:  # 0x3B trailer, or a record giflib refuses
                break
        except (IndexError, struct.error):
            break
    if not frames:
        return None
    width = max(f.width for f in frames)
    height = max(f.height for f in frames)
    return ImageHeader(GIF, width, height, tuple(frames), screen)


def _skip_sub_blocks(data: bytes, pos: int, blocks_left: int) -> tuple[int, int]:
    """The position after the sub-blocks at ``pos`` and their terminator; blocks left."""
    end = len(data)
    while pos < end:
        if blocks_left <= 0:
            raise HeaderTooLongError(GIF)
        blocks_left -= 1
        size = data[pos]
        pos += size + 1
        if not size:
            return pos, blocks_left
    return end, blocks_left


def _jxl(data: bytes) -> ImageHeader | None:
    codestream = data if data.startswith(b"\xff\x0a") else _jxl_codestream(data)
    if codestream is None or not codestream.startswith(b"\xff\x0a"):
        return None
    bits = _Bits(codestream[2:18])
    # The SizeHeader, as libjxl's headers.cc reads it.
    small = bits.read(1)
    if small:
        height = (bits.read(5) + 1) * 8
    else:
        height = bits.u32_size()
    ratio = bits.read(3)
    if ratio:
        num, den = _JXL_RATIOS[ratio - 1]
        width = height * num // den
    elif small:
        width = (bits.read(5) + 1) * 8
    else:
        width = bits.u32_size()
    return ImageHeader(JXL, width, height)


def _jxl_codestream(data: bytes) -> bytes | None:
    # The ISO BMFF container: the codestream sits in a jxlc box or is split over
    # jxlp boxes (each opening with a 4-byte part index), the first of which holds the header.
    pos, end = 0, len(data)
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            return None
        if kind == b"jxlc":
            return data[pos + header : pos + size]
        if kind == b"jxlp":
            return data[pos + header + 4 : pos + size]
        pos += size
    return None


class _Bits:
    """Least-significant-bit-first reader, as JPEG XL packs its header fields."""

    def __init__(self, data: bytes):
        self._value = int.from_bytes(data, "little")
        self._limit = 8 * len(data)
        self._pos = 0

    def read(self, count: int) -> int:
        if self._pos + count > self._limit:
            raise _Truncated
        value = (self._value >> self._pos) & ((1 << count) - 1)
        self._pos += count
        return value

    def u32_size(self) -> int:
        """``1 + U32(Bits(9), Bits(13), Bits(18), Bits(30))``: a 2-bit selector picks the width."""
        return 1 + self.read((9, 13, 18, 30)[self.read(2)])
