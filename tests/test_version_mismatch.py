"""A function or class pickled by value on one CPython minor version and
loaded on another fails with an error that names both versions.

The senders are the other CPythons the test runner found (3.14 and 3.15 may
live in the sid chroot), importing cloudpickle_rs from the package directory,
which holds the native module built for each version (tests/run_all_pythons.sh
builds every version before testing any). Run on each of the seven versions,
this covers every ordered pair.
"""

import glob
import os
import pickle
import subprocess
import sys

import pytest

import cloudpickle_rs
from testutils import TIMEOUT, interpreters

PACKAGE_DIR = os.path.dirname(os.path.abspath(cloudpickle_rs.__file__))
HERE = f"{sys.version_info.major}.{sys.version_info.minor}"

SENDER = """
import sys
sys.path.insert(0, sys.argv[2])
import cloudpickle_rs

class Counter:
    def __init__(self):
        self.n = 0
    def bump(self):
        self.n += 1
        return self.n

base = 10
payloads = {
    "lambda": lambda x: x + base,
    "class": Counter,
    "instance": Counter(),
}
sys.stdout.buffer.write(cloudpickle_rs.dumps(payloads[sys.argv[1]]))
"""


def built_for(version):
    tag = version.replace(".", "")
    return bool(glob.glob(os.path.join(PACKAGE_DIR, f"_native.cpython-{tag}-*")))


#: How to run each other CPython 3.9-3.15 the test runner found (pyenv's,
#: python3.X on PATH, or the sid chroot's 3.14 and 3.15 from the host).
PYTHONS = {v: argv for v, argv in interpreters().items() if v != HERE}
OTHER_VERSIONS = sorted((v for v in PYTHONS if built_for(v)), key=lambda v: tuple(map(int, v.split("."))))


def test_other_versions_are_available():
    # The matrix runner builds every CPython it finds before testing any;
    # each version's run then loads the pickles of every other one.
    if not PYTHONS:
        pytest.skip("run through tests/run_all_pythons.sh to test across versions")
    assert set(OTHER_VERSIONS) == set(PYTHONS), (
        f"no cloudpickle_rs build in {PACKAGE_DIR} for {sorted(set(PYTHONS) - set(OTHER_VERSIONS))}"
    )


def pickle_with(version, what):
    result = subprocess.run(
        [*PYTHONS[version], "-I", "-c", SENDER, what, os.path.dirname(PACKAGE_DIR)],
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


@pytest.mark.parametrize("version", OTHER_VERSIONS)
@pytest.mark.parametrize("what", ["lambda", "class", "instance"])
def test_loading_code_from_another_minor_version_names_both(version, what):
    payload = pickle_with(version, what)
    with pytest.raises(pickle.UnpicklingError) as info:
        pickle.loads(payload)
    message = str(info.value)
    assert f"CPython {version}" in message
    assert f"CPython {HERE}" in message
    assert "same minor version" in message
