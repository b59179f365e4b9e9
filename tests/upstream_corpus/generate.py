"""Writes one corpus file pair with the upstream cloudpickle of this interpreter.

Run by ``make_corpus.py`` inside a virtualenv holding one upstream
cloudpickle version (and not cloudpickle-rs)::

    python generate.py OUT_DIR

writes ``OUT_DIR/cloudpickle-<version>.pkl.gz`` (a gzipped plain pickle of
``{"payloads": {case: bytes or [bytes, ...]}, ...}``, each payload written by
``cloudpickle.dumps``) and ``OUT_DIR/cloudpickle-<version>.json`` (for each
case the behaviour of the original objects, per ``probes.py``, and whether
upstream itself reproduced it when loading the payload in a fresh
interpreter). Cases that upstream cannot pickle, or cannot load back with the
same behaviour, are recorded as such. The objects live in this script's
``__main__`` so that cloudpickle pickles them by value.
"""

import abc
import collections
import dataclasses
import enum
import gzip
import json
import logging
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import types
import typing
import weakref
import xml.etree.ElementTree

import cloudpickle

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import probes  # noqa: E402

SCALE = 3


def square_plus(x, y=2):
    return x * x + y + SCALE


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def make_counter(start):
    count = start

    def bump(step=1):
        nonlocal count
        count += step
        return count

    return bump


def make_recursive_closure():
    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)

    return fact


def make_empty_cell_closure():
    if False:
        late = None  # noqa: F841 (never bound: the cell stays empty)

    def read():
        return late

    return read


def countdown(n):
    while n > 0:
        yield n
        n -= 1


def documented(a, *, scale: int = 10) -> int:
    """Multiply a by scale."""
    return a * scale


documented.tag = "custom"


def uses_submodule(text):
    return xml.etree.ElementTree.fromstring(text)[0].tag


shared_value = 0


def set_shared(value):
    global shared_value
    shared_value = value


def get_shared():
    return shared_value


class Shape:
    sides = 0

    def __init__(self, size):
        self.size = size

    def perimeter(self):
        return self.sides * self.size

    @property
    def doubled(self):
        return self.size * 2

    @classmethod
    def unit(cls):
        return cls(1)

    @staticmethod
    def describe():
        return "shape"


class Square(Shape):
    """A square."""

    sides = 4


class Plugin(abc.ABC):
    @abc.abstractmethod
    def run(self):
        pass


class External:
    def run(self):
        return "external"


Plugin.register(External)


class Tiny:
    pass


@dataclasses.dataclass
class Point:
    x: int
    y: int = dataclasses.field(default=0)


class Pair(typing.NamedTuple):
    left: int
    right: str = "r"


class Color(enum.Enum):
    RED = 1
    GREEN = 2
    CRIMSON = 1

    def label(self):
        return self.name.lower()


dynamic_module = types.ModuleType("corpus_dynamic", "A module made at run time.")
exec("FACTOR = 4\ndef scale(x):\n    return x * FACTOR\n", dynamic_module.__dict__)

T = typing.TypeVar("T", bound=int)
K = typing.TypeVar("K", str, bytes)
V_co = typing.TypeVar("V_co", covariant=True)


class Box(typing.Generic[T]):
    def __init__(self, item: T):
        self.item = item

    def get(self) -> T:
        return self.item


def first(items: typing.List[T]) -> typing.Optional[T]:
    return items[0] if items else None


def open_text_file(directory):
    path = os.path.join(directory, "corpus.txt")
    with open(path, "w") as f:
        f.write("line one\nline two\n")
    text_file = open(path)
    text_file.read(5)
    return text_file


def cases(directory):
    """``{case: object}``; a list value is a case pickled one item at a time."""
    return {
        "lambda": lambda x: x * SCALE + 1,
        "global_function": square_plus,
        "recursive_global": fib,
        "closure_counter": make_counter(10),
        "recursive_closure": make_recursive_closure(),
        "empty_cell": make_empty_cell_closure(),
        "generator_function": countdown,
        "function_attributes": documented,
        "submodule": uses_submodule,
        "shared_globals": (set_shared, get_shared),
        "dynamic_class": [Square, (Square(5), Square(2).perimeter)],
        "abc_registry": (Plugin, External),
        "dataclass": Point,
        "named_tuple": Pair,
        "enum_class": Color,
        "enum_member": Color.GREEN,
        "dynamic_module": dynamic_module,
        "type_vars": (T, K, V_co),
        "generic_class": Box,
        "type_hints": first,
        "builtin_types": (
            types.CellType,
            types.CodeType,
            types.FunctionType,
            types.ModuleType,
        ),
        "code_and_cell": (square_plus.__code__, make_counter(3).__closure__[0]),
        "getset_descriptor": types.FunctionType.__dict__["__code__"],
        "dict_views": (
            {"a": 1, "b": 2}.keys(),
            {"a": 1, "b": 2}.values(),
            {"a": 1, "b": 2}.items(),
            collections.OrderedDict(z=1, y=2).keys(),
        ),
        "stdlib_objects": (
            types.MappingProxyType({"k": 1}),
            logging.getLogger("corpus.logger"),
            (Tiny, weakref.WeakSet([Tiny])),
            open_text_file(directory),
        ),
    }


def pickle_cases(objects):
    """``({case: payload}, {case: error})``."""
    payloads, errors = {}, {}
    for case, obj in objects.items():
        try:
            if isinstance(obj, list):
                payloads[case] = [cloudpickle.dumps(item) for item in obj]
            else:
                payloads[case] = cloudpickle.dumps(obj)
        except Exception as e:
            errors[case] = f"{type(e).__name__}: {e}"
    return payloads, errors


def upstream_results(corpus_path):
    """The probes run on what upstream itself loads, in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "probes.py"), corpus_path],
        capture_output=True,
        cwd=tempfile.gettempdir(),
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr.decode(errors="replace"))
    return json.loads(result.stdout)


def main(out_dir):
    version = cloudpickle.__version__
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"cloudpickle-{version}")
    with tempfile.TemporaryDirectory() as scratch:
        objects = cases(scratch)
        payloads, errors = pickle_cases(objects)
        # Probed after pickling: some probes change the objects (counters, files).
        expected = {case: probes.probe(case, obj) for case, obj in objects.items()}
        objects["stdlib_objects"][3].close()
    corpus = pickle.dumps({"cloudpickle": version, "payloads": payloads}, protocol=4)
    with open(stem + ".pkl.gz", "wb") as f:
        f.write(gzip.compress(corpus, compresslevel=9, mtime=0))
    loaded = upstream_results(stem + ".pkl.gz")
    report = {}
    for case in objects:
        if case in errors:
            outcome = "dumps failed: " + errors[case]
            report[case] = {"expected": expected[case], "upstream": outcome}
        elif loaded[case] == expected[case]:
            report[case] = {"expected": expected[case], "upstream": "ok"}
        else:
            report[case] = {"expected": expected[case], "upstream": loaded[case]}
    summary = {
        "cloudpickle": version,
        "python": platform.python_version(),
        "cases": report,
    }
    with open(stem + ".json", "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
