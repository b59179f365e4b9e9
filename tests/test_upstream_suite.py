"""Upstream cloudpickle's own test suite, run against cloudpickle-rs.

The suite (``tests/`` of cloudpickle 3.1.2's source, which the package
index's sdist leaves out) is fetched at test time from Debian's archive,
which keeps upstream's source tarball unchanged (``.orig.tar.gz``; its
SHA-256 is checked), and cached under ``.venvs/``. It never enters this
repository.

It runs twice in this interpreter's environment, with ``-s`` (under output
capture ``sys.stdout`` is pytest's, which upstream cannot pickle): once
against upstream cloudpickle 3.1.2 (installed with the test extras), once
with ``CLOUDPICKLE_RS_INSTALL=1``, so that ``install()`` serves
``cloudpickle`` in pytest's process and in every worker the suite starts.
Every test that passes against upstream must pass against ours.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import xml.etree.ElementTree as ElementTree

import pytest

from testutils import TESTS_DIR

UPSTREAM_VERSION = "3.1.2"
ARCHIVE = f"cloudpickle_{UPSTREAM_VERSION}.orig.tar.gz"
ARCHIVE_SHA256 = "7acae4307459d436eee740eea52ec9056f37b8b907d6aef7b0a97a1ccff90ff9"
#: Where to fetch it from; CPRS_UPSTREAM_SUITE_URL names another copy.
ARCHIVE_URL = os.environ.get(
    "CPRS_UPSTREAM_SUITE_URL",
    f"http://deb.debian.org/debian/pool/main/c/cloudpickle/{ARCHIVE}",
)
CACHE = os.path.join(os.path.dirname(TESTS_DIR), ".venvs", "upstream-suite")
SUITE_TIMEOUT = 900


def fetch_suite():
    """The directory of upstream's source tree, fetched and unpacked once."""
    tree = os.path.join(CACHE, f"cloudpickle-{UPSTREAM_VERSION}")
    if os.path.isdir(os.path.join(tree, "tests")):
        return tree
    os.makedirs(CACHE, exist_ok=True)
    try:
        with urllib.request.urlopen(ARCHIVE_URL, timeout=120) as response:
            data = response.read()
    except OSError as exc:
        pytest.fail(f"cannot fetch upstream's test suite from {ARCHIVE_URL}: {exc}")
    digest = hashlib.sha256(data).hexdigest()
    assert digest == ARCHIVE_SHA256, f"{ARCHIVE_URL}: sha256 {digest}, want {ARCHIVE_SHA256}"
    unpacked = tempfile.mkdtemp(dir=CACHE)
    with tempfile.TemporaryFile() as archive:
        archive.write(data)
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
            for member in members:
                assert not os.path.isabs(member.name) and ".." not in member.name.split("/")
            tar.extractall(unpacked, members=members)
    fresh = os.path.join(unpacked, f"cloudpickle-{UPSTREAM_VERSION}")
    # Upstream's CI pip-installs its helper package; the suite's workers get
    # PYTHONPATH=<tree>/tests:<tree>, so a link there makes it importable.
    os.symlink(
        os.path.join("cloudpickle_testpkg", "_cloudpickle_testpkg"),
        os.path.join(fresh, "tests", "_cloudpickle_testpkg"),
    )
    os.replace(fresh, tree)
    shutil.rmtree(unpacked)
    return tree


def run_suite(tree, report, *, ours):
    """Runs upstream's tests/ with -s; returns the ids that passed and the
    pytest output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.pop("CLOUDPICKLE_RS_INSTALL", None)
    if ours:
        env["CLOUDPICKLE_RS_INSTALL"] = "1"
    env["PYTHONPATH"] = os.path.join(tree, "tests")
    which = [
        sys.executable,
        "-c",
        "import cloudpickle; print(getattr(cloudpickle, '__cloudpickle_rs__', False))",
    ]
    served = subprocess.run(which, env=env, cwd=tree, capture_output=True, text=True)
    assert served.stdout.split() == [str(ours)], served.stdout + served.stderr
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-q",
         "-rfE", f"--junitxml={report}", "tests"],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT,
    )  # fmt: skip
    return passed_tests(report), result.stdout[-20000:] + result.stderr[-5000:]


def passed_tests(report):
    passed = set()
    for case in ElementTree.parse(report).iter("testcase"):
        if not any(child.tag in ("failure", "error", "skipped") for child in case):
            passed.add(f"{case.get('classname')}::{case.get('name')}")
    return passed


@pytest.fixture(scope="module")
def upstream_tree():
    return fetch_suite()


def test_upstream_suite_passes_what_it_passes_against_upstream(upstream_tree, tmp_path):
    upstream, upstream_log = run_suite(upstream_tree, tmp_path / "upstream.xml", ours=False)
    assert len(upstream) > 200, upstream_log
    ours, ours_log = run_suite(upstream_tree, tmp_path / "ours.xml", ours=True)
    missing = sorted(upstream - ours)
    summary = (
        f"upstream cloudpickle {UPSTREAM_VERSION}'s suite on {sys.version.split()[0]}: "
        f"{len(upstream)} pass against upstream, {len(ours)} against cloudpickle-rs"
    )
    print("\n" + summary)
    version = "{}.{}".format(*sys.version_info[:2])
    with open(os.path.join(CACHE, f"result-{version}.txt"), "w", encoding="utf-8") as f:
        f.write(summary + "\n")
    assert not missing, "\n".join(missing) + "\n--- our run:\n" + ours_log
