"""A contact sheet: a grid of chips captioned with their tags, for a person to look at."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from amazonia.common.files import write_bytes_atomic


def write_contact_sheet(
    path: Path | str,
    chips: Sequence[tuple[Path, str]],
    columns: int = 6,
    thumb: int = 160,
) -> None:
    """Write a PNG grid of ``(image file, caption)`` pairs to ``path``."""
    font = ImageFont.load_default()
    caption_h = 34
    rows = (len(chips) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * thumb, rows * (thumb + caption_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (image_file, caption) in enumerate(chips):
        x, y = (i % columns) * thumb, (i // columns) * (thumb + caption_h)
        with Image.open(image_file) as chip:
            sheet.paste(chip.convert("RGB").resize((thumb, thumb)), (x, y))
        lines = textwrap.wrap(caption, width=thumb // 6)[:3]
        draw.multiline_text((x + 3, y + thumb + 1), "\n".join(lines), fill="black", font=font, spacing=1)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=True)
    write_bytes_atomic(path, buffer.getvalue())
