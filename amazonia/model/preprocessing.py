"""The model's pixels: encoded image bytes -> the chip the network sees, one function for every path.

The ``tf.data`` input pipeline (:mod:`amazonia.model.input_pipeline`) and the exported
``serving_bytes`` signature (:mod:`amazonia.export.saved_model`) both call
:func:`preprocess` and then :func:`to_model_input`, so training, evaluation and serving
compute the same pixels by construction (tested bit for bit on every kind of file
TensorFlow decodes). The split between the two lets the input pipeline cache chips at
the model's size as uint8: 40,479 chips at 128 px are 2 GB, four times that as float32.

What the backbone wants beyond [0, 1] (its own normalisation) is the network's first
layers, so it travels inside the model too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from amazonia.common.errors import AmazoniaError

if TYPE_CHECKING:
    import keras

# Where the preprocessing runs in an exported graph. Decoders are CPU kernels anyway,
# and a GPU's resize kernel rounds differently: pinned, the served pixels are the
# tf.data pipeline's (which runs on the CPU) on every device.
PREPROCESS_DEVICE = "/CPU:0"
_LEVELS = (np.arange(256) / 255).astype(np.float32)  # see to_model_input


def decode_rgb(data: tf.Tensor) -> tf.Tensor:
    """Encoded image bytes -> uint8 (H, W, 3): gray repeated, alpha dropped (not
    composited), an animation's first frame.

    JPEG, PNG (8 and 16 bit), GIF, BMP, WebP and JPEG XL: whatever
    :func:`tf.io.decode_image` reads. Decoded with the file's own channels, then cut to
    RGB: ``channels=3`` gives the same pixels for JPEG, PNG, GIF and BMP, but refuses a
    WebP with alpha or animation and a JPEG XL that is not plain RGB ("Number of
    channels requested does not match input").
    """
    image = tf.io.decode_image(data, channels=0, expand_animations=False)
    rgb = tf.cond(
        tf.shape(image)[-1] < 3,
        lambda: tf.tile(image[..., :1], [1, 1, 3]),  # gray, or gray + alpha
        lambda: image[..., :3],
    )
    return tf.ensure_shape(rgb, (None, None, 3))


def preprocess(data: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded image bytes of any size -> uint8 (S, S, 3), ``S = image_size``.

    Decoded by :func:`decode_rgb`; an S x S image passes unchanged, any other is resized
    bilinearly with antialiasing (which averages over the whole footprint when
    shrinking, 256 -> 128 px), rounded to the nearest level.
    """
    image = decode_rgb(data)
    shape = tf.shape(image)
    same_size = tf.logical_and(tf.equal(shape[0], image_size), tf.equal(shape[1], image_size))

    def resized() -> tf.Tensor:
        scaled = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
        # Bilinear weights are non-negative: the clip only removes rounding overshoot.
        return tf.cast(tf.clip_by_value(tf.round(scaled), 0.0, 255.0), tf.uint8)

    image = tf.cond(same_size, lambda: image, resized)
    return tf.ensure_shape(image, (image_size, image_size, 3))


def preprocess_batch(data: tf.Tensor, image_size: int) -> tf.Tensor:
    """A batch of encoded images (string (N,)) -> uint8 (N, S, S, 3), each by :func:`preprocess`."""
    return tf.map_fn(
        lambda one: preprocess(one, image_size),
        data,
        fn_output_signature=tf.TensorSpec((image_size, image_size, 3), tf.uint8),
    )


def to_model_input(image: tf.Tensor) -> tf.Tensor:
    """uint8 -> float32 in [0, 1]: the model's ``input_image``, as the article's
    ``img_to_array(...) / 255.`` (level ``i`` becomes the float32 nearest ``i / 255``).

    A lookup, not a division: inside the exported ``serving_bytes`` graph ``x / 255``
    came out one float32 step off the ``tf.data`` pipeline's for about half the levels
    (measured; graph optimisers may compute it another way), a table gives the same bits
    in every graph.
    """
    return tf.gather(tf.constant(_LEVELS), tf.cast(image, tf.int32))


def model_input_size(model: keras.Model) -> int:
    """The chip size S a model takes: its one input is ``(None, S, S, 3)``.

    Evaluation, export and the smoke check read the size here, from the trained model,
    so only training declares it (``train.image_size``).

    Raises:
        AmazoniaError: the model's inputs are not one batch of square RGB chips.
    """
    shapes = [tuple(t.shape) for t in model.inputs]
    shape = shapes[0] if len(shapes) == 1 else ()
    size = shape[1] if len(shape) == 4 else None
    if size is None or shape[1:] != (size, size, 3):
        raise AmazoniaError(
            f"model {model.name!r} takes inputs of shape {shapes}, not one (None, S, S, 3) batch of chips; "
            "retrain it ('dvc repro train')"
        )
    return int(size)
