"""Where the pipeline keeps things, relative to the project root (as in dvc.yaml)."""

from pathlib import Path

RAW_DIR = Path("data/raw")
LABELS_CSV = Path("data/labels/labels.csv")
LABEL_MAP_JSON = Path("data/labels/label_map.json")
RECORDS_DIR = Path("data/tfrecords")
SAMPLES_PNG = Path("metrics/samples.png")
LABELS_METRICS_JSON = Path("metrics/labels.json")
MODELS_DIR = Path("models")  # export versions: amazonia.export.contract.{candidate,published}_dir
MODEL_KERAS = Path("models/model.keras")
CHECKPOINT_DIR = Path("models/checkpoints")
PRETRAINED_DIR = Path(
    "models/pretrained"
)  # backbone weights files, each a `dvc import-url` (amazonia/model/pretrained.py)
THRESHOLDS_JSON = Path("models/thresholds.json")
TRAIN_LIVE_DIR = Path("metrics/train")
EVAL_JSON = Path("metrics/eval.json")
EVAL_PLOTS_DIR = Path("metrics/eval")
EVAL_ERRORS_PNG = EVAL_PLOTS_DIR / "errors.png"  # the error gallery (amazonia/model/error_gallery.py)
SMOKE_JSON = Path("metrics/smoke.json")
BLESS_JSON = Path("metrics/bless.json")  # the blessing gate's verdict (amazonia/export/bless.py)
