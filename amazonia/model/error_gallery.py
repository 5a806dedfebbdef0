"""The error gallery: the test chips the model gets most confidently wrong, as one captioned PNG.

A mistake is a tag whose prediction differs from the truth: a false positive (a
ground tag at or above its tuned threshold, or the top weather class, that the chip
does not have) or a false negative (a true tag below its threshold, or a true
weather class that is not the top one). How confident it was is the probability
given to the wrong answer: ``p`` for a false positive, ``1 - p`` for a false negative.

Half the tiles go to the chips with the most confident false positive, half to those
with the most confident false negative (one kind fills the other's empty places),
ties broken by record order: the same model and data give the same PNG bytes.
No TensorFlow here: the chips come in as uint8 arrays.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from amazonia.data.vocabulary import ALL_LABELS, LABELS_WEATHER
from amazonia.model.metrics import predict_tags

GALLERY_SIZE = 16  # tiles: 8 false positives, 8 false negatives
COLUMNS = 4
CHIP_PX = 128  # every chip is drawn this size, whatever size its stored file is
TEXT_PX = 212  # caption column beside each chip: ~38 characters of the default font
FRAME_PX = 3
GAP_PX = 8
HEADER_PX = 34
LINE_PX = 12
MISTAKES_SHOWN = 3  # per tile, most confident first
FALSE_POSITIVE_RGB = (200, 30, 30)
FALSE_NEGATIVE_RGB = (30, 90, 210)
TITLE = "Most confident mistakes on the test split (ground thresholds tuned on val)"
LEGEND = (
    "Red frame: false positive (FP), a tag predicted that the chip does not have.   "
    "Blue frame: false negative (FN), a true tag missed.   p: probability, t: threshold."
)


@dataclass(frozen=True)
class Mistake:
    """One tag predicted wrong on one chip, and the numbers that decided it."""

    tag: str
    probability: float
    threshold: float | None  # None for a weather tag: the top class wins, no threshold
    false_positive: bool

    @property
    def confidence(self) -> float:
        """The probability the model gave to its wrong answer."""
        return self.probability if self.false_positive else 1.0 - self.probability

    def describe(self) -> str:
        """``FP road p 0.91 >= t 0.30``, ``FN water p 0.12 < t 0.40``, ``FP haze p 0.85 (top weather)``."""
        kind = "FP" if self.false_positive else "FN"
        if self.threshold is None:
            why = "top weather" if self.false_positive else "not top weather"
            return f"{kind} {self.tag} p {self.probability:.2f} ({why})"
        sign = ">=" if self.false_positive else "<"
        return f"{kind} {self.tag} p {self.probability:.2f} {sign} t {self.threshold:.2f}"


@dataclass(frozen=True)
class GalleryChip:
    """A test chip chosen for the gallery, with what the model got wrong on it."""

    index: int  # position in the split's record order
    false_positive: bool  # the group it was chosen for (its frame colour)
    true_tags: tuple[str, ...]
    predicted_tags: tuple[str, ...]
    mistakes: tuple[Mistake, ...]  # its group's kind first, then the other; each most confident first

    def caption(self, name: str) -> list[str]:
        """The caption's lines before wrapping: name, the mistakes, true and predicted tags."""
        shown = [m.describe() for m in self.mistakes[:MISTAKES_SHOWN]]
        if len(self.mistakes) > MISTAKES_SHOWN:
            shown.append(f"... {len(self.mistakes) - MISTAKES_SHOWN} more")
        return [
            name,
            *shown,
            "true: " + " ".join(self.true_tags),
            "predicted: " + " ".join(self.predicted_tags),
        ]


def select_chips(
    weather_true: np.ndarray,
    ground_true: np.ndarray,
    weather_prob: np.ndarray,
    ground_prob: np.ndarray,
    thresholds: np.ndarray,
    size: int = GALLERY_SIZE,
) -> list[GalleryChip]:
    """The ``size`` chips for the gallery: false-positive group first, each most confident first."""
    truth = np.hstack([weather_true, ground_true]).astype(bool)
    predicted = predict_tags(weather_prob, ground_prob, thresholds).astype(bool)
    probabilities = np.hstack([weather_prob, ground_prob])
    tag_thresholds = [None] * len(LABELS_WEATHER) + [float(t) for t in thresholds]

    def mistakes_of(i: int) -> tuple[Mistake, ...]:
        found = [
            Mistake(ALL_LABELS[j], float(probabilities[i, j]), tag_thresholds[j], bool(predicted[i, j]))
            for j in np.flatnonzero(truth[i] != predicted[i])
        ]
        return tuple(sorted(found, key=lambda m: -m.confidence))  # stable: vocabulary order on ties

    wrong = {int(i): mistakes_of(int(i)) for i in np.flatnonzero((truth != predicted).any(axis=1))}

    def ranked(false_positive: bool) -> list[int]:
        confidence = {
            i: max(m.confidence for m in found if m.false_positive == false_positive)
            for i, found in wrong.items()
            if any(m.false_positive == false_positive for m in found)
        }
        return sorted(confidence, key=lambda i: (-confidence[i], i))

    positives, negatives = ranked(True), ranked(False)
    chosen_fp = positives[: size // 2]
    chosen_fn = [i for i in negatives if i not in chosen_fp][: size - len(chosen_fp)]
    chosen_fp += [i for i in positives if i not in chosen_fp and i not in chosen_fn][
        : size - len(chosen_fp) - len(chosen_fn)
    ]

    def chip(i: int, false_positive: bool) -> GalleryChip:
        return GalleryChip(
            index=i,
            false_positive=false_positive,
            true_tags=tuple(t for t, on in zip(ALL_LABELS, truth[i]) if on),
            predicted_tags=tuple(t for t, on in zip(ALL_LABELS, predicted[i]) if on),
            # The kind it was chosen for leads, so the caption starts with what its frame says.
            mistakes=tuple(sorted(wrong[i], key=lambda m: m.false_positive != false_positive)),
        )

    return [chip(i, True) for i in chosen_fp] + [chip(i, False) for i in chosen_fn]


def render_gallery(tiles: Sequence[tuple[GalleryChip, str, np.ndarray]]) -> bytes:
    """PNG bytes of ``(chip, image name, uint8 H x W x 3 image)`` tiles, ``COLUMNS`` a row.

    PIL's built-in font (no system fonts: the same bytes on every machine with the
    same Pillow); an empty ``tiles`` gives a banner saying the test split had no mistake.
    """
    font = ImageFont.load_default()
    tile_w = FRAME_PX * 2 + CHIP_PX + GAP_PX + TEXT_PX
    tile_h = FRAME_PX * 2 + CHIP_PX
    columns = min(COLUMNS, max(len(tiles), 1))
    rows = -(-len(tiles) // columns)
    width = GAP_PX + columns * (tile_w + GAP_PX)
    height = HEADER_PX + GAP_PX + rows * (tile_h + GAP_PX)
    legend_width = 2 * GAP_PX + math.ceil(font.getlength(LEGEND))  # a gallery of 1 or 2 columns is narrower
    sheet = Image.new("RGB", (max(width, legend_width), height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((GAP_PX, 4), TITLE if tiles else "No mistakes on the test split", fill="black", font=font)
    if tiles:
        draw.text((GAP_PX, 4 + LINE_PX + 2), LEGEND, fill=(90, 90, 90), font=font)
    for n, (chip, name, image) in enumerate(tiles):
        x = GAP_PX + (n % columns) * (tile_w + GAP_PX)
        y = HEADER_PX + GAP_PX + (n // columns) * (tile_h + GAP_PX)
        colour = FALSE_POSITIVE_RGB if chip.false_positive else FALSE_NEGATIVE_RGB
        draw.rectangle((x, y, x + tile_h - 1, y + tile_h - 1), fill=colour)
        sheet.paste(_chip_image(image), (x + FRAME_PX, y + FRAME_PX))
        lines = [part for line in chip.caption(name) for part in _wrap(line, font, TEXT_PX)]
        lines = lines[: tile_h // LINE_PX]
        text_x = x + tile_h + GAP_PX
        for k, line in enumerate(lines):
            draw.text((text_x, y + k * LINE_PX), line, fill=colour if k == 0 else "black", font=font)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _chip_image(image: np.ndarray) -> Image.Image:
    """A uint8 chip at ``CHIP_PX``: small chips enlarged pixel for pixel, large ones averaged down."""
    chip = Image.fromarray(np.asarray(image, dtype=np.uint8), mode="RGB")
    if chip.size == (CHIP_PX, CHIP_PX):
        return chip
    resample = Image.Resampling.NEAREST if chip.width < CHIP_PX else Image.Resampling.BOX
    return chip.resize((CHIP_PX, CHIP_PX), resample)


def _wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width_px: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width_px`` (a longer word stands alone)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and font.getlength(f"{lines[-1]} {word}") <= width_px:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines
