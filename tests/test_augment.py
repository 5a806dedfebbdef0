"""The eight symmetries of a chip (amazonia/model/augment.py): as views, as training
augmentation drawn from (seed, epoch, position), and as test-time averaging."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from amazonia.model import augment, training
from amazonia.model.input_pipeline import load_epochs
from amazonia.model.network import build_model
from tests.image_corpus import chip, encode, write_split_of_files

SIZE = 32


def asymmetric(size: int = 5) -> np.ndarray:
    """A chip no symmetry maps to itself: every pixel value differs."""
    return np.arange(size * size * 3, dtype=np.uint8).reshape(size, size, 3)


def numpy_d4(image: np.ndarray) -> list[np.ndarray]:
    """The dihedral group of the square, by numpy: 4 rotations, each mirrored or not."""
    rotations = [np.rot90(image, k) for k in range(4)]
    return rotations + [np.fliplr(r) for r in rotations]


def test_the_views_are_the_eight_symmetries_of_the_square_and_view_0_is_the_chip() -> None:
    image = asymmetric()
    views = [augment.d4_view(tf.constant(image), k).numpy() for k in range(augment.D4_VIEWS)]
    assert len({v.tobytes() for v in views}) == 8
    assert {v.tobytes() for v in views} == {v.tobytes() for v in numpy_d4(image)}
    assert np.array_equal(views[0], image)
    # A batch gives each chip's view; a view index as a tensor gives the same as an int.
    batch = np.stack([image, image[::-1]])
    for k in range(augment.D4_VIEWS):
        batched = augment.d4_view(tf.constant(batch), k).numpy()
        assert np.array_equal(batched[0], views[k])
        assert np.array_equal(augment.d4_view(tf.constant(image), tf.constant(k)).numpy(), views[k])


def test_a_random_view_depends_on_its_seed_alone_and_all_eight_are_drawn() -> None:
    image = tf.constant(asymmetric())
    drawn = [
        augment.random_d4_view(image, tf.constant([7, i], tf.int64)).numpy().tobytes() for i in range(64)
    ]
    again = [
        augment.random_d4_view(image, tf.constant([7, i], tf.int64)).numpy().tobytes() for i in range(64)
    ]
    assert drawn == again
    assert len(set(drawn)) == 8


@pytest.mark.slow
def test_tta_d4_is_the_mean_of_the_model_over_the_eight_views() -> None:
    keras.utils.set_random_seed(3)
    model = build_model(SIZE, filters=4, dense_units=8)
    images = tf.constant(np.random.default_rng(0).random((3, SIZE, SIZE, 3), dtype=np.float32))
    averaged = augment.predict(model, images, "d4")
    for name, value in averaged.items():
        per_view = [model(augment.d4_view(images, k), training=False)[name] for k in range(8)]
        np.testing.assert_allclose(value.numpy(), np.mean(per_view, axis=0), rtol=0, atol=1e-6)
        # Not the model on the chip alone: the views do change its answer.
        assert not np.allclose(value.numpy(), per_view[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(averaged["weather"].numpy().sum(axis=1), 1, atol=1e-6)
    plain = augment.predict(model, images, "none")
    assert all(np.array_equal(plain[n], model(images, training=False)[n]) for n in plain)
    with pytest.raises(ValueError, match="tta must be 'none' or 'd4', not 'd8'"):
        augment.predict(model, images, "d8")


@pytest.mark.slow
def test_training_sees_each_chip_as_one_of_its_views_drawn_per_epoch_and_position(tmp_path: Path) -> None:
    files = {f"train_{i}": encode(chip(SIZE, seed=i), "PNG") for i in range(12)}
    split = write_split_of_files(tmp_path / "train", files, split="train", shards=3)

    def epochs(augmentation: str, first: int, last: int) -> list[np.ndarray]:
        data, _ = load_epochs(
            split,
            SIZE,
            batch_size=5,
            epoch_seeds=training.shuffle_seeds(4, range(first, last)),
            file_seed=4,
            augment=augmentation,
        )
        images = np.concatenate([x for x, _ in data.as_numpy_iterator()])
        return np.split(images, last - first)

    def view_of(original: np.ndarray, seen: np.ndarray) -> int:
        (k,) = [k for k, view in enumerate(numpy_d4(original)) if np.array_equal(seen, view)]
        return k

    plain, turned = epochs("none", 0, 3), epochs("d4", 0, 3)
    # The same chips in the same order, each shown as one of its views: which one, by chip.
    views = [
        {original.tobytes(): view_of(original, seen) for original, seen in zip(plain[epoch], turned[epoch])}
        for epoch in range(3)
    ]
    assert len(set(views[0].values())) > 2, "the views must vary across chips"
    assert views[0] != views[1] != views[2], "each epoch draws its own views"
    # A resumed run (a new pipeline from epoch 2) draws what an uninterrupted one drew.
    assert np.array_equal(epochs("d4", 2, 3)[0], turned[2])
    with pytest.raises(ValueError, match="augment must be 'none' or 'd4', not 'flip'"):
        load_epochs(split, SIZE, batch_size=5, epoch_seeds=[1], file_seed=1, augment="flip")
