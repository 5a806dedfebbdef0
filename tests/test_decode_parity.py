"""Serialize and serve decode every image to the same pixels.

For each format and mode ``tf.io.decode_image`` reads, a file is put through the
serialize stage's decoder (:func:`decode_rgb`, PIL and numpy) and through the
``serving_bytes`` signature's decoder (:func:`preprocessing.decode_rgb`, TensorFlow), and
the chip the stage writes is compared, decoded as training decodes it, with what the
served model gets from the same file.
"""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from amazonia.data.records.images import decode_rgb, prepare_chip_bytes
from amazonia.model import preprocessing
from tests.image_corpus import CASES, JPEG_SOURCES, encode

SIZE = 64  # serialize.image_size in these tests
# PIL decodes JPEG with libjpeg's accurate integer DCT, TensorFlow with the fast one:
# a few levels of 255 apart (measured on these chips: mean <= 1.5, max 13, CMYK's the most).
JPEG_DECODER_TOLERANCE = 16
# A converted chip is stored as a quality-90 JPEG, so training sees the served pixels
# plus JPEG's error, which on these small, detailed synthetic chips is large (measured:
# mean 0.9-5.3, max 13-155 levels of 255). So the chip is held to what storing the
# served pixels themselves as that JPEG costs, plus this slack for the JPEG decoders and
# PIL's resampling, and libjpeg's DCT-domain downscale of large JPEGs (measured: at most
# mean +1.5, max +6). Wrong conversions were far off: mean +200 for the white 16-bit PNG
# chip, +90 for a GIF's transparent frame.
CHIP_MEAN_SLACK = 2 / 255
CHIP_MAX_SLACK = 24 / 255


def served(data: bytes, size: int) -> np.ndarray:
    """What the serving_bytes signature feeds the model."""
    return preprocessing.to_model_input(preprocessing.preprocess(tf.constant(data), size)).numpy()


def trained(jpeg: bytes, size: int) -> np.ndarray:
    """What training feeds the model from a chip in the records."""
    return served(jpeg, size)


@pytest.mark.parametrize("case", CASES)
def test_serialize_decodes_the_pixels_serving_decodes(case):
    data = CASES[case](SIZE)
    ours = np.asarray(decode_rgb(data)).astype(int)
    theirs = preprocessing.decode_rgb(tf.constant(data)).numpy().astype(int)
    assert ours.shape == theirs.shape
    tolerance = JPEG_DECODER_TOLERANCE if case in JPEG_SOURCES else 0
    assert np.abs(ours - theirs).max() <= tolerance


@pytest.mark.parametrize("source_size", [SIZE, 2 * SIZE], ids=["same size", "resized"])
@pytest.mark.parametrize("case", CASES)
def test_the_chip_trains_on_what_is_served(case, source_size):
    data = CASES[case](source_size)
    pixels = served(data, SIZE)
    error = np.abs(trained(prepare_chip_bytes(data, SIZE).jpeg, SIZE) - pixels)
    as_jpeg = Image.fromarray(np.round(pixels * 255).astype(np.uint8))
    jpeg_error = np.abs(trained(encode(as_jpeg, "JPEG", quality=90), SIZE) - pixels)
    assert error.mean() <= jpeg_error.mean() + CHIP_MEAN_SLACK, (error.mean() * 255, jpeg_error.mean() * 255)
    assert error.max() <= jpeg_error.max() + CHIP_MAX_SLACK, (error.max() * 255, jpeg_error.max() * 255)
