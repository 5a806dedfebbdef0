"""Whether TensorFlow's ``decode_image`` accepts a file, read from its structure alone.

``tf.io.decode_image(channels=0, expand_animations=False)`` (what the model decodes
with) refuses a file its decoder finds incomplete or inconsistent: libjpeg-turbo 2.1
stops on a marker it cannot parse and reads every file to its end-of-image marker,
libpng 1.6 on a bad critical chunk or missing image data, giflib on a frame it cannot
start, TensorFlow itself on a BMP whose size does not match its header, libwebp on a
RIFF or chunk size past the end of the data. This module walks each format as its
decoder does, without decoding a pixel, and says why a file would be refused
(:class:`Undecodable`), or what decoding it costs beyond its pixels
(:class:`Structure`: a JPEG's scans, a PNG's compressed metadata and image data past
the image), for :mod:`amazonia.data.records.images` to hold against its limits.

Pure Python, no TensorFlow, no PIL: a 21 KB JPEG chip takes a few microseconds (one
marker walk, one regular-expression search through its entropy data). A PNG's image
data is inflated (zlib, in pieces, nothing kept), because only that shows whether it
holds every row.

What only decoding the compressed pixels shows is not seen here; ``tests/
test_decode_parity.py`` measures it against TensorFlow. A corrupt JPEG entropy
segment is accepted by both (libjpeg warns and fills the rest with grey), but a
corrupt VP8/VP8L bitstream inside a well-formed WebP, a GIF whose LZW data uses
colours past its colour table, and a JPEG XL codestream cut short or corrupt inside
its boxes are accepted here and refused by TensorFlow.
"""

from __future__ import annotations

import functools
import re
import struct
import zlib
from dataclasses import dataclass

from amazonia.data.records import image_headers
from amazonia.data.records.image_headers import BMP, GIF, JPEG, JXL, MAX_HEADER_BLOCKS, PNG, WEBP


class Undecodable(Exception):
    """TensorFlow's decoder refuses the file; the message says what is wrong with it."""


@dataclass(frozen=True)
class Caps:
    """How far to count what decoding costs beyond the pixels: a count past its cap
    stops the walk (one more than the cap is reported), so a hostile file costs this
    module no more than the cap."""

    jpeg_scans: int
    png_metadata_bytes: int
    png_surplus_bytes: int


@dataclass(frozen=True)
class Structure:
    """What decoding the file costs beyond its pixels; zero where the format has no such cost."""

    jpeg_scans: int = 0  # SOS segments: libjpeg decodes each over every block of its components
    png_metadata_bytes: int = 0  # zTXt, compressed iTXt and iCCP, inflated: libpng inflates them all
    png_surplus_bytes: int = 0  # inflated image data past the last row: libpng inflates it too


def inspect(data: bytes, kind: str, caps: Caps) -> Structure:
    """The structure of ``data``, a file of format ``kind`` (:func:`image_headers.sniff_format`).

    Raises:
        Undecodable: TensorFlow's decoder would refuse the file (the message says why).
        image_headers.HeaderTooLongError: the file has more blocks than
            :data:`image_headers.MAX_HEADER_BLOCKS`.
    """
    try:
        if kind == JPEG:
            return _Jpeg.start(data, caps.jpeg_scans).walk()
        if kind == PNG:
            return _png(data, caps)
        if kind == GIF:
            _gif(data)
        elif kind == BMP:
            _bmp(data)
        elif kind == WEBP:
            _webp(data)
        elif kind == JXL:
            _jxl(data)
    except (IndexError, struct.error):
        raise Undecodable(f"a {kind} file cut short inside its headers") from None
    return Structure()


# --- JPEG: libjpeg-turbo 2.1's marker reader (jdmarker.c) and the checks it makes ----------

# A marker ends a scan's entropy data: 0xFF, then anything but a stuffed zero, a fill
# byte or a restart marker (the entropy decoder reads through RSTn, and past any
# marker until the next one libjpeg's marker reader then looks at).
_JPEG_SCAN_END = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
_JPEG_NEXT_MARKER = re.compile(rb"\xff+([^\x00\xff])")  # next_marker: skip garbage, fill, FF00
_SOF_SUPPORTED = {
    0xC0: (False, False),
    0xC1: (False, False),
    0xC2: (True, False),
    0xC9: (False, True),
    0xCA: (True, True),
}
_SOF_UNSUPPORTED = frozenset([0xC3, 0xC5, 0xC6, 0xC7, 0xC8, 0xCB, 0xCD, 0xCE, 0xCF])
_APPN_COM = frozenset([*range(0xE0, 0xF0), 0xFE])
_PARAMETERLESS = frozenset([*range(0xD0, 0xD8), 0x01])  # RSTn and TEM, ignored between scans
_MAX_DIMENSION = 65500  # JPEG_MAX_DIMENSION
_MAX_COMPONENTS = 10
_MAX_COMPS_IN_SCAN = 4
_MAX_BLOCKS_IN_MCU = 10  # D_MAX_BLOCKS_IN_MCU
_NUM_TABLES = 4  # Huffman and quantization table slots


# Headers (SOI to the end of the first SOS segment) of single-scan files that passed:
# bytes, not a digest, so a hit is the same bytes. A few hundred bytes each.
_SINGLE_SCAN_HEADERS: set[bytes] = set()
_MAX_CACHED_HEADERS = 1024


@dataclass
class _Component:
    ident: int
    h: int
    v: int
    quant: int
    quant_latched: bool = False


class _Jpeg:
    """One file through libjpeg-turbo's reading, as ``decode_image`` drives it: headers
    to the first SOS, then every scan (a progressive or multi-scan file is read whole
    before a pixel is output), then the end-of-image marker, which
    ``jpeg_finish_decompress`` reads too. TensorFlow's memory source has no recovery:
    data that ends before EOI is an error."""

    def __init__(self, data: bytes, max_scans: int):
        self.data = data
        self.max_scans = max_scans
        self.pos = 2
        self.components: list[_Component] = []
        self.progressive = self.arithmetic = False
        self.single_scan: bool | None = None  # known at the first SOS
        self.huffman: dict[tuple[bool, int], tuple[bytes, bytes]] = {}  # (is_dc, slot) -> (counts, symbols)
        self.quant: set[int] = set()
        self.scans = 0

    @classmethod
    def start(cls, data: bytes, max_scans: int) -> _Jpeg:
        """A reader at the start of ``data``, or past its headers if they are those of a
        single-scan file read before: every chip from one encoder has the same headers,
        byte for byte, up to its scan's entropy data, and reading them is most of the work."""
        jpeg = cls(data, max_scans)
        sos = data.find(b"\xff\xda")
        if sos > 0:
            end = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
            if data[:end] in _SINGLE_SCAN_HEADERS:
                # As after that first scan header; what follows it in a single-scan file is
                # checked without the earlier state: a second frame, scan or SOI is refused.
                jpeg.components, jpeg.single_scan, jpeg.scans, jpeg.pos = (
                    [_Component(-1, 1, 1, 0)],
                    True,
                    1,
                    end,
                )
                jpeg._skip_entropy_data()
        return jpeg

    def walk(self) -> Structure:
        for _ in range(MAX_HEADER_BLOCKS):
            marker = self._next_marker()
            if marker == 0xD9:  # EOI
                if self.single_scan is None:
                    raise Undecodable(
                        "a JPEG with a frame header but no scan"
                        if self.components
                        else "a JPEG without an image"
                    )
                return Structure(jpeg_scans=self.scans)
            if marker == 0xDA:
                self._sos()
                if self.single_scan and len(_SINGLE_SCAN_HEADERS) < _MAX_CACHED_HEADERS:
                    _SINGLE_SCAN_HEADERS.add(self.data[: self.pos])
                if self.scans > self.max_scans:
                    return Structure(jpeg_scans=self.scans)
                self._skip_entropy_data()
            elif marker in _SOF_SUPPORTED:
                self._sof(*_SOF_SUPPORTED[marker])
            elif marker in _SOF_UNSUPPORTED:
                raise Undecodable(
                    f"a JPEG of a process libjpeg does not decode "
                    f"(lossless or hierarchical: SOF{marker - 0xC0})"
                )
            elif marker == 0xC4:
                self._dht()
            elif marker == 0xDB:
                self._dqt()
            elif marker == 0xCC:
                self._dac()
            elif marker == 0xDD:
                if self._length() != 4:
                    raise Undecodable("a JPEG with a malformed restart interval (DRI) segment")
                self.pos += 4
            elif marker in _APPN_COM or marker == 0xDC:  # DNL: skipped
                self._skip_variable()
            elif marker == 0xD8:
                raise Undecodable("a JPEG with two start-of-image markers")
            elif marker not in _PARAMETERLESS:
                raise Undecodable(f"a JPEG with an unknown marker 0xFF{marker:02X}")
        raise image_headers.HeaderTooLongError(JPEG)

    # -- reading ----------------------------------------------------------------------------

    def _need(self, end: int) -> None:
        if end > len(self.data):
            raise Undecodable("a JPEG cut short: its data ends before the end-of-image marker")

    def _next_marker(self) -> int:
        match = _JPEG_NEXT_MARKER.search(self.data, self.pos)
        if match is None:
            raise Undecodable("a JPEG cut short: its data ends before the end-of-image marker")
        self.pos = match.end()
        return match.group(1)[0]

    def _length(self) -> int:
        self._need(self.pos + 2)
        return int.from_bytes(self.data[self.pos : self.pos + 2], "big")

    def _segment(self) -> tuple[int, int]:
        """The parameters of the marker at ``pos``: (start, end); checks they are all there."""
        length = self._length()
        start, end = self.pos + 2, self.pos + max(length, 2)
        self._need(end)
        return start, end

    def _skip_variable(self) -> None:
        length = self._length()
        self.pos += max(length, 2)  # a length under 2 skips only itself
        self._need(self.pos)

    def _skip_entropy_data(self) -> None:
        match = _JPEG_SCAN_END.search(self.data, self.pos)
        if match is None:
            raise Undecodable("a JPEG cut short: its data ends before the end-of-image marker")
        self.pos = match.start()

    # -- segments ---------------------------------------------------------------------------

    def _sof(self, progressive: bool, arithmetic: bool) -> None:
        start, end = self._segment()
        length = end - self.pos
        precision, height, width, count = struct.unpack_from(">BHHB", self.data, start)
        if self.components:
            raise Undecodable("a JPEG with two frame headers (SOF)")
        if height == 0 or width == 0 or count == 0:
            raise Undecodable("a JPEG whose frame header declares an empty image")
        if length != 8 + 3 * count:
            raise Undecodable("a JPEG with a malformed frame header (SOF)")
        self.precision, self.width, self.height = precision, width, height
        self.progressive, self.arithmetic = progressive, arithmetic
        for i in range(count):
            ident, sampling, quant = self.data[start + 6 + 3 * i : start + 9 + 3 * i]
            self.components.append(_Component(ident, sampling >> 4, sampling & 15, quant))
        self.pos = end

    def _sos(self) -> None:
        if not self.components:
            raise Undecodable("a JPEG with a scan before its frame header")
        if self.single_scan:
            # Checked first (libjpeg reads the scan header before it refuses the scan), so
            # the reason does not depend on whether the headers were read or remembered.
            raise Undecodable("a JPEG with a second scan where its first held every component")
        start, end = self._segment()
        length = end - self.pos
        count = self.data[start]
        if length != 2 * count + 6 or not 1 <= count <= _MAX_COMPS_IN_SCAN:
            raise Undecodable("a JPEG with a malformed scan header (SOS)")
        in_scan: list[tuple[_Component, int, int]] = []
        for i in range(count):
            ident, tables = self.data[start + 1 + 2 * i : start + 3 + 2 * i]
            # get_sos: the first of the first four components with this id whose index is
            # not yet a filled scan slot (libjpeg's test, which refuses some reorderings)
            found = None
            for index, component in enumerate(self.components[:_MAX_COMPS_IN_SCAN]):
                if component.ident == ident and index >= i:
                    found = component
                    break
            if found is None or any(c is found for c, _, _ in in_scan):
                raise Undecodable("a JPEG whose scan names a component its frame does not have")
            in_scan.append((found, tables >> 4, tables & 15))
        ss, se, approximation = self.data[end - 3 : end]
        ah, al = approximation >> 4, approximation & 15
        self.pos = end
        if self.single_scan is None:
            self._first_scan_setup(count)
        self.scans += 1
        self._start_scan(in_scan, ss, se, ah, al)

    def _first_scan_setup(self, count: int) -> None:
        """libjpeg's initial_setup and jpeg_start_decompress, as TensorFlow asks for output."""
        if self.width > _MAX_DIMENSION or self.height > _MAX_DIMENSION:
            raise Undecodable(f"a JPEG wider or taller than libjpeg's {_MAX_DIMENSION:,} pixels")
        if self.precision != 8:
            raise Undecodable(f"a {self.precision}-bit JPEG: TensorFlow's libjpeg reads only 8-bit samples")
        if len(self.components) > _MAX_COMPONENTS:
            raise Undecodable("a JPEG of more than 10 components")
        if any(not (1 <= c.h <= 4 and 1 <= c.v <= 4) for c in self.components):
            raise Undecodable("a JPEG with invalid sampling factors")
        if len(self.components) not in (1, 3, 4):
            # decode_image(channels=0) asks for min(components, 3) channels: 2 is no colour
            # space, 5 or more none libjpeg converts to RGB.
            raise Undecodable(f"a JPEG of {len(self.components)} components (TensorFlow reads 1, 3 or 4)")
        max_h = max(c.h for c in self.components)
        max_v = max(c.v for c in self.components)
        if any(max_h % c.h or max_v % c.v for c in self.components):
            raise Undecodable("a JPEG whose chroma sampling libjpeg cannot upsample (a fractional ratio)")
        self.single_scan = count == len(self.components) and not self.progressive
        if not self.arithmetic and not self.progressive:
            # The sequential Huffman decoder (not the progressive one) fills empty slots 0
            # and 1 with the standard tables, as Motion-JPEG frames omit them.
            for is_dc in (True, False):
                for slot in (0, 1):
                    self.huffman.setdefault((is_dc, slot), _STANDARD_TABLE)

    def _start_scan(
        self, in_scan: list[tuple[_Component, int, int]], ss: int, se: int, ah: int, al: int
    ) -> None:
        """per_scan_setup, latch_quant_tables and the entropy decoder's start_pass."""
        if len(in_scan) > 1 and sum(c.h * c.v for c, _, _ in in_scan) > _MAX_BLOCKS_IN_MCU:
            raise Undecodable("a JPEG whose scan has more than 10 blocks per MCU")
        for component, _, _ in in_scan:
            if not component.quant_latched:
                if component.quant >= _NUM_TABLES or component.quant not in self.quant:
                    raise Undecodable(f"a JPEG whose quantization table {component.quant} is not defined")
                component.quant_latched = True
        if self.progressive:
            dc_band = ss == 0
            bad = se != 0 if dc_band else (ss > se or se > 63 or len(in_scan) != 1)
            if bad or (ah != 0 and al != ah - 1) or al > 13:
                raise Undecodable("a progressive JPEG with invalid scan parameters")
        if self.arithmetic:
            return
        for _, dc_table, ac_table in in_scan:
            if self.progressive:
                if ss == 0 and ah == 0:
                    self._check_huffman(True, dc_table)
                elif ss != 0:
                    self._check_huffman(False, ac_table)
            else:
                self._check_huffman(True, dc_table)
                self._check_huffman(False, ac_table)

    def _check_huffman(self, is_dc: bool, slot: int) -> None:
        """jpeg_make_d_derived_tbl: the table exists, its codes fit, DC symbols are 0..15."""
        table = self.huffman.get((is_dc, slot)) if slot < _NUM_TABLES else None
        if table is None:
            raise Undecodable(f"a JPEG whose Huffman table {slot} is not defined")
        if not _valid_huffman_table(is_dc, *table):
            raise Undecodable("a JPEG with an invalid Huffman table")

    def _dht(self) -> None:
        start, end = self._segment()
        pos, left = start, end - start
        while left > 16:
            index = self.data[pos]
            counts = self.data[pos + 1 : pos + 17]
            total = sum(counts)
            left -= 17
            if total > 256 or total > left:
                raise Undecodable("a JPEG with an invalid Huffman table")
            symbols = self.data[pos + 17 : pos + 17 + total]
            left -= total
            pos += 17 + total
            is_dc, slot = not index & 0x10, index & ~0x10
            if slot >= _NUM_TABLES:
                raise Undecodable("a JPEG with an invalid Huffman table index")
            self.huffman[(is_dc, slot)] = (counts, symbols)
        if left != 0:
            raise Undecodable("a JPEG with a malformed Huffman table (DHT) segment")
        self.pos = end

    def _dqt(self) -> None:
        start, end = self._segment()
        pos, left = start, end - start
        while left > 0:
            precision, slot = self.data[pos] >> 4, self.data[pos] & 15
            if slot >= _NUM_TABLES:
                raise Undecodable("a JPEG with an invalid quantization table index")
            size = 1 + (128 if precision else 64)
            self._need(pos + size)  # libjpeg reads the table whole, past the segment if need be
            self.quant.add(slot)
            pos += size
            left -= size
        if left != 0:
            raise Undecodable("a JPEG with a malformed quantization table (DQT) segment")
        self.pos = max(end, pos)

    def _dac(self) -> None:
        start, end = self._segment()
        pos, left = start, end - start
        while left > 0:
            self._need(pos + 2)
            index, value = self.data[pos : pos + 2]
            if index >= 32 or (index < 16 and (value & 15) > (value >> 4)):
                raise Undecodable("a JPEG with an invalid arithmetic-coding (DAC) segment")
            pos += 2
            left -= 2
        if left != 0:
            raise Undecodable("a JPEG with a malformed arithmetic-coding (DAC) segment")
        self.pos = max(end, pos)


@functools.lru_cache(maxsize=1024)  # encoders reuse a handful of tables
def _valid_huffman_table(is_dc: bool, counts: bytes, symbols: bytes) -> bool:
    code = 0
    for bits, count in enumerate(counts, start=1):
        code += count
        if code >= 1 << bits:  # every code fits its length, none is all ones
            return False
        code <<= 1
    return not is_dc or max(symbols, default=0) <= 15


# Any valid table will do: only its presence and validity are checked.
_STANDARD_TABLE = (bytes([0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]), bytes(range(12)))


# --- PNG: libpng 1.6's reading (png_read_info, png_read_row, png_read_end) -----------------

_PNG_COLOUR_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_USER_LIMIT = 1_000_000  # PNG_USER_WIDTH_MAX and PNG_USER_HEIGHT_MAX
_PNG_CHUNK_NAME = re.compile(rb"[A-Za-z]{4}")
_PNG_METADATA = (b"zTXt", b"iTXt", b"iCCP")
# Adam7: (x0, y0, dx, dy) of each pass
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_INFLATE_PIECE = 1 << 20  # inflated at a time: memory stays flat whatever the image


def _png(data: bytes, caps: Caps) -> Structure:
    chunks = _png_chunks(data)
    name, start, length = chunks[0]
    if name != b"IHDR" or length != 13:
        raise Undecodable("a PNG whose first chunk is not a valid IHDR")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(
        ">IIBBBBB", data, start
    )
    if not (0 < width <= _PNG_USER_LIMIT and 0 < height <= _PNG_USER_LIMIT):
        raise Undecodable(f"a PNG of {width}x{height} pixels: libpng reads 1 to 1,000,000 pixels a side")
    if depth not in _PNG_COLOUR_DEPTHS.get(colour, ()) or compression or filtering or interlace > 1:
        raise Undecodable("a PNG with an invalid header (bit depth, colour type or methods)")
    palette, idat, metadata, seen_idat_end = False, [], 0, False
    for name, start, length in chunks[1:]:
        if name == b"IDAT":
            if colour == 3 and not palette:
                raise Undecodable("a palette PNG without a palette before its image data")
            if not seen_idat_end:
                idat.append((start, length))
            continue
        if idat:
            seen_idat_end = True  # the image data is the first run of consecutive IDATs
        if name == b"PLTE":
            if palette:
                raise Undecodable("a PNG with two palettes")
            palette = not idat  # after the image data libpng ignores it
            if palette and colour == 3 and (length == 0 or length % 3 or length // 3 > 1 << depth):
                raise Undecodable("a PNG with an invalid palette")
        elif name == b"IEND":
            break
        elif name in _PNG_METADATA and metadata <= caps.png_metadata_bytes:
            metadata += _inflated_metadata(
                data[start : start + length], name, caps.png_metadata_bytes - metadata + 1
            )
    if not idat:
        raise Undecodable("a PNG without image data")
    rows = _png_rows(width, height, depth * _PNG_CHANNELS[colour], interlace)
    stream = b"".join(data[start : start + length] for start, length in idat)
    surplus = _inflate_image(stream, rows, caps.png_surplus_bytes)
    return Structure(png_metadata_bytes=metadata, png_surplus_bytes=surplus)


def _png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """``(name, data start, length)`` of every chunk to IEND, checked as libpng reads them."""
    chunks, pos, end = [], 8, len(data)
    for _ in range(MAX_HEADER_BLOCKS):
        if pos + 8 > end:
            raise Undecodable("a PNG cut short: its data ends before the IEND chunk")
        length, name = struct.unpack_from(">I4s", data, pos)
        if length > 0x7FFFFFFF or not _PNG_CHUNK_NAME.fullmatch(name):
            raise Undecodable("a PNG with a malformed chunk header")
        if pos + 12 + length > end:
            raise Undecodable("a PNG cut short: its data ends before the IEND chunk")
        critical = name[0] < 0x60
        if critical and name not in (b"IHDR", b"PLTE", b"IDAT", b"IEND"):
            raise Undecodable(f"a PNG with an unknown critical chunk {name.decode()}")
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if critical and zlib.crc32(name + body) != crc:
            # libpng ignores an ancillary chunk with a bad CRC, and a PLTE in a truecolour image
            if not (name == b"PLTE" and chunks and data[chunks[0][1] + 9] != 3):
                raise Undecodable(f"a PNG whose {name.decode()} chunk fails its CRC (corrupt)")
        chunks.append((name, pos + 8, length))
        pos += 12 + length
        if name == b"IEND":
            return chunks
    raise image_headers.HeaderTooLongError(PNG)


def _inflated_metadata(body: bytes, name: bytes, cap: int) -> int:
    """How many bytes libpng inflates from a zTXt, iTXt or iCCP chunk, counted up to ``cap``."""
    keyword_end = body.find(b"\x00")
    if keyword_end < 0:
        return 0
    if name == b"iTXt":
        if body[keyword_end + 1 : keyword_end + 2] != b"\x01":  # not compressed
            return 0
        language_end = body.find(b"\x00", keyword_end + 3)
        translated_end = body.find(b"\x00", language_end + 1) if language_end >= 0 else -1
        if translated_end < 0:
            return 0
        compressed = body[translated_end + 1 :]
    else:
        compressed = body[keyword_end + 2 :]
    inflater = zlib.decompressobj()
    total = 0
    try:
        while compressed and total < cap:
            total += len(inflater.decompress(compressed, min(_INFLATE_PIECE, cap - total)))
            compressed = inflater.unconsumed_tail
    except zlib.error:
        pass  # libpng gives up on the chunk with a warning
    return total


def _png_rows(width: int, height: int, bits: int, interlace: int) -> list[tuple[int, int]]:
    """``(rows, bytes per row with its filter byte)`` of each pass of the inflated image."""
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    rows = []
    for x0, y0, dx, dy in passes:
        pass_width, pass_height = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pass_width > 0 and pass_height > 0:
            rows.append((pass_height, 1 + (pass_width * bits + 7) // 8))
    return rows


def _inflate_image(stream: bytes, rows: list[tuple[int, int]], surplus_cap: int) -> int:
    """Inflate the image data, checking every row is there with a valid filter type;
    returns the bytes inflated past the last row, up to ``surplus_cap + 1``.

    libpng refuses a stream that ends or breaks before the last row, or whose zlib
    checksum fails; data past the last row it inflates and discards with a warning.
    """
    row_starts = _filter_positions(rows)
    expected = sum(count * size for count, size in rows)
    inflater = zlib.decompressobj()
    pending, produced = stream, 0
    try:
        while produced < expected + surplus_cap + 1:
            piece = inflater.decompress(pending, _INFLATE_PIECE)
            pending = inflater.unconsumed_tail
            if not piece:
                break
            _check_filters(piece, produced, row_starts, expected)
            produced += len(piece)
    except zlib.error:
        raise Undecodable("a PNG whose image data is corrupt (its zlib stream fails to inflate)") from None
    if produced < expected:
        raise Undecodable("a PNG cut short or corrupt: its image data ends before the last row")
    if produced - expected <= surplus_cap and not inflater.eof:
        raise Undecodable("a PNG whose image data stream does not end (cut short)")
    return produced - expected


def _filter_positions(rows: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """``(offset of the first row, row size, end of the pass)`` of each pass."""
    positions, offset = [], 0
    for count, size in rows:
        positions.append((offset, size, offset + count * size))
        offset += count * size
    return positions


def _check_filters(piece: bytes, at: int, passes: list[tuple[int, int, int]], expected: int) -> None:
    """libpng refuses a row whose filter type byte is over 4."""
    end = min(at + len(piece), expected)
    for first, size, pass_end in passes:
        if pass_end <= at or first >= end:
            continue
        skip = (first - at) if first >= at else (-(at - first)) % size
        stop = min(pass_end, end) - at
        if skip < stop and max(piece[skip:stop:size]) > 4:
            raise Undecodable("a PNG with an invalid row filter type (corrupt image data)")


# --- GIF: giflib 5's DGifSlurp and TensorFlow's gif_io.cc ----------------------------------


def _gif(data: bytes) -> None:
    """giflib reads records until the trailer or an error; the frame it was reading then
    (cut short, of no pixels, of an invalid LZW code size) is dropped, and TensorFlow
    decodes the first complete one, which needs a colour table."""
    if len(data) < 13:
        raise Undecodable("a GIF cut short inside its header")
    packed = data[10]
    global_colors = 2 << (packed & 7) if packed & 0x80 else 0
    pos = 13 + 3 * global_colors
    if pos > len(data):
        raise Undecodable("a GIF cut short inside its colour table")
    first_has_colours: bool | None = None
    end = len(data)
    for _ in range(MAX_HEADER_BLOCKS):
        if pos >= end or data[pos] not in (0x2C, 0x21):  # cut, trailer or an unknown record: done
            break
        if data[pos] == 0x21:
            pos = _gif_sub_blocks(data, pos + 2)
            if pos < 0:
                break
            continue
        if pos + 10 > end:
            break
        width, height, flags = struct.unpack_from("<HHB", data, pos + 5)
        local_colors = 2 << (flags & 7) if flags & 0x80 else 0
        code_size_at = pos + 10 + 3 * local_colors
        if code_size_at >= end:
            break
        if width == 0 or height == 0 or data[code_size_at] > 8:
            break  # a frame giflib cannot start: it stops, and drops it
        pos = _gif_sub_blocks(data, code_size_at + 1)
        if pos < 0:
            break  # this frame's image data is cut short: giflib drops it
        if first_has_colours is None:
            first_has_colours = bool(local_colors or global_colors)
    else:
        raise image_headers.HeaderTooLongError(GIF)
    if first_has_colours is None:
        raise Undecodable("a GIF without a complete frame")
    if not first_has_colours:
        raise Undecodable("a GIF whose first frame has no colour table")


def _gif_sub_blocks(data: bytes, pos: int) -> int:
    """The position after the data sub-blocks at ``pos``, or -1 if the file ends inside them."""
    end = len(data)
    for _ in range(MAX_HEADER_BLOCKS):
        if pos >= end:
            return -1
        size = data[pos]
        pos += size + 1
        if not size:
            return pos
    raise image_headers.HeaderTooLongError(GIF)


# --- BMP: TensorFlow's own DecodeBmpV2 -----------------------------------------------------


def _bmp(data: bytes) -> None:
    if len(data) < 32:
        raise Undecodable(f"a BMP of {len(data)} bytes, shorter than its header")
    (offset,) = struct.unpack_from("<i", data, 10)
    width, height = struct.unpack_from("<ii", data, 18)
    (bits,) = struct.unpack_from("<h", data, 28)
    channels = int(bits / 8)  # C's division: toward zero
    if channels not in (1, 3, 4):
        raise Undecodable(f"a {bits}-bit BMP: TensorFlow reads only 8-, 24- and 32-bit BMPs")
    if width <= 0 or height == 0 or offset < 0 or width * abs(height) >= (2**31 - 1) // 8:
        raise Undecodable("a BMP with an invalid size or pixel offset in its header")
    row = (channels * width + 3) // 4 * 4
    if len(data) != offset + row * abs(height):
        raise Undecodable(
            "a compressed, cut or malformed BMP (its size does not match its header; TensorFlow reads "
            "uncompressed pixels only)"
        )


# --- WebP: libwebp's WebPGetFeatures and WebPDecode (still), WebPDemux (animated) -----------

_WEBP_ANIMATION = 0x02
_MAX_CHUNK_PAYLOAD = 0xFFFFFFFF - 8 - 1


def _webp(data: bytes) -> None:
    riff_size = struct.unpack_from("<I", data, 4)[0]
    if riff_size < 12 or riff_size > _MAX_CHUNK_PAYLOAD:
        raise Undecodable("a WebP with an invalid RIFF size")
    if riff_size > len(data) - 8:
        raise Undecodable("a WebP cut short: its data ends before the size its RIFF header gives")
    end = 8 + riff_size
    if data[12:16] != b"VP8X":  # the simple format: the image chunk comes first
        _vp8_header(data, *_riff_chunks(data, 12, end, stop_at_image=True)[0])
        return
    (size,) = struct.unpack_from("<I", data, 16)
    if size != 10 or len(data) < 30:
        raise Undecodable("a WebP with an invalid extended header (VP8X)")
    if data[20] & _WEBP_ANIMATION:
        _webp_animation(data, _riff_chunks(data, 30, end))
        return
    # a still image: optional chunks, then the image chunk; what follows it is not read
    chunks = _riff_chunks(data, 30, end, stop_at_image=True)
    if not chunks or chunks[-1][0] not in (b"VP8 ", b"VP8L"):
        raise Undecodable("a WebP without an image chunk")
    _vp8_header(data, *chunks[-1])


def _riff_chunks(
    data: bytes, pos: int, end: int, stop_at_image: bool = False
) -> list[tuple[bytes, int, int]]:
    """``(name, data start, size)`` of the chunks in ``data[pos:end]``, each padded to
    even; with ``stop_at_image``, up to the first image chunk (VP8 or VP8L)."""
    chunks: list[tuple[bytes, int, int]] = []
    for _ in range(MAX_HEADER_BLOCKS):
        if pos >= end or (stop_at_image and chunks and chunks[-1][0] in (b"VP8 ", b"VP8L")):
            if not chunks:
                raise Undecodable("a WebP without an image chunk")
            return chunks
        if pos + 8 > end:
            raise Undecodable("a WebP cut short inside a chunk header")
        name, size = struct.unpack_from("<4sI", data, pos)
        if pos + 8 + size > end:
            raise Undecodable(f"a WebP whose {name.decode('latin-1')!r} chunk runs past the end of the file")
        chunks.append((name, pos + 8, size))
        pos += 8 + size + (size & 1)
    raise image_headers.HeaderTooLongError(WEBP)


def _vp8_header(data: bytes, name: bytes, start: int, size: int) -> None:
    """VP8GetInfo / VP8LGetInfo: the bitstream's own header."""
    if name == b"VP8L":
        if size < 5 or data[start] != 0x2F or data[start + 4] >> 5:
            raise Undecodable("a WebP whose lossless (VP8L) bitstream header is invalid")
        return
    if size < 10:
        raise Undecodable("a WebP whose VP8 bitstream is cut short")
    tag = int.from_bytes(data[start : start + 3], "little")
    key_frame, version, shown, partition = not tag & 1, (tag >> 1) & 7, (tag >> 4) & 1, tag >> 5
    width, height = (v & 0x3FFF for v in struct.unpack_from("<HH", data, start + 6))
    if (
        not key_frame
        or version > 3
        or not shown
        or partition > size - 10
        or data[start + 3 : start + 6] != b"\x9d\x01\x2a"
        or not width
        or not height
    ):
        raise Undecodable("a WebP whose VP8 bitstream header is invalid or cut short")


def _webp_animation(data: bytes, chunks: list[tuple[bytes, int, int]]) -> None:
    """WebPDemux's validation of an animation: an ANIM chunk, then frames (ANMF) each
    holding an image chunk and lying inside the canvas."""
    canvas_width = 1 + int.from_bytes(data[24:27], "little")
    canvas_height = 1 + int.from_bytes(data[27:30], "little")
    names = [name for name, _, _ in chunks]
    if b"ANIM" not in names or names.index(b"ANIM") > (
        names.index(b"ANMF") if b"ANMF" in names else len(names)
    ):
        raise Undecodable("an animated WebP without an animation header (ANIM) before its frames")
    frames = [(start, size) for name, start, size in chunks if name == b"ANMF"]
    if not frames:
        raise Undecodable("an animated WebP without frames")
    for start, size in frames:
        if size < 16:
            raise Undecodable("an animated WebP with a malformed frame (ANMF)")
        x, y = (
            2 * int.from_bytes(data[start : start + 3], "little"),
            2 * int.from_bytes(data[start + 3 : start + 6], "little"),
        )
        width = 1 + int.from_bytes(data[start + 6 : start + 9], "little")
        height = 1 + int.from_bytes(data[start + 9 : start + 12], "little")
        if x + width > canvas_width or y + height > canvas_height:
            raise Undecodable("an animated WebP with a frame outside its canvas")
        inner = _riff_chunks(data, start + 16, start + size)
        image = next(((name, s, n) for name, s, n in inner if name in (b"VP8 ", b"VP8L")), None)
        if image is None:
            raise Undecodable("an animated WebP with a frame without an image chunk")
        _vp8_header(data, *image)


# --- JPEG XL: the container's boxes; the codestream is libjxl's to judge ------------------


def _jxl(data: bytes) -> None:
    if data.startswith(b"\xff\x0a"):
        return
    pos, end, codestream = 0, len(data), False
    for _ in range(MAX_HEADER_BLOCKS):
        if pos >= end:
            break
        if pos + 8 > end:
            raise Undecodable("a JPEG XL file cut short inside a box header")
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                raise Undecodable("a JPEG XL file cut short inside a box header")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise Undecodable("a JPEG XL file cut short: a box runs past the end of the file")
        codestream = codestream or kind in (b"jxlc", b"jxlp")
        pos += size
    else:
        raise image_headers.HeaderTooLongError(JXL)
    if not codestream:
        raise Undecodable("a JPEG XL container without a codestream box")
