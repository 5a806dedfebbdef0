"""Where and in what precision train runs: Keras's mixed-precision policy and the tf.distribute strategy.

- ``train.precision``: ``float32``, ``mixed_bfloat16`` or ``mixed_float16`` (Keras's
  policy: weights in float32, most arithmetic in 16 bits; the heads stay float32, see
  :func:`amazonia.model.network.build_model`). ``mixed_float16`` gets Keras's loss scaling.
- ``train.strategy``: ``none`` (one device), ``mirrored`` (``tf.distribute.MirroredStrategy``
  over every local GPU; on a machine without one, over ``AMAZONIA_CPU_REPLICAS`` logical
  CPU devices, which is how the tests run it) or ``multi_worker``, refused (see
  :data:`MULTI_WORKER_REFUSAL`). Both strategies run one process, which writes the
  checkpoints, DVCLive's files and the model, as before.

Over several replicas every batch must be full and split evenly (Keras 3.15, TF 2.21: an
uneven split fails in ``AddN``, a replica with no example crashes oneDNN's convolution,
"input depth must be evenly divisible by filter depth"): training drops each epoch's short
last batch (other examples each epoch, as the order is reshuffled) and validation uses
batches of :func:`validation_batch_size`, dropping at most one batch's worth of the same
examples every epoch; the evaluate stage still scores every example, on one device.
"""

from __future__ import annotations

import logging
import os

import keras
import tensorflow as tf

from amazonia.common.errors import AmazoniaError

CPU_REPLICAS_ENV = "AMAZONIA_CPU_REPLICAS"  # logical CPU devices for `mirrored` without a GPU

# Why train.strategy: multi_worker stops instead of training, with the versions it was
# checked on. Lift it when the upstream issue is fixed and a two-process test passes.
MULTI_WORKER_REFUSAL = (
    "train.strategy: multi_worker is not supported with Keras {keras} / TensorFlow {tf}: "
    "MultiWorkerMirroredStrategy fails inside model.fit (https://github.com/keras-team/keras/issues/20585), "
    "and BackupAndRestore collides when workers share a folder. Use train.strategy: mirrored "
    "(every GPU of one machine) or none"
)
log = logging.getLogger(__name__)


class DistributeError(AmazoniaError):
    """A strategy or precision this code cannot run here; the message says what to use."""


def set_precision(precision: str) -> None:
    """Make ``precision`` Keras's global dtype policy for the layers built after this."""
    keras.mixed_precision.set_global_policy(precision)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy called ``name`` in ``train.strategy``; call it before TensorFlow
    touches a device (it may split the CPU into logical devices).

    Raises:
        DistributeError: ``multi_worker``, or an ``AMAZONIA_CPU_REPLICAS`` that is no
            positive integer.
    """
    if name == "none":
        return tf.distribute.get_strategy()  # the default: one device, no-op scope
    if name == "multi_worker":
        raise DistributeError(MULTI_WORKER_REFUSAL.format(keras=keras.__version__, tf=tf.__version__))
    if name != "mirrored":
        raise DistributeError(f"train.strategy: unknown {name!r}; use none, mirrored or multi_worker")
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    replicas = _cpu_replicas()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    log.info("mirrored over %d logical CPU devices", len(devices))
    return tf.distribute.MirroredStrategy(devices)


def check_batch_size(batch_size: int, replicas: int) -> None:
    """Raise :class:`DistributeError` unless ``batch_size`` splits evenly over ``replicas``."""
    if batch_size % replicas:
        raise DistributeError(
            f"train.batch_size: {batch_size} does not split evenly over {replicas} replicas; "
            f"use a multiple of {replicas}"
        )


def validation_batch_size(batch_size: int, examples: int, replicas: int) -> int:
    """The largest multiple of ``replicas`` up to ``batch_size`` and ``examples``: a small
    validation split still fills one batch.

    Raises:
        DistributeError: fewer validation examples than replicas.
    """
    size = min(batch_size, examples) // replicas * replicas
    if size == 0:
        raise DistributeError(
            f"{examples} validation examples cannot feed {replicas} replicas; "
            "raise split.val or data.n_images, or use fewer devices"
        )
    return size


def _cpu_replicas() -> int:
    text = os.environ.get(CPU_REPLICAS_ENV, "1").strip() or "1"
    if not text.isdigit() or int(text) < 1:
        raise DistributeError(
            f"{CPU_REPLICAS_ENV}={text!r}: must be a positive integer (logical CPU devices)"
        )
    return int(text)
