"""Keras Applications backbones as the trunk of the two-headed model, and freezing them.

Every architecture takes the serving contract's input, float32 RGB chips in [0, 1]; each
backbone's own input normalisation is part of the model, as its first layers: the chips are
scaled to [0, 255], which MobileNetV3, EfficientNetV2 and ConvNeXt normalise themselves
(``include_preprocessing``), and ResNet50 gets :class:`CaffePreprocessing`, the BGR mean
subtraction its weights were trained with. So training, evaluation, export and both serving
signatures feed every architecture the same pixels.

The backbone is one nested layer of the model (``include_top=False``, no pooling), its layers
named as Keras names them: a Keras Applications weights file loads into Keras's backbone as it
is, which then has its depthwise grouped convolutions (ConvNeXt's) made ``DepthwiseConv2D``
(:mod:`amazonia.model.depthwise`), the same operation without XLA.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import keras

from amazonia.model.depthwise import with_depthwise_convolutions

BACKBONES: dict[str, Callable[..., keras.Model]] = {
    "mobilenet_v3_small": keras.applications.MobileNetV3Small,
    "efficientnet_v2_b0": keras.applications.EfficientNetV2B0,
    "resnet50": keras.applications.ResNet50,
    "convnext_tiny": keras.applications.ConvNeXtTiny,
}
# Backbones whose weights expect ImageNet's caffe preprocessing, which Keras does not build in.
_CAFFE = {"resnet50"}
# Batch normalisation's moving-average momentum for a backbone trained from random weights.
# Keras builds MobileNetV3 with 0.999, tuned for ImageNet's long runs: over a few epochs the
# moving statistics lag the weights so far that inference-mode outputs are constant (test F2
# equal to the trivial baseline's, 1,500 chips at 64 px, 3 epochs; 0.89 at 0.9), a known trap
# of from-scratch Keras backbones (tensorflow/tensorflow#36065). 0.9 is EfficientNetV2's own
# value and PyTorch's default. Pretrained backbones keep the statistics and momentum they came with.
FROM_SCRATCH_BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="amazonia")
class CaffePreprocessing(keras.layers.Layer):
    """RGB in [0, 255] -> BGR minus ImageNet's channel means, as
    ``keras.applications.resnet50.preprocess_input`` ("caffe" mode) computes it.

    A layer of its own rather than a Lambda, so a ``.keras`` file holding it loads with
    ``safe_mode`` (this module must be imported first: it registers the class).
    """

    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, inputs):
        bgr = keras.ops.flip(inputs, axis=-1)
        return bgr - keras.ops.convert_to_tensor(self.MEAN_BGR, dtype=bgr.dtype)


def backbone_features(
    architecture: str, inputs: keras.KerasTensor, weights: Path | None
) -> keras.KerasTensor:
    """The backbone's feature map of ``inputs`` ((None, S, S, 3) in [0, 1]).

    Args:
        architecture: a key of :data:`BACKBONES` (``train.architecture``).
        inputs: the model's input tensor.
        weights: a Keras Applications notop weights file to start from
            (:func:`amazonia.model.pretrained.weights_path`), or None for random weights.
    """
    size = tuple(inputs.shape[1:])
    x = keras.layers.Rescaling(255.0, name="to_0_255")(inputs)
    if architecture in _CAFFE:
        x = CaffePreprocessing(name="caffe_preprocessing")(x)
    # A path, never "imagenet": Keras would download the file.
    backbone = BACKBONES[architecture](
        include_top=False, weights=None if weights is None else str(weights), input_shape=size
    )
    # ConvNeXt's depthwise convolutions, as Keras builds them, need XLA: 4.6x slower to train
    # on CPUs, and not servable by TF Serving on CPU. Swapped after the weights file is loaded:
    # its kernels are shaped for Keras's grouped layers.
    backbone = with_depthwise_convolutions(backbone)
    if weights is None:
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = FROM_SCRATCH_BN_MOMENTUM
    return backbone(x)


def backbone_of(model: keras.Model) -> keras.Model | None:
    """The nested backbone of a model :func:`backbone_features` built (or loaded), else None."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return nested[0] if nested else None


def freeze_backbone(model: keras.Model) -> None:
    """Freeze the whole backbone; its BatchNormalization layers then run in inference mode.

    Recompile after it: Keras fixes the trainable weights at compile time.
    """
    backbone_of(model).trainable = False


def unfreeze_backbone(model: keras.Model) -> None:
    """Make the backbone trainable, but for its BatchNormalization layers.

    Frozen, they keep normalising with the ImageNet statistics the pretrained weights were
    trained with, instead of a batch's (small batches of other images would drift them and
    undo the warm-up); the Keras transfer-learning guide's advice. Recompile after it.
    """
    backbone = backbone_of(model)
    backbone.trainable = True
    for layer in all_layers(backbone):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def load_model(path: Path | str, compile: bool = True) -> keras.Model:
    """``keras.saving.load_model`` (safe mode) with this module's layers known to it."""
    return keras.saving.load_model(
        path, compile=compile, custom_objects={"CaffePreprocessing": CaffePreprocessing}
    )


def all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of ``model``, those of nested models (a backbone, ConvNeXt's stem) included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
