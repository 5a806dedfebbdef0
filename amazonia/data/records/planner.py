"""Which shard each record goes to: one rule for the local and the Beam writer.

Records fill shards in ``labels.csv`` order; a shard is closed when the next record,
its framing not counted (as the first writer did; the shards' bytes depend on it), would
take it past ``shard_bytes``. The rule depends only on the records' sizes in
that order, so the local writer can apply it while streaming and the Beam runner
over all sizes at once, and both cut the same shards.
"""

from __future__ import annotations

from collections.abc import Iterable

from amazonia.data.records.tfrecord import FRAMING_BYTES


class ShardPlanner:
    """Assigns records, one at a time in order, to shards of about ``shard_bytes``.

    Example::

        planner = ShardPlanner(shard_bytes=100)
        [planner.assign(n) for n in (60, 20, 30)]  # [0, 0, 1]: 76 + 20 <= 100, then 112 + 30 > 100
    """

    def __init__(self, shard_bytes: int):
        self.shard_bytes = shard_bytes
        self.shards = 0  # shards started so far
        self._filled = 0  # bytes in the current shard, framing included

    def assign(self, record_bytes: int) -> int:
        """The 0-based shard of the next record, ``record_bytes`` long (unframed)."""
        if self.shards == 0 or self._filled + record_bytes > self.shard_bytes:
            self.shards += 1
            self._filled = 0
        self._filled += record_bytes + FRAMING_BYTES
        return self.shards - 1


def plan_shards(record_sizes: Iterable[int], shard_bytes: int) -> tuple[list[int], int]:
    """The shard of every record (sizes in order) and the number of shards."""
    planner = ShardPlanner(shard_bytes)
    return [planner.assign(size) for size in record_sizes], planner.shards
