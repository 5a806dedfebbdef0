"""A TensorFlow decode of the chips whose structure cannot prove that TensorFlow reads them.

:func:`amazonia.data.records.images.check_image` proves a JPEG, PNG or BMP decodable from
its structure alone. For GIF, WebP and JPEG XL some damage shows only when the compressed
pixels are decoded: a corrupt VP8/VP8L bitstream inside a well-formed WebP, GIF image data
that uses colours past its colour table or ends early, a JPEG XL codestream corrupt inside
its boxes. Such a chip stored in a shard would stop training, so before it is stored it is
decoded once by the decoder the model uses. Kaggle's chips are JPEGs: TensorFlow (seconds
to import) is imported only when a chip of these formats turns up.
"""

from __future__ import annotations

from amazonia.common.tf_errors import tf_error_message
from amazonia.data.records import image_headers
from amazonia.data.records.images import UNREADABLE, BadImageError

FORMATS_DECODED_TO_CONFIRM = frozenset({image_headers.GIF, image_headers.WEBP, image_headers.JXL})


def confirm_decodable(data: bytes, kind: str) -> None:
    """Raise :class:`BadImageError` when ``data``, a ``kind`` file that passed ``check_image``,
    is one TensorFlow's ``decode_image`` refuses; formats proven from their structure pass
    without a decode.

    Raises:
        BadImageError: TensorFlow's decoder refuses the file, with its reason.
    """
    if kind not in FORMATS_DECODED_TO_CONFIRM:
        return
    import tensorflow as tf

    try:
        tf.io.decode_image(data, channels=0, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as err:
        raise BadImageError(
            f"{UNREADABLE}a {kind} file TensorFlow's decoder refuses ({tf_error_message(err)}); re-encode it"
        ) from None
