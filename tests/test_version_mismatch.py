"""A function or class pickled by value on one CPython minor version and
loaded on another fails with an error that names both versions.

The senders are the other CPythons on this machine, importing cloudpickle_rs
from the package directory, which holds the native module built for each
version (tests/run_all_pythons.sh builds every version before testing any).
"""

import glob
import os
import pickle
import subprocess
import sys

import pytest

import cloudpickle_rs
from testutils import TIMEOUT

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


def pyenv_python(version):
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}")))
    return found[-1] if found else None


def built_for(version):
    tag = version.replace(".", "")
    return bool(glob.glob(os.path.join(PACKAGE_DIR, f"_native.cpython-{tag}-*")))


OTHER_VERSIONS = [
    v
    for v in ("3.9", "3.10", "3.11", "3.12", "3.13")
    if v != HERE and pyenv_python(v) and built_for(v)
]


def test_other_versions_are_available():
    # The matrix runner builds every installed CPython first; with at least
    # two of them present, each sees the others.
    installed = [v for v in ("3.9", "3.10", "3.11", "3.12", "3.13") if pyenv_python(v)]
    if len(installed) < 2:
        pytest.skip("only one CPython 3.9-3.13 is installed here")
    assert OTHER_VERSIONS, f"no cloudpickle_rs build found for {installed} in {PACKAGE_DIR}"


def pickle_with(version, what):
    result = subprocess.run(
        [pyenv_python(version), "-I", "-c", SENDER, what, os.path.dirname(PACKAGE_DIR)],
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
