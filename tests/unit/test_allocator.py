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


def test_release_freed_memory_hands_kept_memory_back():
    """With the kept-memory settings, freed tensors stay resident until a unit ends and
    ``release_freed_memory`` trims the heap."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    import psutil
    import torch

    from characterlab.allocator import keep_freed_memory, release_freed_memory

    assert keep_freed_memory()
    proc = psutil.Process()
    blocks = [torch.ones(1 << 18) for _ in range(400)]  # 400 x 1 MB, each below the mmap threshold
    del blocks
    kept = proc.memory_info().rss
    release_freed_memory()
    assert kept - proc.memory_info().rss > 200 << 20
