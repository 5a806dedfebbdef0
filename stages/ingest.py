"""Stage ingest: chips in Kaggle's layout under data/raw.

data.source = synthetic: generate data.n_images chips (seed data.seed).
data.source = kaggle:    link an extracted Kaggle download from data.kaggle_dir, once its
                         train_v2.csv reads cleanly and every chip is a regular file inside
                         it (data.on_unsafe_chip: error stops on any other, skip leaves it
                         out); a bad download leaves data/raw as it was.
Either way, data/raw.md5 lists the MD5 of every file in data/raw (md5sum's format; the
later stages depend on it in place of the folder), and a contact sheet of the first chips
goes to metrics/samples.png.
"""

import logging
from pathlib import Path

from amazonia.common.files import atomic_dir, write_text_atomic
from amazonia.common.params import load_params
from amazonia.common.paths import RAW_DIR, RAW_MD5, SAMPLES_PNG
from amazonia.common.stage import run_stage
from amazonia.data.contact_sheet import write_contact_sheet
from amazonia.data.content_list import content_list
from amazonia.data.kaggle import TAGS_CSV, check_download, image_path, link_download
from amazonia.data.labels import read_tags_csv
from amazonia.data.synthetic.generate import generate_dataset

SAMPLE_COUNT = 24

log = logging.getLogger("ingest")


def main() -> None:
    params = load_params()
    if params.data.source == "kaggle":
        # Both before data/raw is touched; nothing of the download is read until checked.
        download = check_download(Path(params.data.kaggle_dir), on_unsafe=params.data.on_unsafe_chip)
        table = read_tags_csv(download.root / TAGS_CSV)
    with atomic_dir(RAW_DIR) as raw:
        if params.data.source == "synthetic":
            generate_dataset(raw, params.data.n_images, params.data.seed, workers=params.runtime.workers)
            table = read_tags_csv(raw / TAGS_CSV)
        else:
            rows = {tag_row.image_name: tag_row.row for tag_row in table}
            linked = link_download(download, raw, rows, on_unsafe=params.data.on_unsafe_chip)
            left_out = set(linked.left_out)
            table = [tag_row for tag_row in table if tag_row.image_name not in left_out]
            log.info("linked %s into %s by %s", download.root, RAW_DIR, linked.method)
        raw_md5 = content_list(raw, workers=params.runtime.workers)
    write_text_atomic(RAW_MD5, raw_md5)

    chips = [(image_path(RAW_DIR, tag_row.image_name), tag_row.tags) for tag_row in table[:SAMPLE_COUNT]]
    write_contact_sheet(SAMPLES_PNG, chips)


if __name__ == "__main__":
    run_stage(main)
