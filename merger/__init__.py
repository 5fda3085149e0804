"""The booktape nightly merger (see DESIGN.md).

A merge process runs all of Arrow on the C library's allocator: pyarrow hands its own pool
to the Arrow conversion but not to the Parquet column writers, which allocate from Arrow's
default pool, mimalloc, whose huge-page arenas kept ~7-15 MiB resident for a few hundred
KB in use (peak RSS of a merge: 151 -> 144 MiB). On the C library's allocator that memory
is handed back by :func:`merger.memory.release_free_memory`. Arrow reads
``ARROW_DEFAULT_MEMORY_POOL`` once, when pyarrow is first imported: a value the user set
is kept, and a process that imported pyarrow before this package keeps its pool.
"""

import os

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
