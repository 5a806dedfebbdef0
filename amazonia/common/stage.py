"""What every stage script shares: logging set-up and turning user errors into one line."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from amazonia.common.errors import AmazoniaError
from amazonia.common.files import disk_full_error

LOG_LEVEL_ENV = "AMAZONIA_LOG_LEVEL"


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a user error prints ``error: ...`` and exits 1, no traceback.

    A full disk is one too, wherever the write was (the atomic writers name their
    output; elsewhere the file the OS names, if any).
    """
    logging.basicConfig(
        level=os.environ.get(LOG_LEVEL_ENV, "WARNING").upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        main()
    except AmazoniaError as err:
        _fail(err)
    except Exception as err:
        full = disk_full_error(getattr(err, "filename", None), err)
        if full is None:
            raise
        _fail(full)


def _fail(err: AmazoniaError) -> None:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)
