"""The sharded TFRecord format: Example schema, shard names, manifest, writer."""
