"""The eight symmetries of a square chip: augmentation in training, averaging at test time.

A satellite chip has no "up": turned by quarter turns and mirrored, it shows the same
ground. ``train.augment: d4`` gives each training example one of the eight views of the
dihedral group D4 (:func:`random_d4_view`), drawn from a seed of (epoch, position), so
a resumed run draws what an uninterrupted one draws. ``evaluate.tta: d4`` averages the
model's probabilities over the eight views (:func:`predict`): evaluation tunes the
thresholds on those averages, the exported signatures compute them in their graph, and
the smoke check's Keras reference too, so each compares like with like.

Views are exact permutations of the pixels (no resampling), on uint8 chips or floats alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

if TYPE_CHECKING:
    import keras

D4_VIEWS = 8  # 4 rotations, each as is and mirrored
NONE, D4 = "none", "d4"  # train.augment and evaluate.tta


def d4_view(images: tf.Tensor, k: int | tf.Tensor) -> tf.Tensor:
    """View ``k`` (0-7) of a chip (H, W, C) or a batch (N, H, W, C): ``k % 4`` quarter
    turns counter-clockwise, then, for ``k >= 4``, a left-right mirror. View 0 is the chip."""
    rotated = tf.image.rot90(images, k % 4)
    if isinstance(k, int):
        return tf.image.flip_left_right(rotated) if k >= 4 else rotated
    return tf.cond(k >= 4, lambda: tf.image.flip_left_right(rotated), lambda: rotated)


def random_d4_view(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """One of the 8 views of ``image``, uniformly, drawn by a stateless op from ``seed``
    (shape (2,) integers): the same seed gives the same view in every process."""
    k = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=D4_VIEWS, dtype=tf.int32)
    return d4_view(image, k)


def predict(model: keras.Model, images: tf.Tensor, tta: str = NONE) -> dict[str, tf.Tensor]:
    """The model's outputs on a batch of ``input_image`` chips, in inference mode; with
    ``tta`` ``d4``, each output averaged over the 8 views of each chip.

    The views go through the model as one batch of 8 N (a softmax row's average still
    sums to 1). Used by evaluation, inside both exported signatures and by the smoke
    check: one definition of what a model predicts.

    Raises:
        ValueError: ``tta`` is neither ``none`` nor ``d4``.
    """
    if tta == NONE:
        return model(images, training=False)
    if tta != D4:
        raise ValueError(f"tta must be {NONE!r} or {D4!r}, not {tta!r}")
    views = tf.concat([d4_view(images, k) for k in range(D4_VIEWS)], axis=0)
    outputs = model(views, training=False)
    return {
        name: tf.reduce_mean(tf.reshape(value, tf.concat([[D4_VIEWS, -1], tf.shape(value)[1:]], 0)), axis=0)
        for name, value in outputs.items()
    }
