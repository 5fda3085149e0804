"""The canonical formats, shared by the merger (writes) and the reading API (reads).

DESIGN.md "Canonical output": ``levels.parquet`` has one row per price-level change; a day
is done when its ``_MANIFEST.json`` exists.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

LEVELS_FILE: Final = "levels.parquet"
MANIFEST_FILE: Final = "_MANIFEST.json"  # written last: a day without it is not done

#: The schema of levels.parquet, exactly as DESIGN.md gives it.
LEVELS_SCHEMA: Final = pa.schema(
    [
        pa.field("local_ts", pa.int64(), nullable=False),  # receive time, ns
        pa.field("exchange_ts", pa.int64(), nullable=False),  # the exchange's E, ms (0: none)
        pa.field("prev_update_id", pa.int64(), nullable=False),  # spot U-1, futures pu
        pa.field("first_update_id", pa.int64(), nullable=False),  # U
        pa.field("last_update_id", pa.int64(), nullable=False),  # u
        pa.field("side", pa.string(), nullable=False),  # bid | ask
        pa.field("price", pa.float64(), nullable=False),
        pa.field("qty", pa.float64(), nullable=False),  # 0 removes the level
        pa.field("is_snapshot", pa.bool_(), nullable=False),  # rows of a full book image
        pa.field("source", pa.string(), nullable=False),  # region.collector
    ]
)
