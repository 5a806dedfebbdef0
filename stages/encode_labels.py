"""Stage encode_labels: data/raw/train_v2.csv -> data/labels/labels.csv.

Encodes tags exactly as the original article (alphabetical one-/multi-hot vectors
written as "[0, 0, 1, 0]"), assigns train/val/test by a stable hash of the image
name, and writes the vocabulary and per-split counts.
"""

from amazonia.common.errors import AmazoniaError
from amazonia.common.files import write_json_atomic, write_text_atomic
from amazonia.common.params import load_params
from amazonia.common.paths import LABEL_MAP_JSON, LABELS_CSV, LABELS_METRICS_JSON, RAW_DIR
from amazonia.common.stage import run_stage
from amazonia.data.kaggle import TAGS_CSV, find_missing_images, image_path
from amazonia.data.labels import encode_tags, label_counts, label_map, labels_csv_text, read_tags_csv


def main() -> None:
    params = load_params()
    source = RAW_DIR / TAGS_CSV
    table = read_tags_csv(source)
    encoded = encode_tags(
        table,
        val=params.split.val,
        test=params.split.test,
        missing_weather=params.labels.missing_weather,
        source=str(source),
    )
    missing = find_missing_images(RAW_DIR, [tag_row.image_name for tag_row in table])
    if missing:
        shown = ", ".join(str(image_path(RAW_DIR, n)) for n in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise AmazoniaError(
            f"{source}: {len(missing)} listed image(s) have no file: {shown}{more}; "
            "restore them or remove their rows"
        )

    write_text_atomic(LABELS_CSV, labels_csv_text(encoded.table))
    write_json_atomic(LABEL_MAP_JSON, label_map())
    write_json_atomic(
        LABELS_METRICS_JSON,
        {
            "rows": len(table),
            "encoded": len(encoded.table),
            "dropped": {"no weather tag": len(encoded.dropped)},
            "dropped_rows": encoded.dropped,
            "counts": label_counts(encoded.table),
        },
    )


if __name__ == "__main__":
    run_stage(main)
