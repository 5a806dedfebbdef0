"""Benchmarks of the pipeline against the original article's approach (``make bench``)."""
