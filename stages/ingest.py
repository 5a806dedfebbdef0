"""Stage ingest: chips in Kaggle's layout under data/raw.

data.source = synthetic: generate data.n_images chips (seed data.seed).
data.source = kaggle:    link an extracted Kaggle download from data.kaggle_dir.
Either way, a contact sheet of the first chips goes to metrics/samples.png.
"""

import logging

from amazonia.common.files import atomic_dir
from amazonia.common.params import load_params
from amazonia.common.paths import RAW_DIR, SAMPLES_PNG
from amazonia.common.stage import run_stage
from amazonia.data.contact_sheet import write_contact_sheet
from amazonia.data.kaggle import check_layout, first_rows, image_path, link_download
from amazonia.data.synthetic.generate import generate_dataset

SAMPLE_COUNT = 24

log = logging.getLogger("ingest")


def main() -> None:
    params = load_params()
    if params.data.source == "kaggle":
        check_layout(params.data.kaggle_dir)  # before data/raw is touched
    with atomic_dir(RAW_DIR) as raw:
        if params.data.source == "synthetic":
            generate_dataset(raw, params.data.n_images, params.data.seed, workers=params.runtime.workers)
        else:
            method = link_download(params.data.kaggle_dir, raw)
            log.info("linked %s into %s by %s", params.data.kaggle_dir, RAW_DIR, method)

    chips = [(image_path(RAW_DIR, name), tags) for name, tags in first_rows(RAW_DIR, SAMPLE_COUNT)]
    write_contact_sheet(SAMPLES_PNG, [(path, tags) for path, tags in chips if path.is_file()])


if __name__ == "__main__":
    run_stage(main)
