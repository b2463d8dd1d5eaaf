import platform

import pytest


def test_keep_freed_memory_applies_on_glibc_and_can_be_turned_off(monkeypatch):
    from characterlab.allocator import keep_freed_memory

    monkeypatch.setenv("CHARACTERLAB_MALLOC", "default")
    assert keep_freed_memory() is False
    monkeypatch.delenv("CHARACTERLAB_MALLOC")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert keep_freed_memory() is True  # every value within mallopt's limits (it refuses what is not)


def test_thresholds_fit_mallopt():
    from characterlab import allocator

    assert allocator.MMAP_THRESHOLD <= 32 << 20  # glibc's cap on 64-bit
    assert all(0 < v < 2**31 for v in (allocator.MMAP_THRESHOLD, allocator.TRIM_THRESHOLD, allocator.TOP_PAD))
