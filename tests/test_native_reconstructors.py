"""Every reconstructor the native module exposes, given hostile arguments,
raises TypeError/ValueError (or UnpicklingError), never crashes.

Each case runs in one subprocess per test function so that a crash (a
segfault, an abort) shows up as a failed test with its exit status instead
of killing the test run.
"""

import io
import pickle
import subprocess
import sys
import textwrap

import pytest

import cloudpickle_rs
from cloudpickle_rs import _native
from cloudpickle_rs._trust import UPSTREAM_RECONSTRUCTORS
from testutils import CODE_BLOB_SOURCE, reconstructors_called, run_sender, subprocess_loads

#: Upstream cloudpickle's private pickling-side helpers, served natively
#: (src/compat.rs); its load-side names are ``_trust.UPSTREAM_RECONSTRUCTORS``.
UPSTREAM_HELPERS = [
    "_whichmodule",
    "_lookup_module_and_qualname",
    "_is_registered_pickle_by_value",
    "_should_pickle_by_reference",
    "_extract_code_globals",
    "_find_imported_submodules",
    "_extract_class_dict",
    "_get_bases",
    "_get_cell_contents",
]

#: Every function of the extension that takes arguments from anyone: our
#: reconstructors, what hands them out, what the restricted loader asks
#: before a class is made, what the inspector reads a code blob with, and
#: upstream's names.
RECONSTRUCTORS = list(
    dict.fromkeys(
        [
            *_native.RECONSTRUCTORS,
            "reconstructor",
            "_tracked",
            "_code_fields",
            *sorted(name for name in UPSTREAM_RECONSTRUCTORS if hasattr(_native, name)),
            *UPSTREAM_HELPERS,
        ]
    )
)

HOSTILE_VALUES = """[
    None, 0, -1, 2**100, 1.5, "", "x" * 10_000, b"\\x00", (), (None,) * 50, [], {},
    object(), type, len, (lambda: 0).__code__, sys, frozenset([1]),
]"""

HARNESS = textwrap.dedent(
    """
    import itertools, pickle, sys
    from cloudpickle_rs import _native
    f = getattr(_native, NAME)
    values = VALUES
    calls = 0
    for arity in range(0, 4):
        for args in itertools.product(values, repeat=arity) if arity < 3 else zip(values, values[1:], values[2:]):
            calls += 1
            try:
                f(*args)
            except (TypeError, ValueError, pickle.UnpicklingError, ImportError, AttributeError):
                pass
    print("calls", calls)
    """
)


#: The pickling-side API (cloudpickle's public functions, and what our
#: tools ask of a reduction).
PICKLING_SIDE = (
    "dumps",
    "dump",
    "register_pickle_by_value",
    "unregister_pickle_by_value",
    "list_registry_pickle_by_value",
    "_reconstructor_of",
)


def test_every_reconstructor_is_listed():
    exposed = {
        name
        for name in dir(_native)
        if callable(getattr(_native, name))
        and getattr(getattr(_native, name), "__module__", None) == "cloudpickle_rs._native"
        and name not in PICKLING_SIDE
        and not isinstance(getattr(_native, name), type)
    }
    assert exposed == set(RECONSTRUCTORS)


@pytest.mark.parametrize("name", RECONSTRUCTORS)
def test_hostile_arguments_raise_never_crash(name):
    code = HARNESS.replace("NAME", repr(name)).replace("VALUES", HOSTILE_VALUES)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("calls ")


def test_values_that_would_run_code_are_refused_not_used():
    # An int subclass's __lt__ (lru_cache compares maxsize with 0), an
    # __index__ (a line number read as an int): code a pickle could ship.
    out = run_checks(
        """
        from cloudpickle_rs import _native
        ran = []
        class Size(int):
            def __lt__(self, other):
                ran.append("__lt__")
                return False
        class Line:
            def __index__(self):
                ran.append("__index__")
                return 3
        class Name(str):
            pass
        calls = [
            lambda: _native.make_lru_cache(len, Size(4), False),
            lambda: _native.make_traceback((("a.py", "f", Line()),)),
            lambda: _native.make_traceback((("a.py", Name("f"), 3),)),
        ]
        for call in calls:
            try:
                call()
                print("accepted")
            except TypeError as e:
                print("TypeError")
        print(ran)
        """
    )
    assert out.split() == ["TypeError", "TypeError", "TypeError", "[]"]


def run_checks(src):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(src)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_function_checks_closure_against_free_variables():
    run_checks(
        """
from cloudpickle_rs import _native

def outer():
    x = 1
    def inner():
        return x
    return inner

code = outer().__code__
cell = _native.make_cell(5)
cases = [
    (None, ValueError),            # free variable but no closure
    ((), ValueError),              # too few cells
    ((cell, cell), ValueError),    # too many cells
    ((5,), TypeError),             # not a cell
]
for closure, error in cases:
    try:
        _native.make_function(code, {}, closure, "inner", "inner")
    except error:
        pass
    else:
        raise AssertionError(f"closure {closure!r} accepted")
f = _native.make_function(code, {}, (cell,), "inner", "outer.<locals>.inner")
assert f() == 5 and f.__qualname__ == "outer.<locals>.inner"
g = _native.make_function(code, {}, (cell,))
assert g.__name__ == "inner" and g() == 5
DICT = _native.FORMAT["function_state"].index("dict")
h = _native.make_function(code, {}, (cell,), None, None, *(None,) * DICT, {"tag": 1})
assert h.tag == 1
module_without_doc = (None,) * (len(_native.FORMAT["function_state"]) - 1)
too_long = (None,) * (len(_native.FORMAT["function_state"]) + 1)
for bad_state in ((None, "notatuple"), module_without_doc, too_long, ("x",)):
    try:
        _native.make_function(code, {}, (cell,), None, None, *bad_state)
    except (TypeError, ValueError):
        pass
    else:
        raise AssertionError(f"state {bad_state!r} accepted")
assert "__builtins__" in f.__globals__
try:
    _native.make_function((lambda: 0).__code__, {}, (cell,), "f", "f")
except ValueError:
    pass
else:
    raise AssertionError("closure for a code object without free variables accepted")
"""
    )


def test_function_setstate_rejects_bad_state():
    run_checks(
        """
from cloudpickle_rs import _native
f = lambda: 0
FIELDS = _native.FORMAT["function_state"]
def make_state(**fields):
    return tuple(fields.get(name) for name in FIELDS)
good = make_state(module="m")
_native.function_setstate(f, good)
assert f.__module__ == "m"
_native.function_setstate(f, ())
_native.function_setstate(f, (None, (1,)))
assert f.__defaults__ == (1,) and f.__module__ == "m"
bad_states = [good[:-1], good + (None,), make_state(globals="notadict"),
              make_state(defaults="notatuple"), make_state(kwdefaults=5), make_state(annotations=7),
              make_state(dict=[]), make_state(annotate=7), make_state(annotate=len, annotations=[])]
for state in bad_states:
    try:
        _native.function_setstate(f, state)
    except (TypeError, ValueError):
        pass
    else:
        raise AssertionError(f"state {state!r} accepted")
for not_a_function in (len, None, 1, type):
    try:
        _native.function_setstate(not_a_function, good)
    except TypeError:
        pass
    else:
        raise AssertionError("non-function accepted")
"""
    )


def make_code_checks(src):
    """``run_checks`` with ``code_blob`` and ``code_fields(code)``: the
    fields our pickles hand make_code for ``code``, by name."""
    return run_checks(
        CODE_BLOB_SOURCE
        + """
import io
from cloudpickle_rs import _native

def code_fields(code):
    return _native._code_fields(*_native.Pickler(io.BytesIO()).reducer_override(code)[1])
"""
        + textwrap.dedent(src)
    )


def test_make_code_names_both_versions_on_mismatch():
    out = make_code_checks(
        """
import pickle
fields = code_fields((lambda x: x + 1).__code__)
for version in [(2, 7), (3, 8), (3, 99)]:
    try:
        _native.make_code(*code_blob(fields, version=version))
    except pickle.UnpicklingError as e:
        print(e)
    else:
        raise AssertionError(f"code of {version} accepted")
"""
    )
    here = "{}.{}".format(*sys.version_info[:2])
    assert "CPython 2.7" in out and "CPython 3.99" in out and out.count(f"by CPython {here}:") == 3, out


def test_a_pickle_of_another_format_is_refused_by_name():
    out = make_code_checks(
        r"""
import pickle, cloudpickle_rs
fields = code_fields((lambda x: x + 1).__code__)
assert _native.make_code(*code_blob(fields)).co_name == "<lambda>"
try:
    _native.make_code(*code_blob(fields, format=_native.FORMAT["version"] + 1))
except pickle.UnpicklingError as e:
    print(e)
class Format1:
    # Format 1 named _native.reconstructor(name, 1) for each reconstructor.
    def __reduce__(self):
        return _native.reconstructor, ("make_cell", 1)
try:
    cloudpickle_rs.loads(pickle.dumps(Format1()))
except pickle.UnpicklingError as e:
    print(e)
# A later format names a global of its own.
payload = cloudpickle_rs.dumps(lambda: 1)
assert payload.count(b"rebuild_v%d" % _native.FORMAT["version"]) == 1
try:
    cloudpickle_rs.loads(payload.replace(b"rebuild_v%d" % _native.FORMAT["version"], b"rebuild_v9"))
except (pickle.UnpicklingError, AttributeError) as e:
    print(str(e).splitlines()[0])
"""
    )
    lines = out.splitlines()
    assert len(lines) == 3, out
    for line in lines:
        assert "cloudpickle-rs's format" in line and f"reads format {_native.FORMAT['version']}" in line, line
    assert ["format 1;" in lines[1], "format 9;" in lines[2]] == [True, True], lines


def test_a_corrupted_code_blob_is_an_error_never_a_crash():
    out = make_code_checks(
        r"""
fields = code_fields((lambda x, *, y=2: x + y).__code__)
blob, objects = code_blob(fields)
corrupted = {"objects missing": (blob, objects[:-1]), "objects extra": (blob, objects + ("x",)),
             "not a blob": (b"X" + blob[1:], objects), "a byte more": (blob + b"\0", objects)}
corrupted.update((f"cut at {n}", (blob[:n], objects)) for n in range(len(blob)))
for label, args in corrupted.items():
    try:
        _native.make_code(*args)
    except ValueError as e:
        assert "make_code: a corrupted code object" in str(e), e
        print("refused:", label)
    else:
        print("ACCEPTED:", label)
try:
    _native.make_code(blob, tuple(5 for _ in objects))
except (TypeError, ValueError) as e:
    print("refused: objects of the wrong types:", type(e).__name__)
else:
    print("ACCEPTED: objects of the wrong types")
"""
    )
    assert "ACCEPTED" not in out
    assert out.count("refused:") >= 8, out


def test_make_code_refuses_bytecode_cpython_cannot_have_compiled():
    # From 3.11 CPython walks a new code object's instructions trusting each
    # opcode's count of inline cache units, so forged bytecode corrupted
    # memory before any of it ran (found by the fuzz harness: a segfault on
    # 3.12). Real bytecode, from every code object of a module, still loads.
    out = make_code_checks(
        r"""
import gc, opcode

def with_bytecode(code, bytecode):
    return code_blob(code_fields(code), code=bytecode)

def walk(code):
    yield code
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            yield from walk(const)

import json
source = open(json.__file__.replace("__init__.py", "decoder.py")).read()
real = list(walk(compile(source, "decoder.py", "exec")))
for code in real:
    assert _native.make_code(*code_blob(code_fields(code))).co_code == code.co_code

sample = max(real, key=lambda c: len(c.co_code))
entries = getattr(opcode, "_inline_cache_entries", [])
if hasattr(entries, "items"):  # keyed by name from 3.13 (a frozendict from 3.15)
    cached = [opcode.opmap[name] for name, n in entries.items() if n and name in opcode.opmap]
else:
    cached = [op for op, n in enumerate(entries) if n]
forged = {
    "fuzz case": b"\xef\x88T\n\x8cT\xab\xc4\xb2'\x93\x94N t0",
    "odd length": sample.co_code + b"\x00",
    "unknown opcode": bytes([255, 0]),  # unknown, or ENTER_EXECUTOR/TRACE_RECORD (3.14+)
}
if cached:
    forged["caches past the end"] = sample.co_code + bytes([cached[0], 0])
    forged["cache not zero"] = bytes([cached[0], 0]) + b"\x01\x01" * 20
if hasattr(opcode, "MIN_INSTRUMENTED_OPCODE"):
    forged["instrumented opcode"] = bytes([opcode.MIN_INSTRUMENTED_OPCODE, 0]) + sample.co_code
for label, bytecode in forged.items():
    try:
        _native.make_code(*with_bytecode(sample, bytecode))
    except ValueError as e:
        assert "make_code" in str(e), e
        print("refused:", label)
    else:
        print("ACCEPTED:", label)
gc.collect()
"""
    )
    assert "ACCEPTED" not in out
    assert out.count("refused:") >= 3, out


def test_cell_reconstructors():
    run_checks(
        """
from cloudpickle_rs import _native
empty = _native.make_cell()
try:
    empty.cell_contents
except ValueError:
    pass
else:
    raise AssertionError("cell not empty")
_native.cell_set(empty, 3)
assert empty.cell_contents == 3
assert _native.make_cell(None).cell_contents is None
for bad in ((1, 2), ):
    try:
        _native.make_cell(*bad)
    except TypeError:
        pass
    else:
        raise AssertionError
try:
    _native.cell_set(object(), 1)
except TypeError:
    pass
else:
    raise AssertionError
"""
    )


def test_pickles_reference_the_native_reconstructors_by_name():
    # A pickle names each reconstructor as cloudpickle_rs._native.<name>, and
    # that name must lead back to the object.
    # (a function reading a global list: its state goes through function_setstate)
    payload = cloudpickle_rs.dumps(lambda: RECONSTRUCTORS)
    for name in ("make_function", "function_setstate", "make_code"):
        assert name.encode() in payload
        assert getattr(_native, name).__module__ == "cloudpickle_rs._native"


def test_class_reconstructors_reject_bad_input():
    run_checks(
        """
import enum
from cloudpickle_rs import _native
bad_calls = [
    lambda: _native.make_class(int, "C", (), {}, "id-1"),           # metaclass not a type subclass
    lambda: _native.make_class(type, "C", (5,), {}, "id-2"),        # a base that is not a class
    lambda: _native.make_class(type, "C", (), {"__slots__": 5}, "id-3"),
    lambda: _native.make_enum((), "E", "E", {}, "m", "id-4"),       # no Enum base
    lambda: _native.make_enum((int,), "E", "E", {}, "m", "id-5"),   # last base not an Enum
    lambda: _native.class_setstate(int, ({"x": 1}, None)),          # a builtin class
    lambda: _native.class_setstate(type("X", (), {}), ({}, None, 3)),
    lambda: _native.class_setstate(type("X", (), {}), (5, None)),
    lambda: _native.make_dict_view("nope", [], False),
    lambda: _native.make_dict_view("keys", {}, False),
    lambda: _native.dataclass_field_type("nope"),
    lambda: _native.make_exception(int, ()),
    lambda: _native.make_type_parameter(int, "T", (), {}, "id-6"),
    lambda: _native.builtin_type("__name__"),
]
for call in bad_calls:
    try:
        call()
    except (TypeError, ValueError):
        pass
    else:
        raise AssertionError("accepted")
C = _native.make_class(type, "C", (), {"__qualname__": "Outer.C", "__slots__": ("a",)}, "test-tracker")
assert C.__qualname__ == "Outer.C" and not hasattr(C(), "__dict__")
assert _native.make_class(type, "D", (), {}, "test-tracker") is C   # tracked by id
E = _native.make_enum((enum.Enum,), "E", "E", {"A": 1, "B": 1}, "m", "test-enum")
assert E.B is E.A and E.__module__ == "m"
exc = _native.make_exception(KeyError, ("k", 2))
assert type(exc) is KeyError and exc.args == ("k", 2)
assert list(_native.make_dict_view("values", [1, 2], True)) == [1, 2]
"""
    )


def test_reconstructor_hands_out_only_reconstructors():
    assert _native.reconstructor("make_function") is _native.make_function
    for name in ["dumps", "register_pickle_by_value", "__dict__", "Pickler", "reconstructor"]:
        with pytest.raises(pickle.UnpicklingError):
            _native.reconstructor(name)
    with pytest.raises(TypeError):
        _native.reconstructor(b"make_function")


def test_a_reduction_calls_reconstructors_through_stand_ins():
    # What Pickler.reducer_override returns outside a dump can be called as
    # any reduction: its callable stands for the reconstructor and pickles
    # as rebuild_v2(name).
    offset = 5

    def shifted(x):
        return x + offset

    reduced = _native.Pickler(io.BytesIO()).reducer_override(shifted)
    made_by, args = reduced[0], reduced[1]
    assert made_by is not _native.make_function
    assert _native._reconstructor_of(made_by) is _native.make_function
    assert _native._reconstructor_of(len) is len
    assert made_by(*args)(1) == 6
    assert pickle.loads(pickle.dumps(made_by)) is _native.make_function
    assert "make_function" in repr(made_by) and not hasattr(made_by, "__name__")
    # Any pickler writes our reconstructors (a state setter) as rebuild_v2(name).
    assert pickle.loads(cloudpickle_rs.dumps(_native.class_setstate)) is _native.class_setstate


def test_a_reconstructor_is_first_called_by_number_then_through_itself():
    # In a dump, the first call of a reconstructor is rebuild_v2(number, ...);
    # later ones call it, looked up once by name: a small pickle names none
    # of them, a large one each once.
    import pickletools

    def make(i):
        return lambda: i

    def strings(payload):
        return [arg for op, arg, _ in pickletools.genops(payload) if isinstance(arg, str)]

    one = cloudpickle_rs.dumps(make(1))
    three = cloudpickle_rs.dumps([make(1), make(2), make(3)])
    assert not {"make_function", "make_cell", "make_code"} & set(strings(one))
    assert [strings(three).count(name) for name in ("make_function", "make_cell", "make_code")] == [1, 1, 0]
    assert {"make_function", "make_cell", "make_code"} <= set(reconstructors_called(one))
    check = "one, three = map(pickle.loads, objs)\nassert [one(), [f() for f in three]] == [1, [1, 2, 3]]"
    subprocess_loads(pickle.dumps([one, three]), check)


def test_rebuild_v2_calls_a_reconstructor_by_number_and_gives_it_by_name():
    rebuild = cloudpickle_rs.rebuild_v2
    assert rebuild is _native.rebuild_v2
    assert rebuild(_native.RECONSTRUCTORS.index("make_cell"), 7).cell_contents == 7
    assert rebuild("make_function") is _native.make_function
    assert pickle.loads(pickle.dumps(rebuild)) is rebuild
    assert not hasattr(rebuild, "__name__")
    for bad in [(), (len(_native.RECONSTRUCTORS),), (-1,), (1.0,), ("make_function", 1), (b"make_code",)]:
        with pytest.raises(pickle.UnpicklingError):
            rebuild(*bad)
    with pytest.raises(pickle.UnpicklingError):
        rebuild(0, code=None)


def test_a_pickle_names_one_global_of_ours():
    import pickletools

    def outer():
        cell = []

        def inner():
            return cell, outer

        return inner

    payload = cloudpickle_rs.dumps(outer())
    globals_ = [op.name for op, _, _ in pickletools.genops(payload) if "GLOBAL" in op.name]
    strings = [arg for op, arg, _ in pickletools.genops(payload) if isinstance(arg, str)]
    assert globals_ == ["STACK_GLOBAL"] and strings[:2] == ["cloudpickle_rs", "rebuild_v2"]
    called = reconstructors_called(payload)
    assert {"make_function", "make_code", "make_cell"} <= set(called), called


def test_loading_a_function_again_reuses_its_code_and_never_mixes_up_constants():
    # A worker that receives the same function for every task makes its
    # code object once; code objects that differ only in constants Python
    # calls equal (1, 1.0, True; 0.0, -0.0) have one blob and must stay apart.
    sources = ["1", "1.0", "True", "0.0", "-0.0", "(1, 2)", "(1.0, 2)", "'a'", "b'a'"]
    payload = run_sender(
        f"""
import io
import cloudpickle_rs
from cloudpickle_rs import _native
fs = [eval("lambda: " + source) for source in {sources!r}]
blobs = {{_native.Pickler(io.BytesIO()).reducer_override(f.__code__)[1][0] for f in fs}}
assert len(blobs) < len(fs), blobs  # some of them share a blob
objs = [cloudpickle_rs.dumps(f) for f in fs]
"""
    )
    subprocess_loads(
        payload,
        f"""
first = [pickle.loads(p) for p in objs]
again = [pickle.loads(p) for p in objs]
results = [f() for f in first + again]
assert [repr(r) for r in results] == {sources!r} * 2, results
assert all(a.__code__ is b.__code__ for a, b in zip(first, again))
assert len({{id(f.__code__) for f in first}}) == len(first)
""",
    )
