"""amazonia: a reproducible DVC + tf.keras pipeline for Planet Amazon chips."""
