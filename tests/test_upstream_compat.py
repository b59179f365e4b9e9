"""Pickles written by upstream cloudpickle (1.6 to 3.1) load with cloudpickle-rs alone.

The corpus in ``tests/upstream_corpus/<X.Y>/`` was written by each upstream
version that works on CPython X.Y (see ``make_corpus.py`` and its
``MANIFEST.json``); beside each pickle file, a JSON file holds the behaviour
of the original objects, measured by ``probes.py`` when the corpus was made.
Here every corpus file of the running Python is loaded with plain
``pickle.loads`` in a fresh interpreter where upstream cloudpickle cannot be
imported and ``cloudpickle_rs.install()`` serves the ``cloudpickle`` names, and
each case must behave as its original did. Cases that upstream itself did not
round-trip when the corpus was made are listed in the JSON and left out.
"""

import functools
import glob
import json
import os
import sys

import pytest

from cloudpickle_rs import _trust
from testutils import TESTS_DIR, run_script

CORPUS_DIR = os.path.join(TESTS_DIR, "upstream_corpus")
HERE = f"{sys.version_info.major}.{sys.version_info.minor}"


def corpus_versions():
    """Upstream versions with a corpus file for the running Python."""
    pattern = os.path.join(CORPUS_DIR, HERE, "cloudpickle-*.pkl.gz")
    names = (os.path.basename(path) for path in glob.glob(pattern))
    return sorted(name[len("cloudpickle-") : -len(".pkl.gz")] for name in names)


def corpus_stem(version):
    return os.path.join(CORPUS_DIR, HERE, f"cloudpickle-{version}")


@functools.cache
def expectations(version):
    """``{case: {"expected": ..., "upstream": "ok" or what upstream did}}``."""
    with open(corpus_stem(version) + ".json") as f:
        return json.load(f)["cases"]


def corpus_cases():
    return [
        pytest.param(version, case, id=f"{version}-{case}")
        for version in corpus_versions()
        for case, info in sorted(expectations(version).items())
        if info["upstream"] == "ok"
    ]


#: Makes upstream cloudpickle (installed in the test environments) unimportable:
#: a module found in a ``cloudpickle`` package directory is refused, whatever
#: else serves the ``cloudpickle`` names (install()) is not.
HIDE_UPSTREAM = """
import importlib.abc
import os
import sys


class HideUpstreamCloudpickle(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "cloudpickle" and not name.startswith("cloudpickle."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is None:
                continue
            origin = spec.origin or ""
            if os.path.basename(os.path.dirname(origin)) == "cloudpickle":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return spec
        return None


sys.meta_path.insert(0, HideUpstreamCloudpickle())
try:
    import cloudpickle
except ImportError:
    pass
else:
    raise SystemExit("upstream cloudpickle is still importable")
"""

INSTALL = "cloudpickle_rs.install()"


def isolated_header():
    """Script source: upstream hidden, then cloudpickle-rs serving its names."""
    return HIDE_UPSTREAM + "\nimport cloudpickle_rs\n" + INSTALL + "\n"


LOADER = """
import json
sys.path.insert(0, {corpus_dir!r})
import probes

results = probes.load_and_probe({corpus_file!r})
foreign = sorted(
    name
    for name, module in sys.modules.items()
    if name.split(".")[0] == "cloudpickle"
    and not getattr(module, "__name__", "").startswith("cloudpickle_rs")
    and not getattr(module, "__cloudpickle_rs__", False)
)
if foreign:
    raise SystemExit(f"modules that are not cloudpickle_rs served cloudpickle names: {{foreign}}")
json.dump(results, sys.stdout)
"""


#: The reconstructors that upstream 1.6-3.1 pickles name (on CPython 3.8+),
#: under ``cloudpickle.cloudpickle`` or ``cloudpickle.cloudpickle_fast``
#: (the sentinel ``_empty_cell_value`` is checked apart).
UPSTREAM_RECONSTRUCTORS = sorted(_trust.UPSTREAM_RECONSTRUCTORS - {"_empty_cell_value"})

NAME_CHECKS = """
import pickle
import types

def load_global(module, name):
    return pickle.loads(f"c{{module}}\\n{{name}}\\n.".encode())

mirror = cloudpickle_rs.cloudpickle
for module in ("cloudpickle.cloudpickle", "cloudpickle.cloudpickle_fast"):
    for name in {names!r}:
        found = load_global(module, name)
        assert found is getattr(mirror, name), (module, name)
        assert type(found) is type(len), f"{{module}}.{{name}} is not native"
    sentinel = load_global(module, "_empty_cell_value")
    assert sentinel is mirror._empty_cell_value
    try:
        mirror._make_cell(sentinel).cell_contents
    except ValueError:
        pass
    else:
        raise AssertionError("_make_cell(_empty_cell_value) must be an empty cell")

# Upstream writes the classes of ``types`` as _builtin_type(<name in types>):
# FunctionType as "LambdaType" (the later alias), and before 1.3 "ClassType".
def builtin_type(name):
    return pickle.loads(f"ccloudpickle.cloudpickle\\n_builtin_type\\n(V{{name}}\\ntR.".encode())

assert builtin_type("LambdaType") is types.FunctionType
assert builtin_type("CellType") is types.CellType
assert builtin_type("CodeType") is types.CodeType
assert builtin_type("ClassType") is type
print("ok")
"""


def test_upstream_names_resolve_to_natives():
    source = isolated_header() + NAME_CHECKS.format(names=UPSTREAM_RECONSTRUCTORS)
    assert run_script(source, label="name checks").strip() == "ok"


@functools.cache
def loaded_results(version):
    """The probes' results on one corpus file, loaded by cloudpickle-rs alone."""
    source = isolated_header() + LOADER.format(
        corpus_dir=CORPUS_DIR,
        corpus_file=corpus_stem(version) + ".pkl.gz",
    )
    return json.loads(run_script(source, label=f"loader of cloudpickle {version} pickles"))


@pytest.mark.parametrize("version, case", corpus_cases())
def test_upstream_pickle_loads_and_behaves(version, case):
    assert loaded_results(version)[case] == expectations(version)[case]["expected"]


def test_corpus_files_match_the_manifest():
    # A combination the manifest says was generated must have its files here,
    # so that a lost file cannot silently drop its tests.
    with open(os.path.join(CORPUS_DIR, "MANIFEST.json")) as f:
        manifest = json.load(f)
    if HERE not in manifest:
        pytest.skip(f"the corpus was not generated for CPython {HERE}")
    generated = sorted(v for v, entry in manifest[HERE].items() if entry["generated"])
    assert corpus_versions() == generated
    for version in generated:
        assert os.path.exists(corpus_stem(version) + ".json")
