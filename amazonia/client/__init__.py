"""The predict client: image files in, tags out, over TF Serving's REST API."""
