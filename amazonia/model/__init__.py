"""The network, its tf.data input pipeline, training, metrics and evaluation."""
