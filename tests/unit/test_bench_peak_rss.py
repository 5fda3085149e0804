"""bench.common.peak_rss_mib: a child process's own peak, not its parent's.

Ground truth: a parent that holds 300 MiB resident starts a child that holds almost
nothing; Linux's ``ru_maxrss`` of that child reports the parent's high-water mark.
"""

from __future__ import annotations

import subprocess
import sys

from bench.common import peak_rss_mib

_PARENT = """
import subprocess, sys
held = bytearray(300 * 2**20)
held[::4096] = b"\\1" * len(held[::4096])  # touch every page: resident
code = "import resource; from bench.common import peak_rss_mib; "
code += "print(peak_rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
print(done.stdout)
"""


def test_a_child_reports_its_own_peak_not_its_parents() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PARENT], capture_output=True, text=True, check=True
    ).stdout
    own, maxrss = (float(x) for x in out.split())
    assert own < 150  # an interpreter importing bench.common: tens of MiB
    if sys.platform == "linux":
        assert maxrss > 300  # what the parent held: the figure the bench used to print


def test_this_process_peak_is_at_least_its_current_size() -> None:
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1]) * 4096 / 2**20
    assert peak_rss_mib() >= resident * 0.99
