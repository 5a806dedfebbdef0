"""A TF Serving-compatible REST server over the exported SavedModels."""
