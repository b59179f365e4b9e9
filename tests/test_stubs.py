"""``_native.pyi`` describes the extension module exactly (mypy's stubtest;
what it cannot check is in stubtest-allowlist.txt, each entry with its reason)."""

import os
import subprocess
import sys

import pytest

from testutils import TESTS_DIR

pytest.importorskip("mypy.stubtest")

ALLOWLIST = os.path.join(os.path.dirname(TESTS_DIR), "stubtest-allowlist.txt")


def test_native_stub_matches_the_module(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "cloudpickle_rs._native", "--allowlist", ALLOWLIST],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env={**os.environ, "MYPY_CACHE_DIR": str(tmp_path / "mypy_cache")},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
