"""Where the pipeline keeps things, relative to the project root (as in dvc.yaml)."""

from pathlib import Path

RAW_DIR = Path("data/raw")
LABELS_CSV = Path("data/labels/labels.csv")
LABEL_MAP_JSON = Path("data/labels/label_map.json")
RECORDS_DIR = Path("data/tfrecords")
SAMPLES_PNG = Path("metrics/samples.png")
LABELS_METRICS_JSON = Path("metrics/labels.json")
