"""A contact sheet: a grid of chips captioned with their tags, for a person to look at.

A chip is read only if it is a regular file (no symlink followed, no FIFO waited on),
and decoded only within the decode budget serialize and the server enforce
(:func:`amazonia.data.records.images.check_image`, from its headers).
"""

from __future__ import annotations

import io
import logging
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from amazonia.common.files import RefusedFileError, read_regular_file, write_bytes_atomic
from amazonia.data.records import images

PLACEHOLDER_FILL = (224, 224, 224)
# A 4096x4096 RGBA bitmap, the decode budget uncompressed, is 64 MiB: a larger file
# is padding or worse, and is not read into memory for a thumbnail.
MAX_CHIP_BYTES = 64 * 2**20
# What PIL raises for a file it cannot decode; the same set serialize catches.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)

log = logging.getLogger(__name__)


def write_contact_sheet(
    path: Path | str,
    chips: Sequence[tuple[Path, str]],
    columns: int = 6,
    thumb: int = 160,
) -> list[tuple[Path, str]]:
    """Write a PNG grid of ``(image file, caption)`` pairs to ``path``.

    A chip that is missing or does not decode gets a grey tile saying why, not an
    error: the sheet is a preview, and what to do with a bad chip is serialize's call
    (``serialize.on_bad_image``). Returns those ``(image file, reason)`` pairs.
    """
    font = ImageFont.load_default()
    caption_h = 34
    rows = (len(chips) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * thumb, rows * (thumb + caption_h)), "white")
    draw = ImageDraw.Draw(sheet)
    undrawn = []
    for i, (image_file, caption) in enumerate(chips):
        x, y = (i % columns) * thumb, (i // columns) * (thumb + caption_h)
        try:
            sheet.paste(_thumbnail(image_file, thumb), (x, y))
        except _UndrawableError as err:
            undrawn.append((image_file, str(err)))
            tile = (x + 1, y + 1, x + thumb - 2, y + thumb - 2)
            draw.rectangle(tile, fill=PLACEHOLDER_FILL, outline="gray")
            note = "\n".join(textwrap.wrap(f"{Path(image_file).name}: {err}", width=thumb // 6)[:4])
            draw.multiline_text((x + 6, y + 6), note, fill="black", font=font, spacing=1)
        lines = textwrap.wrap(caption, width=thumb // 6)[:3]
        draw.multiline_text((x + 3, y + thumb + 1), "\n".join(lines), fill="black", font=font, spacing=1)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=True)
    write_bytes_atomic(path, buffer.getvalue())
    for image_file, reason in undrawn:
        log.info("contact sheet: %s not drawn: %s", image_file, reason)
    return undrawn


class _UndrawableError(Exception):
    """A chip the sheet shows as a placeholder; never leaves this module."""


def _thumbnail(image_file: Path, thumb: int) -> Image.Image:
    """``image_file`` as an RGB ``thumb`` x ``thumb`` image, or :class:`_UndrawableError`.

    PIL's decompression-bomb warning counts as an error, as in serialize: a chip is
    256x256, and a header claiming far more is corrupt or hostile."""
    try:
        data = read_regular_file(image_file, MAX_CHIP_BYTES)
        images.check_image(data)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as chip:
                chip.draft("RGB", (thumb, thumb))  # JPEG only: decode at a reduced scale when it can
                return chip.convert("RGB").resize((thumb, thumb))
    except FileNotFoundError:
        raise _UndrawableError("no such file") from None
    except RefusedFileError as err:
        raise _UndrawableError(err.reason) from None
    except images.BadImageError as err:
        raise _UndrawableError(f"not decoded: {err}") from None
    except UnidentifiedImageError:
        raise _UndrawableError("not an image PIL can identify") from None
    except _DECODE_ERRORS as err:
        raise _UndrawableError(f"cannot decode: {err or type(err).__name__}") from None
