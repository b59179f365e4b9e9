"""Regenerates the corpus of pickles written by upstream cloudpickle.

For each upstream version in :data:`VERSIONS` and each CPython 3.9-3.15
found (pyenv's, else ``python3.X`` on ``PATH``), this creates a temporary virtualenv holding only that
cloudpickle, runs ``generate.py`` there, and keeps
``<X.Y>/cloudpickle-<version>.pkl.gz`` and ``.json`` when upstream could
pickle and load back at least the basic function case on that Python.
``MANIFEST.json`` records every combination: generated (with the cases
upstream itself did not round-trip, which the test leaves out) or not, and
why. ``tests/test_upstream_compat.py`` loads the files of the running Python
with cloudpickle-rs alone.

Regenerate (needs network access to PyPI, or a pip cache holding the
versions; takes a few minutes), from the repository root::

    python3 tests/upstream_corpus/make_corpus.py            # every combination
    python3 tests/upstream_corpus/make_corpus.py 3.12 3.13  # only these Pythons
    python3 tests/upstream_corpus/make_corpus.py --upstream 3.1.3  # only this upstream

3.14 and 3.15 live in the sid chroot here (see ``.ci/sid-chroot``)::

    bash .ci/sid-chroot mount
    bash .ci/sid-chroot run python3.14 tests/upstream_corpus/make_corpus.py 3.14 3.15
    bash .ci/sid-chroot umount

This script runs on any Python 3.9+ and needs nothing but the standard library.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
VERSIONS = ("1.6.0", "2.0.0", "2.2.1", "3.0.0", "3.1.2", "3.1.3")
PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15")
MANIFEST = os.path.join(HERE, "MANIFEST.json")
#: A combination counts as generated only if upstream round-trips this case.
BASIC_CASE = "lambda"


def find_python(minor):
    """The newest pyenv CPython ``minor`` (e.g. "3.11"), else ``python3.11``
    on ``PATH``, or None."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    pattern = os.path.join(root, "versions", f"{minor}.*", "bin", f"python{minor}")
    found = sorted(glob.glob(pattern), key=version_key)
    return found[-1] if found else shutil.which(f"python{minor}")


def version_key(path):
    """[3, 11, 7] for .../versions/3.11.7/bin/python3.11."""
    version = path.split(os.sep)[-3]
    return [int(part) for part in version.split(".") if part.isdigit()]


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)


def last_line(text):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def venv_with(python, version, directory):
    """A new virtualenv in ``directory`` with cloudpickle ``version``; its python."""
    made = run([python, "-m", "venv", directory])
    if made.returncode != 0:
        raise RuntimeError("venv: " + last_line(made.stderr))
    venv_python = os.path.join(directory, "bin", "python")
    pip = [venv_python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    installed = run(pip + [f"cloudpickle=={version}"])
    if installed.returncode != 0:
        raise RuntimeError("pip: " + last_line(installed.stderr))
    return venv_python


def generate(python, version, out_dir):
    """Runs generate.py for one combination; returns its manifest entry."""
    with tempfile.TemporaryDirectory(prefix="cprs_corpus_") as scratch:
        try:
            venv_python = venv_with(python, version, os.path.join(scratch, "venv"))
        except RuntimeError as e:
            return {"generated": False, "reason": str(e)}
        # Copies in a short path: code objects carry their file name.
        for name in ("generate.py", "probes.py"):
            shutil.copy(os.path.join(HERE, name), scratch)
        result = run([venv_python, os.path.join(scratch, "generate.py"), out_dir], cwd=scratch)
    if result.returncode != 0:
        return {"generated": False, "reason": "generate.py: " + last_line(result.stderr)}
    stem = os.path.join(out_dir, f"cloudpickle-{version}")
    with open(stem + ".json") as f:
        cases = json.load(f)["cases"]
    excluded = {case: info["upstream"] for case, info in cases.items() if info["upstream"] != "ok"}
    if BASIC_CASE in excluded:
        for suffix in (".pkl.gz", ".json"):
            os.remove(stem + suffix)
        return {
            "generated": False,
            "reason": f"upstream does not round-trip a lambda here: {excluded[BASIC_CASE]}",
        }
    return {"generated": True, "cases": len(cases) - len(excluded), "excluded": excluded}


def python_version(python):
    version = run([python, "-c", "import platform; print(platform.python_version())"])
    return version.stdout.strip()


def read_manifest():
    if os.path.exists(MANIFEST):
        with open(MANIFEST) as f:
            return json.load(f)
    return {}


def main(minors, versions):
    manifest = read_manifest()
    for minor in minors:
        python = find_python(minor)
        entries = manifest.setdefault(minor, {})
        if python is None:
            print(f"{minor}: no interpreter found, skipped")
            continue
        out_dir = os.path.join(HERE, minor)
        os.makedirs(out_dir, exist_ok=True)
        for version in versions:
            for stale in glob.glob(os.path.join(out_dir, f"cloudpickle-{version}.*")):
                os.remove(stale)
            entry = generate(python, version, out_dir)
            entry["python"] = python_version(python)
            entries[version] = entry
            outcome = "ok" if entry["generated"] else entry["reason"]
            print(f"{minor} cloudpickle {version}: {outcome}")
            for case, why in entry.get("excluded", {}).items():
                print(f"    excluded {case}: {why}")
        if not os.listdir(out_dir):
            os.rmdir(out_dir)
    with open(MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Regenerate the upstream corpus.")
    parser.add_argument("pythons", nargs="*", default=PYTHONS, help="CPython minor versions")
    parser.add_argument("--upstream", action="append", help="upstream versions (default: all)")
    options = parser.parse_args()
    main(options.pythons, options.upstream or VERSIONS)
