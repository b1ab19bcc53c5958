"""The malloc tuning really stops repeated large allocations from page-faulting."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROBE = """
import json, resource, torch
from backend.models.allocator import keep_freed_memory

def faults_of_repeated_64mb_buffers():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        a = torch.ones(16 * 2**20)  # 64 MB, above glibc's 32 MB mmap cap (torch uses malloc)
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults_of_repeated_64mb_buffers()
tuned = keep_freed_memory()
faults_of_repeated_64mb_buffers()  # the first pass grows the heap once
print(json.dumps({"default": default, "tuned": tuned, "after": faults_of_repeated_64mb_buffers()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    if not result["tuned"]:
        pytest.skip("this C library has no mallopt (not glibc)")
    pages = 10 * 64 * 2**20 // 4096
    assert result["default"] > 0.9 * pages  # every buffer faulted in afresh
    assert result["after"] < 0.05 * pages
