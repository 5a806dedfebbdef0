"""The SavedModel for TF Serving: its contract, the exporter, the smoke check that publishes it."""
