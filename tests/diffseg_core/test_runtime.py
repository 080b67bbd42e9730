"""The CPU allocator setting (`diffseg_core.runtime`): applied once, opt-out by environment."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from diffseg_core import runtime


@pytest.fixture
def fresh(monkeypatch):
    """A process where the setting was not tried yet, with a recording mallopt."""
    calls: list[tuple[int, int]] = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(runtime, "_state", {})
    monkeypatch.setattr(runtime, "_libc", FakeLibc)
    monkeypatch.setattr(runtime.sys, "platform", "linux")
    monkeypatch.delenv(runtime.ENV, raising=False)
    return calls


def test_the_threshold_is_set_once_per_process(fresh):
    assert runtime.tune_cpu_allocator() is True
    assert runtime.tune_cpu_allocator() is True
    assert fresh == [(-3, runtime.MMAP_THRESHOLD)]  # M_MMAP_THRESHOLD, one call


def test_the_environment_keeps_glibc_defaults(fresh, monkeypatch):
    monkeypatch.setenv(runtime.ENV, "default")
    assert runtime.tune_cpu_allocator() is False
    assert fresh == []


def test_not_glibc_is_left_alone(fresh, monkeypatch):
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime.tune_cpu_allocator() is False
    assert fresh == []


def test_a_refused_value_reports_false(monkeypatch):
    class Refusing:
        def mallopt(self, param, value):
            return 0

    monkeypatch.setattr(runtime, "_state", {})
    monkeypatch.setattr(runtime, "_libc", Refusing)
    monkeypatch.setattr(runtime.sys, "platform", "linux")
    monkeypatch.delenv(runtime.ENV, raising=False)
    assert runtime.tune_cpu_allocator() is False


def test_segmenting_on_the_cpu_applies_it(fresh):
    from diffseg_core import DiffSegSegmenter, SegmenterConfig

    seg = DiffSegSegmenter(SegmenterConfig(model="tiny-random", size=64, device="cpu"))
    seg.segment_one(np.zeros((64, 64, 3), np.uint8))
    assert fresh == [(-3, runtime.MMAP_THRESHOLD)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_real_glibc_accepts_the_threshold(monkeypatch):
    monkeypatch.setattr(runtime, "_state", {})
    monkeypatch.delenv(runtime.ENV, raising=False)
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert runtime.tune_cpu_allocator() is True
