"""Stage ingest: chips in Kaggle's layout under data/raw.

data.source = synthetic: generate data.n_images chips (seed data.seed).
data.source = kaggle:    link an extracted Kaggle download from data.kaggle_dir, once its
                         train_v2.csv reads cleanly (a bad download leaves data/raw as it was).
Either way, a contact sheet of the first chips goes to metrics/samples.png.
"""

import logging
from pathlib import Path

from amazonia.common.files import atomic_dir
from amazonia.common.params import load_params
from amazonia.common.paths import RAW_DIR, SAMPLES_PNG
from amazonia.common.stage import run_stage
from amazonia.data.contact_sheet import write_contact_sheet
from amazonia.data.kaggle import TAGS_CSV, check_layout, image_path, link_download
from amazonia.data.labels import read_tags_csv
from amazonia.data.synthetic.generate import generate_dataset

SAMPLE_COUNT = 24

log = logging.getLogger("ingest")


def main() -> None:
    params = load_params()
    download = Path(params.data.kaggle_dir)
    if params.data.source == "kaggle":
        check_layout(download)
        table = read_tags_csv(download / TAGS_CSV)  # before data/raw is touched
    with atomic_dir(RAW_DIR) as raw:
        if params.data.source == "synthetic":
            generate_dataset(raw, params.data.n_images, params.data.seed, workers=params.runtime.workers)
            table = read_tags_csv(raw / TAGS_CSV)
        else:
            method = link_download(download, raw)
            log.info("linked %s into %s by %s", download, RAW_DIR, method)

    samples = table.head(SAMPLE_COUNT)
    chips = [(image_path(RAW_DIR, name), tags) for name, tags in zip(samples["image_name"], samples["tags"])]
    write_contact_sheet(SAMPLES_PNG, chips)


if __name__ == "__main__":
    run_stage(main)
