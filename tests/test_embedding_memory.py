"""Indexing keeps the memory the forward pass frees for the next batch instead of faulting in fresh pages each time
(glibc), and gives glibc its defaults back afterwards; a user's own MALLOC_* settings win. Counted in page faults of
a fresh interpreter, not timed."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from typing import Any

import pytest
from conftest import REPO

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="the allocator settings are glibc's"
)

#: Allocates, fills and frees a 64 MiB array ten times, inside the context and after it; prints the page faults.
PROBE = """
import json, resource
import numpy as np
from simsearch.allocator import freed_memory_kept

def faults(rounds=10):
    # Page faults of rounds 2..n: the first may fault the block in either way.
    np.ones(16 * 2**20, dtype=np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds - 1):
        block = np.ones(16 * 2**20, dtype=np.float32)
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

with freed_memory_kept():
    inside = faults()
after = faults()
print(json.dumps({"inside": inside, "after": after}))
"""


def _probe(code: str, env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `code` in a fresh interpreter without the caller's MALLOC_* settings; the JSON of its last line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(env_extra or {}, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _faults(env_extra: dict[str, str]) -> dict[str, int]:
    return _probe(PROBE, env_extra)


def test_freed_memory_is_reused_while_indexing_and_returned_after() -> None:
    counts = _faults({})
    # After: glibc maps and unmaps the block each round, so each round faults its pages in again (fewer faults
    # where the kernel backs the block with huge pages, never none). Inside: the block's pages stay mapped.
    assert counts["after"] >= 9 * 16, counts
    assert counts["inside"] * 10 < counts["after"], counts


def test_a_users_own_malloc_settings_are_left_alone() -> None:
    counts = _faults({"MALLOC_MMAP_THRESHOLD_": str(1 << 20)})
    assert counts["after"] >= 9 * 16, counts
    assert counts["inside"] * 2 > counts["after"], counts


#: Memory kept for good (a lane, a server), then an indexing pass that keeps it only for its own block.
PROBE_FOR_GOOD = (
    PROBE.split("with freed_memory_kept():")[0].replace(
        "from simsearch.allocator import freed_memory_kept",
        "from simsearch.allocator import freed_memory_kept, keep_freed_memory",
    )
    + """
before = faults()
keep_freed_memory()
with freed_memory_kept():
    pass
print(json.dumps({"before": before, "after": faults()}))
"""
)


def test_memory_kept_for_good_stays_kept_after_an_indexing_pass() -> None:
    counts = _probe(PROBE_FOR_GOOD)
    assert counts["before"] >= 9 * 16, counts
    assert counts["after"] * 10 < counts["before"], counts


#: Memory kept after a large block is freed, then handed back; prints resident MiB at each step.
PROBE_RETURN = """
import json
import numpy as np
from simsearch.allocator import freed_memory_kept, return_freed_memory

def resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

with freed_memory_kept():
    block = np.ones(64 * 2**20, dtype=np.float32)  # 256 MiB
    del block
    kept = resident_mib()
    returned = return_freed_memory()
    print(json.dumps({"kept": kept, "returned": returned, "after": resident_mib()}))
"""


def test_freed_memory_goes_back_to_the_kernel_before_lanes_fork() -> None:
    """Lanes are forked after the heap's free pages are handed back, so they do not copy pages nobody needs."""
    counts = _probe(PROBE_RETURN)
    assert counts["returned"] is True
    assert counts["kept"] - counts["after"] > 200, counts  # the 256 MiB block's pages
