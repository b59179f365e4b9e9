#!/usr/bin/env python
"""Fuzzes the load side of cloudpickle_rs: no input may crash the interpreter.

Two parts, both generated with hypothesis:

* ``calls``: every public callable of ``cloudpickle_rs._native`` (the
  reconstructors that pickles name, upstream's compat names, the pickling
  entry points) called with hostile arguments: wrong types, wrong arity,
  None, huge ints, nested junk, wrong-length tuples, code-object-like tuples,
  real objects of the wrong kind, or valid arguments with some replaced.
* ``pickles``: pickles that ``cloudpickle_rs.dumps`` made of closures,
  lambdas, dynamic classes and their instances, enums and modules, mutated
  (bit flips, byte overwrites, truncations, insertions, deletions, opcode
  swaps, splices) and loaded with a restricted ``pickle.Unpickler``.

Each case must return or raise an ``Exception``; anything else (a
``BaseException`` that is not an ``Exception``, a hang) is a failure, and a
crash kills the process. So the driver (the default mode) runs the cases in
worker subprocesses, one per chunk, and reports any worker that died.

Usage::

    python tests/fuzz_reconstructors.py --cases 1000000 --jobs 2   # the full run
    python tests/fuzz_reconstructors.py --cases 2000 --jobs 2      # tests/test_fuzz.py

The driver prints its seed; a failed chunk is reported with the command that
replays it (``--worker PART --seed S --cases K``; add ``--verbose`` to print
each case to stderr before it runs, so the last one printed is the culprit;
cases may leave state behind, so replay the whole chunk).

Loading a mutated pickle may call whatever the pickle reaches, so a worker
confines what a case can do:

* ``find_class`` gives only the globals that the unmutated pickles name;
  ``builtins.getattr`` comes wrapped (only the attribute names, and module
  attributes, that the unmutated pickles read); ``reconstructor`` hands out the real
  native reconstructors except that ``make_code`` must rebuild one of the
  unmutated pickles' code objects (running forged bytecode crashes CPython
  by design, so a forged code object is refused before any function can run
  it) and ``subimport`` imports only the modules the unmutated pickles do;
* an audit hook refuses, during a case, every event but a few harmless
  ones: no file opened for writing, no import, no process, no socket, no
  code object made any other way;
* a worker may not grow any file (RLIMIT_FSIZE 0, unless its own output
  goes to a file) nor dump core, has 512 MiB of address space more than it
  starts with (a huge allocation raises MemoryError), and each case runs
  under a timer;
* after each case, the namespaces of the classes, modules and functions
  the corpus reaches by name are put back as they were.
"""

import argparse
import collections
import contextlib
import dataclasses
import enum
import functools
import gc
import io
import os
import pickle
import pickletools
import random
import signal
import subprocess
import sys
import tempfile
import time
import types
import typing

import cloudpickle_rs
from cloudpickle_rs import _native
from testutils import code_blob

SCRIPT = os.path.abspath(__file__)
DEFAULT_CHUNK = 25_000
CASE_TIMEOUT_S = 10.0
# Address space a worker may add to what it has at start: small enough that a
# pickle asking for a huge memo or buffer fails at once with MemoryError
# instead of spending seconds filling it.
ADDRESS_SPACE_HEADROOM = 512 << 20
PROTOCOLS = (2, 3, 4, 5)
# Workers collect garbage themselves, inside the sandbox, this often (cases):
# finalizers of what a case made may run code it reached.
GC_EVERY = 1000


class Refused(Exception):
    """The harness refused what a case tried to do."""


class CaseTimeout(Exception):
    """A case ran longer than CASE_TIMEOUT_S."""


# --------------------------------------------------------------------------
# The sandbox a case runs in.


class Sandbox:
    """While a case runs, an audit hook lets through only harmless events."""

    ALLOWED_EVENTS = {
        "object.__getattr__",
        "object.__delattr__",
        "builtins.id",
        "sys._getframe",
        "sys._getframemodulename",
        "pickle.find_class",
        "sys.unraisablehook",
        "sys.excepthook",
        "function.__new__",
    }

    def __init__(self):
        self.active = False
        self.code_allowed = False
        self.refusals = collections.Counter()
        sys.addaudithook(self._hook)

    def _hook(self, event, args):
        if not self.active or event in self.ALLOWED_EVENTS:
            return
        if event == "object.__setattr__" and args[1] != "__code__":
            return
        if event == "code.__new__" and self.code_allowed:
            return
        self.refusals[event] += 1
        raise Refused(f"audit event {event} refused during a fuzz case")

    @contextlib.contextmanager
    def allowing_code(self):
        before, self.code_allowed = self.code_allowed, True
        try:
            yield
        finally:
            self.code_allowed = before


def limit_resources():
    """No file may grow, no core dump, a bounded address space."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if any(_is_regular_file(stream) for stream in (sys.stdout, sys.stderr)):
        print("fuzz worker: output goes to a file, so files may grow", file=sys.stderr)
    else:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space_in_use() + ADDRESS_SPACE_HEADROOM
    if hard == resource.RLIM_INFINITY or hard > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _address_space_in_use():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _is_regular_file(stream):
    import stat

    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):
        return False


_case_running = False


def _on_alarm(signum, frame):
    # A signal that arrived during a long C call is handled after it returns,
    # maybe after the case ended: only a running case times out.
    if _case_running:
        raise CaseTimeout(f"case ran longer than {CASE_TIMEOUT_S}s")


def run_case(sandbox, action):
    """Runs ``action()`` in the sandbox; returns the outcome's name. A
    BaseException that is not an Exception, or a timeout, is a failure
    (AssertionError)."""
    global _case_running
    try:
        signal.setitimer(signal.ITIMER_REAL, CASE_TIMEOUT_S)
        sandbox.active = _case_running = True
        try:
            action()
        finally:
            sandbox.active = _case_running = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        return "returned"
    except CaseTimeout as e:
        raise AssertionError(f"hang: {e}") from None
    except Exception as e:
        return type(e).__name__
    except BaseException as e:
        raise AssertionError(f"raised a non-Exception {type(e).__name__}: {e!r}") from e
    finally:
        assert not sandbox.active, "the sandbox stayed active after a case"


def collector(sandbox):
    """A function to call after each case: every GC_EVERY calls, collects
    garbage in the sandbox (automatic collection is off in workers)."""
    since = [0]

    def collect():
        since[0] += 1
        if since[0] >= GC_EVERY:
            since[0] = 0
            run_case(sandbox, gc.collect)

    return collect


# --------------------------------------------------------------------------
# Part 1: hostile arguments for every public callable of _native.


def public_callables():
    return {name for name in dir(_native) if not name.startswith("__") and callable(getattr(_native, name))}


def code_args_of(code):
    """The argument tuple our pickles hand make_code for ``code``."""
    return _native.Pickler(io.BytesIO()).reducer_override(code)[1]


def object_pool():
    """Real objects of every kind a reconstructor meets, to pass where they
    do not belong."""

    def outer():
        captured = 1

        def inner(x=1, *, y=2):
            return captured + x

        return inner

    closure = outer()

    class Plain:
        attr = 1

        def method(self):
            return self.attr

    class Slotted:
        __slots__ = ("a",)

    class Meta(type):
        pass

    class WithMeta(metaclass=Meta):
        pass

    class Color(enum.Enum):
        RED = 1
        BLUE = 2

    class Flags(enum.IntFlag):
        A = 1
        B = 2

    class MyError(ValueError):
        pass

    @dataclasses.dataclass
    class Point:
        x: int = 0
        y: typing.ClassVar[int] = 1

    module = types.ModuleType("fuzz_pool_module")
    module.value = 1
    sys.modules[module.__name__] = module
    return [
        closure,
        outer,
        lambda: 0,
        closure.__closure__[0],
        closure.__code__,
        outer.__code__,
        (lambda: 0).__code__,
        _native.make_cell(),
        _native.make_cell(5),
        Plain,
        Plain(),
        Plain().method,
        Slotted,
        Slotted(),
        Meta,
        WithMeta,
        WithMeta(),
        Color,
        Color.RED,
        Flags,
        Flags.A | Flags.B,
        MyError,
        MyError("boom"),
        Point,
        Point(1),
        module,
        types.ModuleType,
        types.FunctionType,
        type,
        object,
        int,
        str,
        bytes,
        tuple,
        dict,
        list,
        frozenset,
        len,
        enum.Enum,
        enum.EnumMeta,
        typing.TypeVar,
        typing.TypeVar("T"),
        typing.Generic,
        io.StringIO("text"),
        io.BytesIO(b"data"),
        {}.keys(),
        {1: 2}.values(),
        {1: 2}.items(),
        collections.OrderedDict(a=1),
        range(3),
        property(lambda s: 1),
        staticmethod(len),
        classmethod(len),
        object(),
        NotImplemented,
        Ellipsis,
        float("nan"),
        float("inf"),
        bytearray(b"ab"),
        memoryview(b"ab"),
        ValueError,
        BaseException,
        KeyboardInterrupt,
        SystemExit,
        StopIteration,
        _native.make_function,
        _native.SortedFrozenSet,
        dataclasses.field(),
        functools.partial(len),
        _native.Pickler(io.BytesIO()),
        pickle.PickleBuffer(b"buffer"),
    ]


# A fixed alphabet: hypothesis's full unicode one costs seconds per worker to set up.
ALPHABET = "abcxyz_.-0123456789 \x00\n\xe9\u20ac\U0001f600\udcff"
HUGE_INTS = [2**31, -(2**31) - 1, 2**32, 2**63, -(2**63) - 1, 2**64, 2**1000, -(2**1000), 10**400]
STRINGS = [
    "",
    "\x00",
    "\udcff",
    "a.b",
    "..",
    "x" * 1000,
    "__init__",
    "__dict__",
    "__class__",
    "__slots__",
    "__module__",
    "__qualname__",
    "__code__",
    "__globals__",
    "__builtins__",
    "_abc_impl",
    "_FIELD",
    "_FIELD_CLASSVAR",
    "_FIELD_INITVAR",
    "keys",
    "values",
    "items",
    "Enum",
    "math",
    "enum",
    "builtins",
    "fuzz_pool_module",
    "FunctionType",
    "CodeType",
    "ClassType",
    "ModuleType",
    "__main__",
    "id-1",
    "__firstlineno__",
]


def hostile_values():
    from hypothesis import strategies as st

    pool = object_pool()
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from(HUGE_INTS),
        st.floats(),
        st.text(alphabet=ALPHABET, max_size=12),
        st.sampled_from(STRINGS + list(_native.__all__)),
        st.binary(max_size=16),
        # Indices, not the objects: hypothesis describes what it samples
        # from, and some of these objects trip it (3.13).
        st.integers(0, len(pool) - 1).map(pool.__getitem__),
        st.sampled_from([_native.PYTHON_VERSION, (3, 8), (99, 0), (3,), ()]),
    )
    hashable = st.one_of(st.none(), st.integers(), st.text(alphabet=ALPHABET, max_size=8), st.sampled_from(STRINGS))

    def extend(children):
        return st.one_of(
            st.lists(children, max_size=5),
            st.lists(children, max_size=5).map(tuple),
            st.dictionaries(hashable, children, max_size=4),
            st.frozensets(hashable, max_size=4),
        )

    return pool, st.recursive(leaves, extend, max_leaves=6)


def code_like_tuples(values, base_args):
    """``make_code``'s ``(blob, objects)``, each with something wrong: bytes
    of the blob, its header, its bytecode (in an otherwise sound blob), or
    the objects beside it."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw):
        blob, objects = draw(st.sampled_from(base_args))
        data, objects = bytearray(blob), list(objects)
        how = draw(st.sampled_from(["bytes", "header", "bytecode", "objects", "resize"]))
        if how == "bytes":
            for _ in range(draw(st.integers(1, 4))):
                i = draw(st.integers(0, len(data) - 1))
                edit = draw(st.sampled_from(["set", "insert", "delete", "cut"]))
                if edit == "set":
                    data[i] = draw(st.integers(0, 255))
                elif edit == "insert":
                    data.insert(i, draw(st.integers(0, 255)))
                elif edit == "delete":
                    del data[i]
                else:
                    del data[i:]
                if not data:
                    break
        elif how == "header":
            data[draw(st.integers(0, 3))] = draw(st.integers(0, 255))
        elif how == "bytecode":
            forged = code_blob(_native._code_fields(blob, tuple(objects)), code=draw(st.binary(max_size=64)))
            data, objects = bytearray(forged[0]), list(forged[1])
        elif how == "objects":
            for _ in range(draw(st.integers(1, 3))):
                objects[draw(st.integers(0, len(objects) - 1))] = draw(values)
        else:
            size = draw(st.integers(0, len(objects) + 3))
            objects = (objects + [draw(values) for _ in range(3)])[:size]
        return bytes(data), tuple(objects)

    return build()


def entry_points(pool):
    """For each public callable of _native: the callables to fuzz (the
    function itself, or a class's constructor and methods) and sets of valid
    arguments to corrupt."""
    closure, outer = pool[0], pool[1]
    code = outer.__code__
    plain_cls, color_cls = pool[9], pool[17]
    cell = _native.make_cell(1)
    module = sys.modules["fuzz_pool_module"]
    fn_state = tuple("m" if field == "module" else None for field in _native.FORMAT["function_state"])
    pickler = _native.Pickler(io.BytesIO())
    descriptor = _native.Pickler.__dict__["dispatch_table"]
    n = _native
    simple = {
        "make_function": [
            (code, {}, None, "outer", "outer"),
            (closure.__code__, {}, (cell,), "f", "f", None, (1,)),
        ],
        "function_setstate": [(lambda: 0, fn_state)],
        "make_code": [code_args_of(code), code_args_of(closure.__code__)],
        "make_cell": [(), (1,)],
        "cell_set": [(n.make_cell(), 1)],
        "make_method": [(closure, plain_cls())],
        "subimport": [("math",), ("enum",)],
        "make_module": [("fuzz_made",)],
        "module_setstate": [(types.ModuleType("m"), {"a": 1})],
        "builtin_type": [("FunctionType",), ("ClassType",)],
        "make_type_parameter": [(typing.TypeVar, "T", (), {}, "fuzz-tp")],
        "make_class": [(type, "C", (), {"a": 1}, "fuzz-class"), (type, "D", (plain_cls,), {}, "fuzz-d")],
        "make_enum": [((enum.Enum,), "E", "E", {"A": 1}, "m", "fuzz-enum")],
        "class_setstate": [(type("S", (), {}), ({"a": 1}, None))],
        "class_dict_item": [(plain_cls, "method")],
        "make_dict_view": [("keys", [1], False), ("values", [1], True), ("items", {1: 2}, False)],
        "dataclass_field_type": [("_FIELD",)],
        "make_exception": [(ValueError, ("x",))],
        "make_text_file": [(io.StringIO("x"),)],
        "make_lru_cache": [(len, 8, False), (closure, None, True)],
        "make_singledispatch": [(len, ((int, abs),)), (closure, ())],
        "make_singledispatchmethod": [(closure, ((int, closure),))],
        "make_context_var": [("fuzz_var", (), "fuzz-cv"), ("fuzz_var_d", (1,), "fuzz-cv-d")],
        "make_traceback": [((("a.py", "f", 3), ("b.py", "g", 0)),)],
        "reconstructor": [("make_code", _native.FORMAT["version"]), ("subimport",)],
        "_tracked": [("fuzz-track",), ("no-such-id",)],
        "_code_fields": [code_args_of(code), code_args_of(closure.__code__)],
        "_reconstructor_of": [(len,), (_native.Pickler(io.BytesIO()).reducer_override(closure)[0],)],
        "rebuild_v2": [
            (_native.RECONSTRUCTORS.index("make_cell"), 1),
            (_native.RECONSTRUCTORS.index("make_code"), *code_args_of(code)),
            ("subimport",),
        ],
        "_make_function": [(code, {}, "outer", None, None)],
        "_function_setstate": [(lambda: 0, ({}, {"__module__": "m"}))],
        "_make_empty_cell": [()],
        "_make_cell": [(), (1,)],
        "dynamic_subimport": [("fuzz_dyn", {"a": 1})],
        "_make_skeleton_class": [(type, "C", (), {}, "fuzz-skel", None)],
        "_lookup_class_or_track": [("fuzz-track", plain_cls)],
        "_make_skeleton_enum": [((enum.Enum,), "E", "E", {"A": 1}, "m", "fuzz-senum", None)],
        "_class_setstate": [(type("S", (), {}), ({"a": 1}, {}))],
        "_make_typevar": [("T", None, (), False, False, "fuzz-tv")],
        "_make_dict_keys": [([1, 2],), ([1], True)],
        "_make_dict_values": [([1, 2],), ([1], True)],
        "_make_dict_items": [({1: 2},), ({1: 2}, True)],
        "_file_reconstructor": [(io.StringIO("x"),)],
        "_get_dataclass_field_type_sentinel": [("_FIELD",)],
        "_whichmodule": [(len, "len"), (color_cls, None)],
        "_lookup_module_and_qualname": [(len,), (closure, "x")],
        "_is_registered_pickle_by_value": [(module,)],
        "_should_pickle_by_reference": [(len,), (module,)],
        "_extract_code_globals": [(code,)],
        "_find_imported_submodules": [(code, [module, sys]), (code, ())],
        "_extract_class_dict": [(plain_cls,), (color_cls,)],
        "_get_bases": [(plain_cls,), (color_cls,)],
        "_get_cell_contents": [(cell,), (n.make_cell(),)],
        "dumps": [(closure,), (plain_cls, 5)],
        "dump": [(closure, io.BytesIO())],
        "register_pickle_by_value": [(module,)],
        "unregister_pickle_by_value": [(module,)],
        "list_registry_pickle_by_value": [()],
        "SortedFrozenSet": [([1, 2],)],
    }
    # A build without one of these (an older one) just does not fuzz it.
    points = {name: [(name, getattr(_native, name), args)] for name, args in simple.items() if hasattr(_native, name)}
    points["Pickler"] = [
        ("Pickler", _native.Pickler, [(io.BytesIO(),), (io.BytesIO(), 2)]),
        ("Pickler().reducer_override", pickler.reducer_override, [(closure,), (code,), (color_cls,)]),
        ("Pickler().dump", pickler.dump, [(closure,)]),
    ]
    points["DispatchTableDescriptor"] = [
        ("dispatch_table.__get__", descriptor.__get__, [(pickler, _native.Pickler), (None, _native.Pickler)]),
        ("dispatch_table.__set__", descriptor.__set__, [(pickler, {})]),
        ("dispatch_table.__delete__", descriptor.__delete__, [(pickler,)]),
    ]
    return points


def check_coverage(points):
    """Every public callable of _native has entry points."""
    missing = sorted(public_callables() - set(points))
    if missing:
        raise SystemExit(
            "fuzz_reconstructors: callables of cloudpickle_rs._native that are not fuzzed "
            f"(add them to entry_points): {missing}"
        )


def call_cases(points, values, code_tuples):
    """Strategy: (label, callable, args, kwargs)."""
    from hypothesis import strategies as st

    flat = [(label, fn, valid) for entries in points.values() for label, fn, valid in entries]
    kwarg_names = st.sampled_from(
        [
            "code",
            "globals",
            "name",
            "qualname",
            "closure",
            "state",
            "obj",
            "protocol",
            "is_ordered",
            "buffer_callback",
            "value",
            "module",
            "x",
        ]
    )
    arg = st.one_of(values, code_tuples)

    @st.composite
    def build(draw):
        label, fn, valid = flat[draw(st.integers(0, len(flat) - 1))]
        args = list(draw(st.sampled_from(valid)))
        how = draw(st.sampled_from(["random", "corrupt", "corrupt", "arity", "valid", "kwargs"]))
        kwargs = {}
        if how == "random":
            args = draw(st.lists(arg, max_size=7))
        elif how == "corrupt" and args:
            for _ in range(draw(st.integers(1, len(args)))):
                args[draw(st.integers(0, len(args) - 1))] = draw(arg)
        elif how == "arity":
            if args and draw(st.booleans()):
                args.pop(draw(st.integers(0, len(args) - 1)))
            else:
                args.insert(draw(st.integers(0, len(args))), draw(arg))
        elif how == "kwargs":
            kwargs = draw(st.dictionaries(kwarg_names, arg, min_size=1, max_size=3))
        return label, fn, tuple(args), kwargs

    return build()


def run_calls(seed, cases, verbose):
    points_pool, values = hostile_values()
    points = entry_points(points_pool)
    check_coverage(points)
    base_code_args = [code_args_of(o) for o in points_pool if isinstance(o, types.CodeType)]
    strategy = call_cases(points, values, code_like_tuples(values, base_code_args))
    sandbox = Sandbox()
    # Code objects made here from junk are dropped, never run.
    sandbox.code_allowed = True

    collect = collector(sandbox)

    def one(case):
        label, fn, args, kwargs = case
        if verbose:
            print(f"case: {label}{args!r} {kwargs!r}", file=sys.stderr, flush=True)
        outcome = run_case(sandbox, lambda: fn(*args, **kwargs))
        collect()
        return outcome

    return run_hypothesis(strategy, one, seed, cases), sandbox


# --------------------------------------------------------------------------
# Part 2: mutated pickles.

PAYLOAD_MODULE = "fuzz_payload"
PAYLOAD_SOURCE = """
import enum

SCALE = 3

def scale(x):
    return x + SCALE

class Shape:
    sides = 0
    def describe(self):
        return (type(self).__name__, self.sides)

class Square(Shape):
    sides = 4

class Suit(enum.Enum):
    HEARTS = "h"
    SPADES = "s"
"""


def payload_module():
    """A module registered to be pickled by value, made in memory."""
    module = types.ModuleType(PAYLOAD_MODULE)
    sys.modules[PAYLOAD_MODULE] = module
    exec(compile(PAYLOAD_SOURCE, f"<{PAYLOAD_MODULE}>", "exec"), module.__dict__)
    cloudpickle_rs.register_pickle_by_value(module)
    return module


def corpus_objects():
    """Closures, lambdas, dynamic classes and instances, enums and modules.
    Nothing here loops, allocates by an argument, or touches the outside:
    a mutated pickle may call any of these functions with any arguments."""
    offset = 10

    def add(x):
        return x + offset

    def twice(f):
        def inner(x):
            return f(f(x))

        return inner

    def countdown(n):
        return n if n < 1 else countdown(n - 1)

    class Animal:
        kind = "animal"
        legs = 4

        def __init__(self, name):
            self.name = name

        def describe(self):
            return f"{self.name} ({self.kind})"

        @classmethod
        def create(cls, name):
            return cls(name)

        @staticmethod
        def category():
            return "living"

        @property
        def upper(self):
            return str(self.name).upper()

    class Bird(Animal):
        kind = "bird"
        legs = 2

    class Pair:
        __slots__ = ("left", "right")

        def __init__(self, left, right):
            self.left, self.right = left, right

    @dataclasses.dataclass
    class Config:
        name: str = "x"
        level: int = 1

    class Failure(ValueError):
        pass

    class Color(enum.Enum):
        RED = 1
        GREEN = 2

    class Perm(enum.IntFlag):
        R = 4
        W = 2

    dynamic = types.ModuleType("fuzz_dynamic")
    exec("def hello(who):\n    return 'hello ' + str(who)\nGREETING = 'hi'\n", dynamic.__dict__)
    payload = sys.modules[PAYLOAD_MODULE]
    lam = lambda a, b=2, *rest, c=3, **kw: (a, b, rest, c, kw)  # noqa: E731
    everything = [
        add,
        twice(add),
        countdown,
        lam,
        Animal,
        Bird,
        Bird("tweety"),
        Animal("rex").describe,
        Pair(1, [2]),
        Pair,
        Config("y", 2),
        Failure("bad", 1),
        Color,
        Color.GREEN,
        Perm.R | Perm.W,
        dynamic,
        payload.scale,
        payload.Square(),
        payload.Suit.SPADES,
        {"k": 1}.keys(),
        {"k": add}.items(),
    ]
    return everything + [everything]


def corpus():
    pickles = []
    for obj in corpus_objects():
        for protocol in PROTOCOLS:
            pickles.append(cloudpickle_rs.dumps(obj, protocol=protocol))
    return pickles


def code_fingerprint(code):
    """Everything CPython executes of a code object, with the types of its
    constants, to tell a code object of the corpus from a forged one."""
    fields = []
    for attr in sorted(dir(code)):
        if not attr.startswith("co_") or attr == "co_lnotab":
            continue
        value = getattr(code, attr)
        if not callable(value):
            fields.append((attr, _shape(value)))
    return repr(fields)


def _shape(value):
    if isinstance(value, types.CodeType):
        return ("code", code_fingerprint(value))
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_shape(v) for v in value))
    if isinstance(value, frozenset):
        return ("frozenset", tuple(sorted(repr(_shape(v)) for v in value)))
    return (type(value).__name__, repr(value))


DENIED_MODULES = {
    "os",
    "sys",
    "posix",
    "subprocess",
    "shutil",
    "io",
    "builtins",
    "importlib",
    "ctypes",
    "socket",
    "signal",
    "marshal",
    "pickle",
    "gc",
    "runpy",
    "code",
}


class Allowed:
    """What loading the unmutated corpus reaches; a mutated pickle may reach
    no more. Filled by loading the corpus in learning mode."""

    def __init__(self):
        self.learning = True
        self.globals = set()
        self.reconstructors = set()
        self.code = set()
        self.modules = set()
        self.attributes = set()
        # The objects the corpus reaches by name: the globals, the modules.
        self.reached = []

    def freeze(self):
        self.learning = False
        denied = self.modules & DENIED_MODULES
        if denied:
            raise SystemExit(f"fuzz corpus imports modules a fuzz case must not reach: {denied}")

    def check(self, seen, item, what):
        if self.learning:
            seen.add(item)
        elif item not in seen:
            raise Refused(f"{what} {item!r} is not reached by the unmutated pickles")


def guarded_make_code(allowed, sandbox):
    def make_code(*args, **kwargs):
        with sandbox.allowing_code():
            code = _native.make_code(*args, **kwargs)
        allowed.check(allowed.code, code_fingerprint(code), "a code object")
        return code

    return make_code


def guarded_subimport(allowed, real):
    def subimport(name, *rest):
        allowed.check(allowed.modules, name, "module")
        module = real(name, *rest)
        if allowed.learning:
            allowed.reached.append(module)
        return module

    return subimport


def guarded_getattr(allowed):
    def getattr_(obj, name, *default):
        if isinstance(obj, types.ModuleType):
            # Only the module attributes the corpus reads (dataclasses.MISSING).
            key = ("module attribute", getattr(obj, "__name__", None), name)
        else:
            key = ("attribute", name)
        allowed.check(allowed.attributes, key, "attribute")
        found = getattr(obj, name, *default)
        if allowed.learning:
            allowed.reached.append(found)
        return found

    return getattr_


def guarded_reconstructor(allowed, guarded):
    """Our pickles' one global: the native ``reconstructor``, whose results
    are the native reconstructors themselves, but for the guarded ones."""

    def reconstructor(name, format=None):
        found = _native.reconstructor(name, format)
        allowed.check(allowed.reconstructors, name, "reconstructor")
        return guarded.get(id(found), found)

    return reconstructor


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only the globals the corpus names,
    handing out the guarded versions of ``reconstructor`` and ``getattr``."""

    allowed = None
    replacements = {}

    def find_class(self, module, name):
        self.allowed.check(self.allowed.globals, (module, name), "global")
        found = super().find_class(module, name)
        if self.allowed.learning:
            self.allowed.reached.append(found)
        return self.replacements.get(id(found), found)


def restricted_unpickler(allowed, sandbox):
    class Unpickler(RestrictedUnpickler):
        pass

    Unpickler.allowed = allowed
    guarded = {
        id(_native.make_code): guarded_make_code(allowed, sandbox),
        id(_native.subimport): guarded_subimport(allowed, _native.subimport),
        id(getattr): guarded_getattr(allowed),
    }
    if hasattr(_native, "reconstructor"):
        # Builds whose pickles name the reconstructors through this one.
        guarded[id(_native.reconstructor)] = guarded_reconstructor(allowed, dict(guarded))
    Unpickler.replacements = guarded
    return Unpickler


FUNCTION_STATE = (
    "__dict__",
    "__module__",
    "__doc__",
    "__defaults__",
    "__kwdefaults__",
    "__annotations__",
    "__name__",
    "__qualname__",
)


class Restorer:
    """Undoes, after each case, what a mutated pickle changed in the objects
    the corpus reaches (a class's attributes, a module's namespace, a
    function's state), so that no case sees another's leftovers."""

    def __init__(self, reached):
        self.saved = []
        seen = set()
        for obj in reached:
            for target in self._targets(obj):
                if id(target) not in seen:
                    seen.add(id(target))
                    self.saved.append((target, self._state(target)))

    @staticmethod
    def _targets(obj):
        yield obj
        module = sys.modules.get(getattr(obj, "__module__", None) or "")
        if module is not None:
            yield module
        if isinstance(obj, types.FunctionType):
            yield sys.modules.get(obj.__globals__.get("__name__"), obj)

    @staticmethod
    def _state(obj):
        if isinstance(obj, types.FunctionType):
            return {name: _copy(getattr(obj, name)) for name in FUNCTION_STATE}
        return dict(vars(obj)) if hasattr(obj, "__dict__") else {}

    def restore(self):
        for obj, saved in self.saved:
            if isinstance(obj, types.FunctionType):
                for name, value in saved.items():
                    if getattr(obj, name) != value:
                        setattr(obj, name, _copy(value))
                continue
            current = vars(obj) if hasattr(obj, "__dict__") else {}
            if len(current) == len(saved) and all(current.get(k, _MISSING) is v for k, v in saved.items()):
                continue
            if isinstance(obj, types.ModuleType):
                current.clear()
                current.update(saved)
            elif isinstance(obj, type):
                for name in [k for k in current if k not in saved]:
                    with contextlib.suppress(Exception):
                        delattr(obj, name)
                for name, value in saved.items():
                    if current.get(name, _MISSING) is not value:
                        with contextlib.suppress(Exception):
                            setattr(obj, name, value)


_MISSING = object()


def _copy(value):
    return dict(value) if isinstance(value, dict) else value


def load_with(unpickler_cls, data):
    return unpickler_cls(io.BytesIO(data)).load()


def learn_corpus(pickles, sandbox):
    """Fills the allow-lists from the unmutated corpus, then checks that the
    corpus loads under them and inside the sandbox."""
    allowed = Allowed()
    unpickler = restricted_unpickler(allowed, sandbox)
    for data in pickles:
        load_with(unpickler, data)
    allowed.freeze()
    restorer = Restorer(allowed.reached)
    for data in pickles:
        sandbox.active = True
        try:
            loaded = load_with(unpickler, data)
        finally:
            sandbox.active = False
        if isinstance(loaded, list) and loaded and callable(loaded[0]):
            assert loaded[0](1) == 11, "the corpus's closure does not work after loading"
    return allowed, unpickler, restorer


OPCODES = sorted({ord(op.code) for op in pickletools.opcodes if len(op.code) == 1})
INTERESTING_INTS = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**63 - 1, 2**64 - 1]


def opcode_positions(data):
    positions = []
    try:
        for _op, _arg, pos in pickletools.genops(data):
            positions.append(pos)
    except Exception:
        pass
    return positions


def mutated_pickles(pickles):
    """Strategy: (description, bytes) from a corpus pickle and 1-4 mutations."""
    from hypothesis import strategies as st

    positions = {data: opcode_positions(data) for data in pickles}

    @st.composite
    def build(draw):
        base = draw(st.sampled_from(pickles))
        data = bytearray(base)
        steps = []
        for _ in range(draw(st.integers(1, 4))):
            if not data:
                break
            kind = draw(
                st.sampled_from(
                    ["flip", "byte", "truncate", "insert", "delete", "opcode", "int", "duplicate", "splice"]
                )
            )
            pos = draw(st.integers(0, len(data) - 1))
            if kind == "flip":
                data[pos] ^= 1 << draw(st.integers(0, 7))
            elif kind == "byte":
                data[pos] = draw(st.integers(0, 255))
            elif kind == "truncate":
                del data[pos:]
            elif kind == "insert":
                data[pos:pos] = draw(
                    st.one_of(st.binary(min_size=1, max_size=8), st.sampled_from(OPCODES).map(lambda b: bytes([b])))
                )
            elif kind == "delete":
                del data[pos : pos + draw(st.integers(1, 16))]
            elif kind == "opcode":
                ops = [p for p in positions[base] if p < len(data)] or [pos]
                pos = draw(st.sampled_from(ops))
                data[pos] = draw(st.sampled_from(OPCODES))
            elif kind == "int":
                width = draw(st.sampled_from([1, 2, 4, 8]))
                value = draw(st.sampled_from(INTERESTING_INTS)) & ((1 << (8 * width)) - 1)
                data[pos : pos + width] = value.to_bytes(width, "little")
            elif kind == "duplicate":
                end = min(len(data), pos + draw(st.integers(1, 64)))
                at = draw(st.integers(0, len(data)))
                data[at:at] = data[pos:end]
            else:
                other = draw(st.sampled_from(pickles))
                start = draw(st.integers(0, len(other) - 1))
                data[pos : pos + draw(st.integers(1, 64))] = other[start : start + draw(st.integers(1, 64))]
            steps.append((kind, pos))
        return steps, bytes(data)

    return build()


def run_pickles(seed, cases, verbose):
    payload_module()
    pickles = corpus()
    sandbox = Sandbox()
    allowed, unpickler, restorer = learn_corpus(pickles, sandbox)
    strategy = mutated_pickles(pickles)
    collect = collector(sandbox)

    def one(case):
        steps, data = case
        if verbose:
            print(f"case: {steps} {data!r}", file=sys.stderr, flush=True)
        outcome = run_case(sandbox, lambda: load_with(unpickler, data))
        collect()
        restorer.restore()
        return outcome

    return run_hypothesis(strategy, one, seed, cases), sandbox


# --------------------------------------------------------------------------
# Running: hypothesis in a worker, workers under a driver.


def run_hypothesis(strategy, one_case, seed, cases):
    import hypothesis
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings

    outcomes = collections.Counter()

    @hypothesis.seed(seed)
    @settings(
        max_examples=cases,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
    )
    @given(strategy)
    def fuzz(case):
        outcomes[one_case(case)] += 1

    fuzz()
    return outcomes


def worker(part, seed, cases, verbose):
    limit_resources()
    signal.signal(signal.SIGALRM, _on_alarm)
    gc.disable()
    run = run_calls if part == "calls" else run_pickles
    started = time.monotonic()
    outcomes, sandbox = run(seed, cases, verbose)
    total = sum(outcomes.values())
    common = ", ".join(f"{name} {count}" for name, count in outcomes.most_common(6))
    refused = ", ".join(f"{name} {count}" for name, count in sandbox.refusals.most_common(4))
    print(
        f"worker {part} seed={seed}: {total} cases in {time.monotonic() - started:.1f}s "
        f"({common}; audit refusals: {refused or 'none'})",
        flush=True,
    )


def chunks(cases, chunk, seed):
    """(part, seed, count) for each worker: the cases split evenly between
    the two parts, in chunks of at most ``chunk``."""
    rng = random.Random(seed)
    plan = []
    for part, share in (("calls", cases // 2), ("pickles", cases - cases // 2)):
        while share > 0:
            count = min(chunk, share)
            plan.append((part, rng.randrange(2**32), count))
            share -= count
    return plan


def worker_command(part, seed, count):
    return [sys.executable, SCRIPT, "--worker", part, "--seed", str(seed), "--cases", str(count)]


def run_chunk(part, seed, count, workdir):
    timeout = 120 + count * 0.05
    try:
        result = subprocess.run(
            worker_command(part, seed, count),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=workdir,
        )
    except subprocess.TimeoutExpired:
        return None, f"worker timed out after {timeout:.0f}s"
    return result, None


def describe_failure(part, seed, count, result, problem):
    replay = " ".join(worker_command(part, seed, count)[1:])
    if result is not None and result.returncode < 0:
        problem = f"worker CRASHED with signal {signal.Signals(-result.returncode).name}"
    elif result is not None:
        problem = f"worker exited with code {result.returncode}"
    tail = "" if result is None else (result.stdout[-2000:] + result.stderr[-6000:])
    return f"{problem}; replay: python {replay} --verbose\n{tail}"


def driver(cases, chunk, seed, jobs):
    from concurrent.futures import ThreadPoolExecutor

    check_coverage(entry_points(object_pool()))
    started = time.monotonic()
    plan = chunks(cases, chunk, seed)
    done = collections.Counter()
    failures = []
    print(f"fuzz: seed {seed}, {cases} cases in {len(plan)} workers", flush=True)
    with tempfile.TemporaryDirectory(prefix="cprs_fuzz_") as workdir, ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [(p, pool.submit(run_chunk, *p, workdir)) for p in plan]
        for (part, chunk_seed, count), future in futures:
            result, problem = future.result()
            if result is not None and result.returncode == 0 and "worker " in result.stdout:
                done[part] += count
                print(result.stdout.strip(), flush=True)
            else:
                failures.append(describe_failure(part, chunk_seed, count, result, problem))
                print(failures[-1], flush=True)
    elapsed = time.monotonic() - started
    status = "passed" if not failures else f"FAILED ({len(failures)} failing workers)"
    print(
        f"fuzz {status}: {sum(done.values())} of {cases} cases "
        f"(calls {done['calls']}, pickles {done['pickles']}) without a crash, "
        f"seed {seed}, {elapsed:.1f}s"
    )
    return 0 if not failures else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=None, help="default: random, printed")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="cases per worker")
    parser.add_argument("--jobs", type=int, default=1, help="workers running at once")
    parser.add_argument("--worker", choices=["calls", "pickles"], help=argparse.SUPPRESS)
    parser.add_argument("--verbose", action="store_true", help="worker: print each case first")
    args = parser.parse_args(argv)
    seed = random.randrange(2**32) if args.seed is None else args.seed
    if args.worker:
        worker(args.worker, seed, args.cases, args.verbose)
        return 0
    return driver(args.cases, args.chunk, seed, args.jobs)


if __name__ == "__main__":
    sys.exit(main())
