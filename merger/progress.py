"""A one-line progress bar for ``booktape merge`` on a terminal (stderr).

Updated from the thread that stitches (chunks read of the symbol-day in hand), redrawn at
most ten times a second, erased when done. Off a terminal the merger logs JSON lines
instead, and this is not used.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from typing import TextIO


class ProgressBar:
    """``[#####.....]  42%  BTCUSDT  3/10 symbols  120/288 chunks``"""

    def __init__(self, stream: TextIO | None = None, min_interval_s: float = 0.1) -> None:
        self._stream = stream or sys.stderr
        self._min_interval = min_interval_s
        self._last = 0.0
        self._lock = threading.Lock()
        self._drawn = False

    def update(self, label: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < self._min_interval:
            return
        with self._lock:
            self._last = now
            fraction = done / total if total else 1.0
            width = max(10, min(40, shutil.get_terminal_size((80, 20)).columns - 60))
            filled = int(fraction * width)
            bar = "#" * filled + "." * (width - filled)
            text = f"\r[{bar}] {fraction:4.0%}  {label}  {done}/{total} chunks\x1b[K"
            self._stream.write(text)
            self._stream.flush()
            self._drawn = True

    def close(self) -> None:
        with self._lock:
            if self._drawn:
                self._stream.write("\r\x1b[K")
                self._stream.flush()
                self._drawn = False
