"""The fuzz harness (tests/fuzz_reconstructors.py), in short: hostile
arguments for every native callable and mutated pickles, a few thousand
cases in worker subprocesses; none may crash, hang or raise anything but an
Exception. The full run (1,000,000 cases) is the command in the harness's
docstring."""

import re
import subprocess
import sys

import pytest

from testutils import TESTS_DIR

HARNESS = f"{TESTS_DIR}/fuzz_reconstructors.py"
SUMMARY = re.compile(r"^fuzz passed: (\d+) of (\d+) cases \(calls (\d+), pickles (\d+)\) without a crash", re.M)


def run_harness(*args, timeout=600):
    return subprocess.run([sys.executable, HARNESS, *args], capture_output=True, text=True, timeout=timeout)


def test_short_fuzz_run_passes():
    result = run_harness("--cases", "2000", "--jobs", "2")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = SUMMARY.search(result.stdout)
    assert summary, result.stdout
    done, asked, calls, pickles = map(int, summary.groups())
    assert done == asked == 2000 and calls == pickles == 1000


def test_every_public_callable_of_native_is_fuzzed():
    import fuzz_reconstructors as harness

    points = harness.entry_points(harness.object_pool())
    assert set(points) == harness.public_callables()


def test_a_worker_that_dies_is_reported_as_a_crash(monkeypatch, capsys):
    # The driver must tell a worker killed by a signal from a passing one.
    import fuzz_reconstructors as harness

    segfault = [sys.executable, "-c", "import ctypes; ctypes.string_at(0)"]
    monkeypatch.setattr(harness, "worker_command", lambda part, seed, count: segfault)
    assert harness.driver(10, 5, seed=1, jobs=1) == 1
    out = capsys.readouterr().out
    assert "worker CRASHED with signal SIGSEGV" in out
    assert "replay: python" in out and "--verbose" in out
    assert "fuzz FAILED" in out and "0 of 10 cases" in out


@pytest.mark.slow
def test_long_fuzz_run_passes():
    result = run_harness("--cases", "100000", "--jobs", "2", timeout=3600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert SUMMARY.search(result.stdout)
