"""check_image accepts a file exactly when TensorFlow's decoder does.

Shards store chips as they are and the model decodes them with
``tf.io.decode_image(channels=0, expand_animations=False)``, in training and serving. A
chip the check passes but TensorFlow refuses would stop training; one it refuses but
TensorFlow reads would be lost for nothing. So over every kind of file the model may be
given (``tests/image_corpus.py``), each cut short at several offsets and corrupted in its
headers and data, the check's verdict is TensorFlow's.

What only decoding the compressed pixels shows is outside the check, and outside this
corpus: a corrupt VP8/VP8L bitstream inside a well-formed WebP, GIF image data that uses
colours past its colour table or ends early, a JPEG XL codestream corrupt inside its
boxes. TensorFlow refuses those and the check passes them; serialize decodes chips of
those formats with TensorFlow before storing them (``tests/test_records.py``). A corrupt
JPEG entropy segment is here: libjpeg decodes it with a warning, and the check passes it.
"""

import pytest
import tensorflow as tf

from amazonia.data.records.images import BadImageError, check_image
from tests.image_corpus import VALID, damaged_files, valid_files

SIZE = 64
FILES = {**valid_files(SIZE), **damaged_files(SIZE)}


def tensorflow_decodes(data: bytes) -> bool:
    try:
        tf.io.decode_image(data, channels=0, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError):
        return False
    return True


def check_passes(data: bytes) -> bool:
    try:
        check_image(data)
    except BadImageError:
        return False
    return True


@pytest.mark.parametrize("name", list(FILES))
def test_the_check_accepts_what_tensorflow_decodes_and_nothing_else(name):
    data = FILES[name]
    assert check_passes(data) == tensorflow_decodes(data)


def test_the_corpus_has_every_valid_kind_decodable_and_damage_of_each_verdict():
    assert all(tensorflow_decodes(FILES[name]) for name in VALID)
    damaged = [name for name in FILES if name not in VALID]
    refused = [name for name in damaged if not tensorflow_decodes(FILES[name])]
    # Damage TensorFlow shrugs off (garbage after the end, a flipped entropy byte) checks
    # the check does not refuse too much; the rest that it refuses enough.
    assert 0 < len(refused) < len(damaged)
    for kind in ("JPEG", "PNG", "GIF", "BMP", "WebP"):
        assert any(name.startswith(kind) for name in refused), kind
