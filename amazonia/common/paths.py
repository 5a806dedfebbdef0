"""Where the pipeline keeps things, relative to the project root (as in dvc.yaml)."""

from pathlib import Path

# The project's code, as opposed to its data: every stage's deps under these folders are
# the modules it can run (tests/test_dvc_contract.py keeps them exact), and the train
# stage's resume fingerprint hashes them.
CODE_DIRS = ("stages", "amazonia")

RAW_DIR = Path("data/raw")
# md5sum's list of data/raw, which later stages depend on in place of the folder
# (amazonia/data/content_list.py says why)
RAW_MD5 = Path("data/raw.md5")
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
