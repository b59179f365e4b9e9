"""No crash, no leak, no deadlock: threads pickling while modules are
registered by value, very deep nesting, corrupt and hostile pickles, and the
memory benchmark (benches/memory.py) in short.

Deep nesting and hostile pickles run in a subprocess, so that a crash is a
failed test (with its signal) instead of the end of the test run; the thread
test runs here, a deadlock showing as threads still alive after the join
timeout.
"""

import os
import pickle
import signal
import subprocess
import sys
import threading

import pytest

import cloudpickle_rs
from testutils import TESTS_DIR, run_python

REPO = os.path.dirname(TESTS_DIR)

# --------------------------------------------------------------------------
# Threads: dumps/loads everywhere while another thread (un)registers a module.

BY_VALUE_PACKAGE = "cprs_robust_pkg"
BY_VALUE_SOURCE = """
def helper(x):
    return x * 2


class Thing:
    def __init__(self, value):
        self.value = value

    def get(self):
        return helper(self.value)
"""


@pytest.fixture
def by_value_package(tmp_path, monkeypatch):
    package = tmp_path / BY_VALUE_PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text(BY_VALUE_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module(BY_VALUE_PACKAGE)
    yield module
    if BY_VALUE_PACKAGE in cloudpickle_rs.list_registry_pickle_by_value():
        cloudpickle_rs.unregister_pickle_by_value(module)
    sys.modules.pop(BY_VALUE_PACKAGE, None)


def make_closure(offset):
    def add(x):
        return x + offset

    return add


def round_trip(obj):
    return pickle.loads(cloudpickle_rs.dumps(obj))


def pickling_worker(index, rounds, package, errors):
    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y

        def norm1(self):
            return abs(self.x) + abs(self.y)

    try:
        for i in range(rounds):
            assert round_trip(make_closure(index))(i) == index + i
            point = round_trip(Point(index, -i))
            assert (point.x, point.y, point.norm1()) == (index, -i, index + i)
            # Pickled by value or by reference, as the registry stands right now.
            thing = round_trip(package.Thing(i))
            assert thing.get() == 2 * i
    except BaseException as e:  # noqa: B036 - any failure must reach the test
        errors.append((index, e))


def registering_worker(package, stop, errors, counter):
    try:
        while not stop.is_set():
            cloudpickle_rs.register_pickle_by_value(package)
            assert round_trip(package.helper)(3) == 6
            cloudpickle_rs.unregister_pickle_by_value(package)
            counter[0] += 1
    except BaseException as e:  # noqa: B036
        errors.append(("registry", e))


def run_threads(package, rounds, threads=8, timeout=600):
    errors, stop, registrations = [], threading.Event(), [0]
    workers = [
        threading.Thread(target=pickling_worker, args=(i, rounds, package, errors), daemon=True) for i in range(threads)
    ]
    registrar = threading.Thread(target=registering_worker, args=(package, stop, errors, registrations), daemon=True)
    registrar.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout)
    stop.set()
    registrar.join(timeout)
    stuck = [t.name for t in workers + [registrar] if t.is_alive()]
    assert not stuck, f"threads still running after {timeout}s (deadlock?): {stuck}"
    assert not errors, errors
    assert registrations[0] > 0


def test_threads_pickle_while_a_module_is_registered_and_unregistered(by_value_package):
    run_threads(by_value_package, rounds=1000)


@pytest.mark.slow
def test_threads_pickle_while_a_module_is_registered_and_unregistered_full(by_value_package):
    run_threads(by_value_package, rounds=10_000, timeout=1800)


# --------------------------------------------------------------------------
# Very deep nesting: an exception, never a crash.

DEPTH = 10_000

DEEP_SCRIPT = """
import pickle, sys
import {module} as pickler

limit = {limit}
if limit:
    sys.setrecursionlimit(limit)
N = {depth}


def deep_list():
    x = []
    for _ in range(N):
        x = [x]
    return x


def list_depth(x):
    depth = 0
    while x:
        x, depth = x[0], depth + 1
    return depth


def deep_closures():
    f = lambda: 0
    for _ in range(N):
        f = (lambda g: (lambda: g() + 1))(f)
    return f


def closure_depth(f):
    depth = 0
    while f.__closure__:
        f, depth = f.__closure__[0].cell_contents, depth + 1
    return depth


def deep_classes():
    c = type("C0", (), {{}})
    for i in range(N):
        c = type(f"C{{i + 1}}", (), {{"prev": c}})
    return c


def class_depth(c):
    depth = 0
    while "prev" in vars(c):
        c, depth = c.prev, depth + 1
    return depth


make, measure = {{
    "lists": (deep_list, list_depth),
    "closures": (deep_closures, closure_depth),
    "classes": (deep_classes, class_depth),
}}["{kind}"]
obj = make()
try:
    data = pickler.dumps(obj)
except (pickle.PicklingError, RecursionError) as e:
    print("raised", type(e).__name__, type(e.__cause__).__name__)
else:
    loaded = pickle.loads(data)
    print("round trip", measure(loaded) == N)
"""

KINDS = ["lists", "closures", "classes"]


def deep_outcome(kind, module="cloudpickle_rs", limit=None):
    script = DEEP_SCRIPT.format(module=module, limit=limit, depth=DEPTH, kind=kind)
    result = run_python(["-c", script])
    assert result.returncode >= 0, (
        f"{module} crashed on {DEPTH}-deep {kind} (recursion limit {limit or 'default'}) "
        f"with signal {signal.Signals(-result.returncode).name}"
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip()


RAISED = "raised PicklingError RecursionError"
ROUND_TRIP = "round trip True"


def deep_expected(kind, module):
    """What 10,000-deep input gives. Before 3.14 the recursion limit stops
    both picklers. From 3.14 the C pickler guards the C stack instead: the
    lists and classes round-trip; upstream still stops at closures (each
    level runs its Python reducer_override, counted against the limit),
    where cloudpickle-rs's native hook carries on."""
    if sys.version_info < (3, 14):
        return RAISED
    if module == "cloudpickle" and kind == "closures":
        return RAISED
    return ROUND_TRIP


@pytest.mark.parametrize("kind", KINDS)
def test_deep_nesting_does_what_cloudpickle_does_or_better(kind):
    assert deep_outcome(kind, module="cloudpickle") == deep_expected(kind, "cloudpickle")
    assert deep_outcome(kind) == deep_expected(kind, "cloudpickle_rs")


@pytest.mark.parametrize("kind", KINDS)
def test_deep_nesting_under_a_raised_recursion_limit_never_crashes(kind):
    # With the limit at 100000 the C stack, not the limit, is what runs out
    # first for deep enough input; at 10,000 deep the pickle is still made.
    ours = deep_outcome(kind, limit=100_000)
    assert ours in (RAISED, ROUND_TRIP)


# --------------------------------------------------------------------------
# Corrupt, truncated and hostile pickles: exceptions, never a crash.

HOSTILE_SCRIPT = r"""
import io, pickle, sys
import cloudpickle_rs
from cloudpickle_rs import _native


def make_adder():
    offset = 5

    def add(x):
        return x + offset

    return add


class Reduces:
    # Pickles as a call of one of our reconstructors with these arguments.
    def __init__(self, function, args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def outer():
    x = 1
    return lambda: x


code_with_cell = outer().__code__
hostile_calls = [
    (_native.make_code, (b"", ())),
    (_native.make_code, (b"C\x01\x02\x07", ())),
    (_native.make_code, ("3.11", None)),
    (_native.make_code, (b"C" + b"\xff" * 64, ())),
    (_native.make_function, (None, {}, None, "f", "f")),
    (_native.make_function, (code_with_cell, {}, None, "f", "f")),
    (_native.make_function, (code_with_cell, {}, (1,), "f", "f")),
    (_native.make_function, (code_with_cell, {}, (_native.make_cell(1),), "f", "f", "not globals")),
    (_native.function_setstate, (len, (None,) * len(_native.FORMAT["function_state"]))),
    # Module without doc: one item short of a full state.
    (_native.function_setstate, (make_adder, (None,) * (len(_native.FORMAT["function_state"]) - 1))),
    (_native.make_cell, (1, 2)),
    (_native.cell_set, (1, 2)),
    (_native.make_method, (1, 2)),
    (_native.subimport, ("cprs_no_such_module",)),
    (_native.make_module, (5,)),
    (_native.module_setstate, (1, {})),
    (_native.builtin_type, ("__name__",)),
    (_native.make_class, (int, "C", (), {}, "id")),
    (_native.make_class, (type, "C", (5,), {}, "id")),
    (_native.make_enum, ((), "E", "E", {}, "m", "id")),
    (_native.class_setstate, (int, ({"x": 1}, None))),
    (_native.class_dict_item, (int, "nope")),
    (_native.make_dict_view, ("nope", [], False)),
    (_native.dataclass_field_type, ("nope",)),
    (_native.make_exception, (int, ())),
    (_native.make_text_file, (5,)),
    (_native.make_lru_cache, (len, "big", False)),
    (_native.make_lru_cache, (5, None, False)),
    (_native.make_singledispatch, (5, ())),
    (_native.make_singledispatch, (len, ((int,),))),
    (_native.make_singledispatch, (len, ((5, abs),))),
    (_native.make_singledispatchmethod, (5, ())),
    (_native.make_context_var, ("v", (1, 2), "id")),
    (_native.make_context_var, (5, (), "id")),
    (_native.make_traceback, ((("f.py", "f", 2**40),),)),
    (_native.make_traceback, (((b"f.py", "f", 1),),)),
    (_native.reconstructor, ("nope",)),
    (_native.reconstructor, ("dumps",)),
]

outcomes = {"returned": 0, "raised": 0}


def try_load(data):
    try:
        pickle.loads(data)
    except Exception:
        outcomes["raised"] += 1
    else:
        outcomes["returned"] += 1


hostile_raised = 0
for function, args in hostile_calls:
    try:
        pickle.loads(cloudpickle_rs.dumps(Reduces(function, args)))
    except Exception:
        hostile_raised += 1
assert hostile_raised == len(hostile_calls), (hostile_raised, len(hostile_calls))

for protocol in (2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL):
    data = cloudpickle_rs.dumps(make_adder(), protocol=protocol)
    assert pickle.loads(data)(1) == 6
    for end in range(len(data)):
        try_load(data[:end])
    # One changed byte at a time: at most one thing goes wrong per pickle
    # (a forged code object is never also called).
    for position in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            changed = bytearray(data)
            changed[position] ^= mask
            try_load(bytes(changed))
print("hostile", hostile_raised, "returned", outcomes["returned"], "raised", outcomes["raised"])
"""


def test_corrupt_truncated_and_hostile_pickles_raise_never_crash():
    result = run_python(["-c", HOSTILE_SCRIPT])
    assert result.returncode >= 0, f"crashed with signal {signal.Signals(-result.returncode).name}"
    assert result.returncode == 0, result.stderr.decode()[-4000:]
    words = result.stdout.decode().split()
    assert words[0] == "hostile" and int(words[1]) > 20
    assert int(words[5]) > 1000  # most mutants fail to load, and they did not crash


# --------------------------------------------------------------------------
# The memory benchmark, in short.


def test_memory_stays_flat_over_many_cycles():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "benches", "memory.py"), "--cycles", "20000"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "memory growth" in result.stdout and ": ok;" in result.stdout
