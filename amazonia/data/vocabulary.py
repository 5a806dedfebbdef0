"""The label vocabulary: which Kaggle tags exist and in which order they are encoded.

The one place that knows it: records, model heads, metrics, the export's assets and
the client import it from here. No dependencies, so a client reading it stays light.
"""

# Alphabetical, as in the article: the column order of the encoded vectors.
LABELS_WEATHER: tuple[str, ...] = ("clear", "cloudy", "haze", "partly_cloudy")
LABELS_GROUND: tuple[str, ...] = (
    "agriculture",
    "artisinal_mine",  # sic: Kaggle's spelling
    "bare_ground",
    "blooming",
    "blow_down",
    "conventional_mine",
    "cultivation",
    "habitation",
    "primary",
    "road",
    "selective_logging",
    "slash_burn",
    "water",
)
ALL_LABELS: tuple[str, ...] = LABELS_WEATHER + LABELS_GROUND
