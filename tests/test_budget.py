"""The memory budget (issue 17, first piece): the limit's forms and environment variable,
and whole-table kernels refusing with MemoryLimitError before they pass it — the pool back
at zero afterwards, and results under an ample limit unchanged."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

import ferrobatch as fb
from ferrobatch import _core


@pytest.fixture(autouse=True)
def unlimited():
    yield
    fb.set_memory_limit(None)


def _memory() -> int:
    """The machine's memory as this test reads it: /proc/meminfo, or a lower cgroup limit."""
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        if os.path.exists(path):
            text = open(path).read().strip()
            if text.isdigit():
                total = min(total, int(text))
    return total


@pytest.mark.parametrize(
    ("given", "bytes_"),
    [(1000, 1000), (0, 0), ("4GiB", 4 * 2**30), ("4GB", 4 * 10**9), ("1.5 MiB", 3 * 2**19),
     ("512kb", 512_000), ("1000", 1000), ("7B", 7)],
)  # fmt: skip
def test_limit_forms(given, bytes_):
    fb.set_memory_limit(given)
    assert fb.get_memory_limit() == bytes_
    fb.set_memory_limit(None)
    assert fb.get_memory_limit() is None


def test_percent_of_the_machine():
    fb.set_memory_limit("50%")
    # Page-size rounding of the two readings of the total.
    assert abs(fb.get_memory_limit() - _memory() // 2) <= 2**20


@pytest.mark.parametrize("bad", [-1, "lots", "4 GiBs", "0%", "150%", "-5MB", ""])
def test_bad_limits_are_refused(bad):
    with pytest.raises(ValueError):
        fb.set_memory_limit(bad)
    assert fb.get_memory_limit() is None


@pytest.mark.parametrize("bad", [True, 1.5, [1]])
def test_limits_of_other_types_are_refused(bad):
    with pytest.raises(TypeError):
        fb.set_memory_limit(bad)


def test_the_environment_sets_the_limit():
    code = "import ferrobatch as fb; print(fb.get_memory_limit())"
    env = {**os.environ, "FERROBATCH_MEMORY_LIMIT": "2GiB"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == str(2**30 * 2), out.stderr
    env["FERROBATCH_MEMORY_LIMIT"] = "plenty"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "FERROBATCH_MEMORY_LIMIT='plenty'" in out.stderr


def _tables(n: int = 200_000) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(1)
    left = pa.table({"k": rng.integers(0, 1000, n), "v": rng.standard_normal(n),
                     "s": pa.array([f"s{i % 97}" for i in range(n)])})  # fmt: skip
    right = pa.table({"k": np.arange(1000), "w": np.arange(1000) * 0.5})
    return left, right


def _kernels(left: pa.Table, right: pa.Table) -> dict:
    return {
        "sort": lambda: fb.sort(left, ["s", "v"]),
        "dedup": lambda: fb.dedup(left, ["k", "s"]),
        "group_by": lambda: fb.group_by(left, ["k"], {"m": ("v", "mean")}),
        "join": lambda: fb.join(left, right, "k"),
    }


@pytest.mark.parametrize("kernel", ["sort", "dedup", "group_by", "join"])
def test_whole_table_kernels_refuse_past_the_limit(kernel):
    left, right = _tables()
    run = _kernels(left, right)[kernel]
    want = run()
    fb.set_memory_limit("1MiB")  # the input alone is several MiB
    with pytest.raises(fb.MemoryLimitError, match=f"{kernel} needs .* memory limit is 1.0 MiB"):
        run()
    assert isinstance(fb.MemoryLimitError("x"), MemoryError)
    assert _core.memory_reserved() == 0
    fb.set_memory_limit("1GiB")
    assert run().equals(want)
    assert _core.memory_reserved() == 0
