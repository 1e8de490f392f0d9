"""glibc heap settings: a frame-sized buffer stays mapped after it is freed, for the next frame."""
import subprocess
import sys

import pytest

PROBE = """
import os, sys
import numpy as np
from regnet_pillars_ros.runtime.heap import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "keep" else None
def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
before = rss_mib()
np.ones(8 << 20)  # 64 MB, allocated, touched and freed: one frame's feature map
print(took, rss_mib() - before)
"""


def rss_growth_mib(mode: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True, timeout=120)
    took, growth = out.stdout.split()
    return took, float(growth)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and /proc")
def test_a_freed_frame_buffer_stays_mapped_for_the_next_frame():
    took, kept = rss_growth_mib("keep")
    _, default = rss_growth_mib("default")
    assert took == "True"
    assert kept > 60  # the 64 MB stay in the heap
    assert default < 8  # by default glibc unmapped them on free
