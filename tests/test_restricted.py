"""Loading without trusting: ``cloudpickle_rs.loads(data, allow=[...])``,
``load(file, allow=[...])`` and ``RestrictedUnpickler``.

Hostile pickles are written by hand (opcodes) or made by a sender's
``__reduce__``; each is shown to be live (plain ``pickle.loads`` in a fresh
interpreter runs its code: a marker file appears) and then refused under
``allow``, with the marker still absent. Legitimate pickles come from fresh
``__main__`` senders and load, in a receiver that lacks the sender's code,
exactly as plain ``pickle.loads`` loads them. ``python -m cloudpickle_rs
inspect --allow`` must agree with the loader: the same rules.
"""

import copyreg
import io
import json
import os
import pickle
import re
import sys
import types

import pytest

import cloudpickle_rs
from cloudpickle_rs import RestrictedUnpickler
from testutils import run_python, run_sender, send_and_receive, subprocess_loads

NATIVE = "cloudpickle_rs._native"


# ---------------------------------------------------------------------------
# Writing pickles by hand (protocol 4 opcodes, no frames).


def s(text):
    """SHORT_BINUNICODE (or BINUNICODE) of ``text``."""
    data = text.encode()
    if len(data) < 256:
        return b"\x8c" + bytes([len(data)]) + data
    return b"X" + len(data).to_bytes(4, "little") + data


def g(module, name):
    """STACK_GLOBAL ``module.name``."""
    return s(module) + s(name) + b"\x93"


def call(callee, *args):
    """``callee(*args)``: MARK, the arguments, TUPLE, REDUCE."""
    return callee + b"(" + b"".join(args) + b"tR"


def p4(expr):
    return b"\x80\x04" + expr + b"."


def touch_command(marker):
    return f"touch '{marker}'"


def python_touch(marker):
    return f"open({str(marker)!r}, 'w').close()"


def reconstructor(name):
    return call(g(NATIVE, "reconstructor"), s(name))


def plain_load_in_subprocess(payload, *, env=None, after=""):
    """Loads ``payload`` with plain pickle in a fresh interpreter (``obj``),
    then runs ``after``; returns the CompletedProcess."""
    script = "import pickle, sys\nobj = pickle.loads(sys.stdin.buffer.read())\n" + after
    return run_python(["-c", script], input=payload, env=env)


def assert_refused(payload, allow, *words):
    """Every way of restricted loading refuses ``payload`` with an
    UnpicklingError whose message holds ``words``; returns the message."""
    with pytest.raises(pickle.UnpicklingError) as info:
        cloudpickle_rs.loads(payload, allow=allow)
    message = str(info.value)
    for word in words:
        assert word in message, message
    with pytest.raises(pickle.UnpicklingError):
        cloudpickle_rs.load(io.BytesIO(payload), allow=allow)
    with pytest.raises(pickle.UnpicklingError):
        RestrictedUnpickler(io.BytesIO(payload), allow=allow).load()
    return message


def inspect_allow(payload, allow, tmp_path):
    path = tmp_path / "payload.pkl"
    path.write_bytes(payload)
    args = [a for module in allow for a in ("--allow", module)]
    return run_python(["-m", "cloudpickle_rs", "inspect", "--json", str(path), *args])


# ---------------------------------------------------------------------------
# Globals outside the allowed modules: refused, nothing runs.


def hostile_globals(marker):
    cmd = touch_command(marker)
    quoted = cmd.replace("'", "\\'")
    return {
        "os.system by GLOBAL": (b"cos\nsystem\n(S'" + quoted.encode() + b"'\ntR.", "os.system"),
        "os.system by STACK_GLOBAL": (p4(call(g("os", "system"), s(cmd))), "os.system"),
        "posix.system": (p4(call(g("posix", "system"), s(cmd))), "posix.system"),
        "subprocess.Popen": (
            p4(call(g("subprocess", "Popen"), b"(" + s("touch") + s(str(marker)) + b"t")),
            "subprocess.Popen",
        ),
        "builtins.eval": (p4(call(g("builtins", "eval"), s(python_touch(marker)))), "builtins.eval"),
        "builtins.exec": (p4(call(g("builtins", "exec"), s(python_touch(marker)))), "builtins.exec"),
        "builtins.__import__": (
            p4(call(call(g("builtins", "getattr"), call(g("builtins", "__import__"), s("os")), s("system")), s(cmd))),
            "builtins.__import__",
        ),
        "INST": (b"(S'" + quoted.encode() + b"'\nios\nsystem\n.", "os.system"),
        "OBJ": (b"(cos\nsystem\nS'" + quoted.encode() + b"'\no.", "os.system"),
        "Python 2 name": (
            b"c__builtin__\neval\n(S'" + python_touch(marker).replace("'", "\\'").encode() + b"'\ntR.",
            "__builtin__.eval",
        ),
    }


HOSTILE_GLOBALS = list(hostile_globals("m"))


@pytest.mark.parametrize("case", HOSTILE_GLOBALS)
def test_hostile_global_is_refused_and_nothing_runs(tmp_path, case):
    marker = tmp_path / "ran"
    payload, named = hostile_globals(marker)[case]

    # The payload is live: plain pickle runs it.
    loaded = plain_load_in_subprocess(payload, after="getattr(obj, 'wait', lambda: 0)()")
    assert loaded.returncode == 0, loaded.stderr.decode()
    assert marker.exists()
    marker.unlink()

    for allow in ([], ["json", "math"]):
        message = assert_refused(payload, allow, named, "not allowed")
        assert "allowed modules:" in message
    assert not marker.exists()
    # The inspector says so too (exit 1), naming the same global.
    report = inspect_allow(payload, ["json"], tmp_path)
    assert report.returncode == 1, report.stderr.decode()
    assert named in {f"{v['module']}.{v['name']}" for v in json.loads(report.stdout)["violations"]}


def test_allowing_a_module_allows_its_names_and_submodules_only():
    assert cloudpickle_rs.loads(b"cos.path\njoin\n.", allow=["os"]) is os.path.join
    assert cloudpickle_rs.loads(b"cos\npath\n.", allow=["os"]) is os.path
    assert cloudpickle_rs.loads(b"cos\nsep\n.", allow=["json", "os"]) == os.sep
    assert_refused(b"cos\nsep\n.", ["os.path"], "os.sep", "module os is not allowed")
    assert_refused(b"cosx\nthing\n.", ["os"], "osx.thing", "module osx is not allowed")
    # Only the allow list's own names count: "builtins" allows builtins.eval.
    assert cloudpickle_rs.loads(p4(g("builtins", "eval")), allow=["builtins"]) is eval


def test_what_our_pickles_use_of_builtins_needs_no_allow():
    # type, object, classmethod... are allowed without allowing builtins (eval).
    import builtins

    for name in ("object", "type", "classmethod", "len", "ValueError", "frozenset"):
        assert cloudpickle_rs.loads(p4(g("builtins", name)), allow=[]) is getattr(builtins, name)
    for name in ("eval", "exec", "compile", "open", "__import__", "getattr.__self__", "vars"):
        assert_refused(p4(g("builtins", name)), [], f"builtins.{name}")
    # Builtin exceptions, as pickle writes them (a call of the class; built
    # by hand: a library imported by another test, tblib, may have replaced
    # how this process pickles exceptions).
    error = cloudpickle_rs.loads(p4(call(g("builtins", "KeyError"), s("k"))), allow=[])
    assert type(error) is KeyError and error.args == ("k",)
    assert_refused(p4(call(g("builtins", "ValueError"), call(g("builtins", "eval"), s("1")))), [], "builtins.eval")


def test_upstream_builtin_type_gives_classes_of_types_only():
    pytest.importorskip("cloudpickle")
    builtin_type = g("cloudpickle.cloudpickle", "_builtin_type")
    assert cloudpickle_rs.loads(p4(call(builtin_type, s("CodeType"))), allow=["cloudpickle"]) is types.CodeType
    # upstream's _builtin_type(name) is getattr(types, name): types.new_class
    # would call a callback the pickle gives it.
    assert_refused(p4(call(builtin_type, s("new_class"))), ["cloudpickle"], "types.new_class is not a class")


# ---------------------------------------------------------------------------
# builtins.eval and other modules reached through calls.


def test_eval_through_getattr_on_builtins_is_refused(tmp_path):
    marker = tmp_path / "ran"
    builtins_module = call(reconstructor("subimport"), s("builtins"))
    payload = p4(call(call(g("builtins", "getattr"), builtins_module, s("eval")), s(python_touch(marker))))
    assert plain_load_in_subprocess(payload).returncode == 0 and marker.exists()
    marker.unlink()
    assert_refused(payload, ["json"], "builtins.eval", "module builtins is not allowed")
    assert not marker.exists()


def test_getattr_on_a_module_imported_by_our_subimport_is_checked(tmp_path):
    marker = tmp_path / "ran"
    os_module = call(reconstructor("subimport"), s("os"))
    payload = p4(call(call(g("builtins", "getattr"), os_module, s("system")), s(touch_command(marker))))
    assert plain_load_in_subprocess(payload).returncode == 0 and marker.exists()
    marker.unlink()
    message = assert_refused(payload, ["builtins"], "os.system", "module os is not allowed")
    assert "os (import" in message
    assert not marker.exists()


@pytest.mark.parametrize("module", [NATIVE, "cloudpickle.cloudpickle"])
def test_getattr_on_a_module_made_by_dynamic_subimport_is_not_called(tmp_path, module):
    # dynamic_subimport("os", {...}) makes a module named os holding the
    # pickle's own values; calling what getattr finds there is calling a
    # value the pickle computes.
    marker = tmp_path / "ran"
    evil = call(g("builtins", "eval"), s("lambda *a: " + python_touch(marker)))
    fake_os = call(g(module, "dynamic_subimport"), s("os"), b"}" + s("system") + evil + b"s")
    payload = p4(call(call(g("builtins", "getattr"), fake_os, s("system")), s("x")))
    allow = ["builtins"] + (["cloudpickle"] if module.startswith("cloudpickle.") else [])
    live = plain_load_in_subprocess(payload, env={"CLOUDPICKLE_RS_INSTALL": "1"})
    assert live.returncode == 0, live.stderr.decode()
    assert marker.exists()
    marker.unlink()
    assert_refused(payload, allow, "computed while loading")
    # Without eval allowed, the value itself is refused too.
    assert_refused(payload, allow[1:], "builtins.eval")
    assert not marker.exists()


def test_module_namespace_reached_through_a_dunder_is_refused():
    module = call(reconstructor("make_module"), s("m"))
    for payload in (
        p4(call(g("builtins", "getattr"), module, s("__builtins__"))),
        p4(g("json", "__builtins__")),
        p4(g("json", "decoder.__builtins__")),
        p4(g("builtins", "getattr.__self__")),
        p4(g("math", "floor.__self__")),
    ):
        for allow in (["json", "math"], ["json", "math", "builtins"]):
            assert_refused(payload, allow, "passes through __")


def test_another_module_reached_through_an_allowed_one_is_refused(tmp_path):
    # posixpath (os.path) imports os: os.path.os.system is os.system, which
    # names alone (all within os.path) do not tell.
    marker = tmp_path / "ran"
    dotted = p4(call(g("os.path", "os.system"), s(touch_command(marker))))
    os_path = call(reconstructor("subimport"), s("os.path"))
    os_module = call(g("builtins", "getattr"), os_path, s("os"))
    chained = p4(call(call(g("builtins", "getattr"), os_module, s("system")), s(touch_command(marker))))
    for payload in (dotted, chained):
        assert plain_load_in_subprocess(payload).returncode == 0 and marker.exists()
        marker.unlink()
        assert_refused(payload, ["os.path"], "module os, which is not allowed")
        assert not marker.exists()
    # With os allowed, both are what they say.
    assert cloudpickle_rs.loads(p4(g("os.path", "os.system")), allow=["os"]) is os.system


def test_our_package_offers_pickles_its_reconstructors_only(tmp_path):
    marker = tmp_path / "ran"
    inner = p4(call(g("builtins", "eval"), s(python_touch(marker))))
    for module, name in (
        ("cloudpickle_rs", "loads"),
        ("cloudpickle", "loads"),
        ("cloudpickle.cloudpickle", "loads"),
        (NATIVE, "dumps"),
        (NATIVE, "register_pickle_by_value"),
    ):
        payload = p4(call(g(module, name), b"C" + bytes([len(inner)]) + inner))
        assert_refused(payload, ["cloudpickle_rs", "cloudpickle"], f"{module}.{name}", "reconstructors")
    assert not marker.exists()
    assert_refused(p4(reconstructor("dumps")), [], "no reconstructor named 'dumps'")


def test_copyreg_extension_codes_are_checked(tmp_path):
    marker = tmp_path / "ran"
    code = 0x7FF1
    payload = b"\x80\x02\x83" + code.to_bytes(2, "little") + b"(" + s(touch_command(marker)) + b"tR."
    setup = f"import copyreg\ncopyreg.add_extension('os', 'system', {code})\n"
    live = run_python(["-c", setup + "import pickle, sys\npickle.loads(sys.stdin.buffer.read())"], input=payload)
    assert live.returncode == 0 and marker.exists(), live.stderr.decode()
    marker.unlink()
    copyreg.add_extension("os", "system", code)
    try:
        assert_refused(payload, ["builtins"], "os.system")
    finally:
        copyreg.remove_extension("os", "system", code)
    assert not marker.exists()


def test_persistent_ids_are_the_unpicklers_business():
    payload = p4(s("key") + b"Q")  # BINPERSID
    with pytest.raises(pickle.UnpicklingError, match="persistent"):
        cloudpickle_rs.loads(payload, allow=[])

    class WithStore(RestrictedUnpickler):
        def persistent_load(self, pid):
            return {"key": len}[pid]

    assert WithStore(io.BytesIO(payload), allow=[]).load() is len
    # What persistent_load returns is not the pickle's to call.
    called = p4(call(s("key") + b"Q", s("abc")))
    with pytest.raises(pickle.UnpicklingError, match="computed while loading"):
        WithStore(io.BytesIO(called), allow=[]).load()


def test_a_subclass_find_class_keeps_the_checks(tmp_path):
    marker = tmp_path / "ran"

    class Renaming(RestrictedUnpickler):
        def find_class(self, module, name):
            if module == "oldpkg":
                module = "os"  # a moved module, renamed on load
            return super().find_class(module, name)

    payload = b"coldpkg\nsystem\n(S'" + touch_command(marker).replace("'", "\\'").encode() + b"'\ntR."
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        Renaming(io.BytesIO(payload), allow=["oldpkg"]).load()
    assert not marker.exists()
    assert Renaming(io.BytesIO(b"coldpkg\nsep\n."), allow=["oldpkg", "os"]).load() == os.sep


# ---------------------------------------------------------------------------
# Code the pickle ships by value never runs while loading.

TRICKS_SENDER = r"""
import copyreg
import functools
import cloudpickle_rs

def touch():
    path = __import__("os").environ.get("CPRS_MARKER")
    if path:
        open(path, "w").close()

def payload_function():
    touch()

class CallsAFunction:
    def __reduce__(self):
        return (payload_function, ())

class Initialised:
    def __init__(self, *args):
        touch()

class CallsAClass:
    def __reduce__(self):
        return (Initialised, (1,))

class New:
    def __new__(cls, *args):
        touch()
        return super().__new__(cls)
    def __reduce__(self):
        return (copyreg.__newobj__, (New,))

class SetState:
    def __setstate__(self, state):
        touch()
    def __reduce__(self):
        return (SetState, (), {"a": 1})

class Hashed:
    def __hash__(self):
        touch()
        return 1

class Deleted:
    def __del__(self):
        touch()

class Meta(type):
    def __init__(cls, *args):
        touch()
        super().__init__(*args)

class Made(metaclass=Meta):
    pass

class Extending(list):
    def extend(self, items):
        touch()

class Setting(dict):
    def __setitem__(self, key, value):
        touch()

class ReconstructedBase:
    def __init__(self, state):
        touch()

class Reconstructor:
    def __reduce__(self):
        return (copyreg._reconstructor, (ReconstructedBase, ReconstructedBase, None))

class HashedMeta(type):
    def __hash__(cls):
        touch()
        return 1

class HashedClass(metaclass=HashedMeta):
    pass

@functools.singledispatch
def dispatched(x):
    return x

dispatched.register(HashedClass, lambda x: x)

class LooksUp:
    def __call__(self):
        return 1
    def __getattr__(self, name):
        touch()
        raise AttributeError(name)

cached = functools.lru_cache(maxsize=8)(LooksUp())

class Dispatching:
    @functools.singledispatchmethod
    def handle(self, x):
        return x

    @handle.register
    def _(self, x: HashedClass):
        return x

payloads = {
    "singledispatch registering a class whose metaclass ships __hash__": (dispatched, "__hash__"),
    "singledispatchmethod registering it": (Dispatching.__dict__["handle"], "__hash__"),
    "lru_cache wrapping an instance shipping __getattr__": (cached, "__getattr__"),
    "REDUCE of a function shipped by value": (CallsAFunction(), "function shipped by value"),
    "REDUCE of a class shipped by value": (CallsAClass(), "__init__"),
    "NEWOBJ of a class shipping __new__": (New(), "__new__"),
    "BUILD of a class shipping __setstate__": (SetState(), "__setstate__"),
    "hashing an instance shipping __hash__": ({Hashed()}, "__hash__"),
    "dict key shipping __hash__": ({Hashed(): 1}, "__hash__"),
    "an instance shipping __del__": ([Deleted()], "__del__"),
    "a metaclass shipping __init__": (Made, "__init__"),
    "APPENDS on a list shipping extend": (Extending([1, 2]), "extend"),
    "SETITEMS on a dict shipping __setitem__": (Setting(a=1), "__setitem__"),
    "copyreg._reconstructor of a base shipped by value": (Reconstructor(), "copyreg._reconstructor"),
}
objs = {name: (cloudpickle_rs.dumps(obj, protocol=proto), word)
        for name, (obj, word) in payloads.items() for proto in [5]}
"""


@pytest.fixture(scope="module")
def tricks():
    return pickle.loads(run_sender(TRICKS_SENDER))


TRICK_NAMES = [
    "singledispatch registering a class whose metaclass ships __hash__",
    "singledispatchmethod registering it",
    "lru_cache wrapping an instance shipping __getattr__",
    "REDUCE of a function shipped by value",
    "REDUCE of a class shipped by value",
    "NEWOBJ of a class shipping __new__",
    "BUILD of a class shipping __setstate__",
    "hashing an instance shipping __hash__",
    "dict key shipping __hash__",
    "an instance shipping __del__",
    "a metaclass shipping __init__",
    "APPENDS on a list shipping extend",
    "SETITEMS on a dict shipping __setitem__",
    "copyreg._reconstructor of a base shipped by value",
]


@pytest.mark.parametrize("name", TRICK_NAMES)
def test_code_shipped_by_value_is_not_run_while_loading(tricks, name, tmp_path, monkeypatch):
    payload, word = tricks[name]
    marker = tmp_path / "ran"
    # Live: plain pickle runs the sender's code while loading (or, for
    # __del__, when the loaded object goes).
    env = {"CPRS_MARKER": str(marker)}
    assert plain_load_in_subprocess(payload, env=env, after="del obj").returncode == 0
    assert marker.exists(), name
    marker.unlink()

    monkeypatch.setenv("CPRS_MARKER", str(marker))
    assert_refused(payload, ["copyreg"], word)
    assert not marker.exists()
    # The receiver's view: in a fresh interpreter too.
    out = subprocess_loads(
        payload,
        """
        import cloudpickle_rs
        try:
            cloudpickle_rs.loads(data, allow=["copyreg"])
        except pickle.UnpicklingError as e:
            print("refused:", e)
        """,
        env=env,
        autoload=False,
    )
    assert out.startswith("refused:") and word in out
    assert not marker.exists()
    report = inspect_allow(payload, ["copyreg"], tmp_path)
    assert report.returncode == 1
    assert any(
        word in v["reason"] or word in f"{v['module']}.{v['name']}" for v in json.loads(report.stdout)["violations"]
    )


def test_setstate_given_as_an_attribute_by_a_first_build_is_refused(tmp_path):
    # NEWOBJ(OrderedDict), BUILD({"__setstate__": f}), BUILD({}): the second
    # BUILD calls f, a function shipped by value.
    marker = tmp_path / "ran"
    function = cloudpickle_rs.dumps((lambda path: lambda state: open(path, "w").close())(str(marker)), protocol=2)
    assert function.startswith(b"\x80\x02") and function.endswith(b".")
    index = (10**5).to_bytes(4, "little")
    payload = (
        function[:-1]
        + b"r"
        + index
        + b"0"  # LONG_BINPUT, POP
        + b"ccollections\nOrderedDict\n)\x81"  # GLOBAL, EMPTY_TUPLE, NEWOBJ
        + b"}"
        + b"U\x0c__setstate__"
        + b"j"
        + index
        + b"sb"  # {"__setstate__": f} BUILD
        + b"}b."  # BUILD {}
    )
    assert plain_load_in_subprocess(payload).returncode == 0 and marker.exists()
    marker.unlink()
    assert_refused(payload, ["collections"], "__setstate__", "that loading would call")
    assert not marker.exists()


def test_changing_a_global_object_is_refused():
    # BUILD on a module: json.loads replaced for the whole process.
    payload = p4(call(reconstructor("subimport"), s("json")) + b"N}" + s("loads") + s("x") + b"s\x86b")
    assert_refused(payload, ["json"], "would change a global object")
    assert json.loads("[1]") == [1]
    # function_setstate on a function the pickle did not make: its globals.
    setter = reconstructor("function_setstate")
    payload = p4(call(setter, g("json", "dumps"), b"}" + s("x") + b"K\x01s\x85"))
    assert_refused(payload, ["json"], "function the pickle did not make")
    # APPENDS on sys.path.
    payload = p4(g("sys", "path") + b"(" + s("/tmp/evil") + b"e")
    assert_refused(payload, ["sys"], "sys.path", "would change a global object")
    assert "/tmp/evil" not in sys.path


def test_forged_bytecode_raises_and_a_hostile_function_is_only_made(tmp_path):
    marker = tmp_path / "ran"

    def make(path):
        return lambda: open(path, "w").close()

    func = make(str(marker))
    payload = cloudpickle_rs.dumps(func, protocol=4)
    co_code = func.__code__.co_code
    assert payload.count(co_code) == 1
    forged = payload.replace(co_code, b"\xff" * len(co_code))
    with pytest.raises(ValueError, match="bytecode"):
        cloudpickle_rs.loads(forged, allow=[])
    # The real function loads and is not called: nothing happened yet.
    loaded = cloudpickle_rs.loads(payload, allow=[])
    assert not marker.exists()
    loaded()
    assert marker.exists()


def test_function_whose_globals_reach_os_needs_os_allowed(tmp_path):
    marker = tmp_path / "ran"
    payload = run_sender(
        f"""
        import os
        def run():
            os.system({touch_command(marker)!r})
        objs = run
        """
    )
    assert_refused(payload, [], "module os is not allowed")
    out = subprocess_loads(
        payload,
        """
        import cloudpickle_rs, os
        run = cloudpickle_rs.loads(data, allow=["os"])
        print(run.__globals__["os"] is os, callable(run))
        """,
        autoload=False,
    )
    assert out.split() == ["True", "True"]
    assert not marker.exists()


# ---------------------------------------------------------------------------
# Legitimate pickles load under allow, as plain pickle loads them.

CORPUS_SENDER = r"""
import abc, collections, dataclasses, datetime, decimal, enum, fractions, functools
import ipaddress, logging, math, pathlib, re, sys, types, typing, uuid, weakref
import cloudpickle_rs
import regpkg
cloudpickle_rs.register_pickle_by_value(regpkg)

OFFSET = 3

def make_adder(n):
    def add(x):
        return math.floor(x) + n + OFFSET
    return add

def make_counter():
    count = 0
    def inc():
        nonlocal count
        count += 1
        return count
    return inc

class Point:
    dims = 2
    def __init__(self, x, y):
        self.x, self.y = x, y
    @classmethod
    def origin(cls):
        return cls(0, 0)
    @staticmethod
    def kind():
        return "point"
    @property
    def swapped(self):
        return Point(self.y, self.x)

class Child(Point):
    def norm(self):
        return abs(self.x) + abs(self.y)

class Color(enum.Enum):
    RED = 1
    CRIMSON = 1
    BLUE = 2
    def lower(self):
        return self.name.lower()

class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2

class Perm(enum.Flag):
    R = 4
    W = 2

@dataclasses.dataclass(frozen=True)
class Frozen:
    a: int
    tags: list = dataclasses.field(default_factory=list)

@dataclasses.dataclass
class Row:
    id: int = 0
    name: str = ""

class Shape(abc.ABC):
    @abc.abstractmethod
    def area(self): ...

class Square(Shape):
    def area(self):
        return 4

class Virtual:
    pass

Shape.register(Virtual)

class Pair(typing.NamedTuple):
    a: int
    b: str = "z"

T = typing.TypeVar("T", bound=int)

class Box(typing.Generic[T]):
    def __init__(self, v):
        self.v = v

class AppError(Exception):
    pass

class Meta(type):
    def __call__(cls, *args, **kwargs):
        return super().__call__(*args, **kwargs)

class Managed(metaclass=Meta):
    pass

class Slotted:
    __slots__ = ("a", "b")
    def __init__(self):
        self.a, self.b = 1, 2

dyn = types.ModuleType("dynmod")
exec("RATE = 3\ndef scale(x):\n    return x * RATE\nclass InMod:\n    def hello(self):\n        return 'hi'\n",
     dyn.__dict__)

def gen():
    yield 1

try:
    try:
        1 / 0
    except ZeroDivisionError as cause:
        raise AppError("wrapped") from cause
except AppError as error:
    chained = error

@functools.lru_cache(maxsize=32)
def memo(x):
    return x + OFFSET

@functools.singledispatch
def describe(x):
    return "thing"

@describe.register
def _(x: int):
    return "int"

describe.register(Point, lambda p: "point")

class Handler:
    @functools.singledispatchmethod
    def handle(self, x):
        return "any"

    @handle.register
    def _(self, x: str):
        return "str"

    @functools.cached_property
    def answer(self):
        return 42

import contextvars
request_id = contextvars.ContextVar("request_id", default="none")

def reads_request_id():
    return request_id.get()

UserId = typing.NewType("UserId", int)
kept = Point(5, 6)
by_name = weakref.WeakValueDictionary({"kept": kept})

view_source = {"k": 1, "j": 2}
objects = dict(
    memo=memo, describe=describe, Handler=Handler, handler=Handler(), UserId=UserId,
    request_id=request_id, reads_request_id=reads_request_id, by_name=(kept, by_name),
    lam=lambda x: x * OFFSET, closure=make_adder(5), counter=make_counter(), gen=gen,
    Point=Point, point=Point(1, 2), child=Child(3, -4), Color=Color, blue=Color.BLUE,
    colors=[Color.RED, Color.BLUE], color_set={Color.RED}, color_keys={Color.BLUE: 2},
    level=Level.HIGH, perms=Perm.R | Perm.W, Frozen=Frozen, frozen=Frozen(1),
    frozen_set={Frozen(2, ())}, row=Row(1, "x"), Shape=Shape, square=Square(), Virtual=Virtual,
    Pair=Pair, T=T, Box=Box, box=Box(3), box_int=Box[int], union=typing.Union[int, Box],
    error=AppError("boom"), Managed=Managed, slotted=Slotted(), dyn=dyn, in_mod=dyn.InMod(),
    registered=regpkg.area, registered_shape=regpkg.Shape(2), registered_class=regpkg.Shape,
    floor=math.floor, join=__import__("os").path.join, partial=functools.partial(max, 1),
    keys=view_source.keys(), items=view_source.items(), od=collections.OrderedDict(a=1),
    default=collections.defaultdict(list, a=[1]), counter_data=collections.Counter("abca"),
    deque=collections.deque([1, 2], maxlen=5), numbers={1, 2, 3}, letters=frozenset("ab"),
    raw=bytearray(b"x"), complex=1j, rng=range(3), cut=slice(1, 2), none_type=type(None),
    ellipsis=..., data={"a": [1, 2.5, "x"], "b": (None, True), "c": b"\x00\xff"},
    when=datetime.datetime(2024, 1, 2, 3, 4, 5), day=datetime.date(2024, 1, 2),
    delta=datetime.timedelta(seconds=5), money=decimal.Decimal("1.50"),
    third=fractions.Fraction(1, 3), ident=uuid.UUID(int=7), path=pathlib.PurePosixPath("/a/b"),
    pattern=re.compile("a+b"), address=ipaddress.ip_address("10.0.0.1"),
    logger=logging.getLogger("app.sub"), prop=property(lambda self: 1),
    cm=classmethod(lambda cls: cls), method=Point(1, 2).swapped.__class__.origin,
    bound=[].append, code=(lambda: 1).__code__, missing=dataclasses.MISSING,
    getset=type.__dict__["__dict__"], proxy=types.MappingProxyType({"x": 1}),
    weak=weakref.WeakSet(), recursive_list=None, pair=Pair(2),
    value_error=ValueError("bad", 2), key_error=KeyError("k"), os_error=OSError(2, "gone"),
    chained=chained,
)
cycle = [1]
cycle.append(cycle)
objects["recursive_list"] = cycle
objs = {}
for name, obj in objects.items():
    for proto in (5, 2, 0):
        try:
            objs[f"{name}@{proto}"] = cloudpickle_rs.dumps(obj, protocol=proto)
        except Exception:
            assert proto == 0, name  # protocol 0 cannot do __slots__ without __getstate__
"""

REGPKG = """
import math

class Shape:
    def __init__(self, side):
        self.side = side
    def area(self):
        return area(self.side)

def area(side):
    return math.pow(side, 2)
"""

#: The modules the corpus references (stdlib), given to every load.
CORPUS_ALLOW = [
    "abc",
    "collections",
    "_collections",
    "copyreg",
    "dataclasses",
    "datetime",
    "decimal",
    "_decimal",
    "enum",
    "fractions",
    "functools",
    "ipaddress",
    "logging",
    "math",
    "pathlib",
    "posixpath",
    "re",
    "typing",
    "uuid",
    "_weakrefset",
    "_thread",
    "_operator",
    "_io",
    "weakref",
]
#: From 3.14 the annotate functions of classes and of dataclasses' methods
#: refer to annotationlib.
ANNOTATIONS = ["annotationlib"] if sys.version_info >= (3, 14) else []
CORPUS_ALLOW += ANNOTATIONS
#: Loads that must be refused, as they run code the pickle ships by value: a
#: NamedTuple's instance its __new__ (from protocol 2: NEWOBJ; the class
#: itself loads), a set of frozen dataclass instances their __hash__.
REFUSED = {"pair": "__new__", "frozen_set": "__hash__"}

CORPUS_RECEIVER = """
import cloudpickle_rs, contextlib, io, json, os, pickle, re, tempfile, types
from cloudpickle_rs import _inspect

def same(a, b, seen):
    # What plain loads made and what restricted loads made, compared by value
    # (classes, which loading tracks, by identity).
    if a is b or (id(a), id(b)) in seen:
        return True
    seen.add((id(a), id(b)))
    if type(a) is not type(b):
        return False
    if isinstance(a, type):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y, seen) for x, y in zip(a, b))
    if isinstance(a, (dict, types.MappingProxyType)):
        return same(list(a.items()), list(b.items()), seen)
    if isinstance(a, types.FunctionType):
        cells = lambda f: [c.cell_contents for c in f.__closure__ or ()]
        return (a.__code__ == b.__code__ and a.__qualname__ == b.__qualname__
                and same([a.__defaults__, a.__kwdefaults__, a.__dict__, cells(a)],
                         [b.__defaults__, b.__kwdefaults__, b.__dict__, cells(b)], seen)
                and same({k: a.__globals__[k] for k in a.__code__.co_names if k in a.__globals__},
                         {k: b.__globals__[k] for k in b.__code__.co_names if k in b.__globals__}, seen))
    if isinstance(a, types.MethodType):
        return same([a.__func__, a.__self__], [b.__func__, b.__self__], seen)
    if isinstance(a, (classmethod, staticmethod)):
        return same(a.__func__, b.__func__, seen)
    if isinstance(a, property):
        return same([a.fget, a.fset, a.fdel, a.__doc__], [b.fget, b.fset, b.fdel, b.__doc__], seen)
    if isinstance(a, types.ModuleType):
        return same({k: v for k, v in vars(a).items() if k != "__builtins__"},
                    {k: v for k, v in vars(b).items() if k != "__builtins__"}, seen)
    if type(a).__eq__ is object.__eq__ and hasattr(a, "__dict__"):
        return same(vars(a), vars(b), seen)
    try:
        return bool(a == b)
    except Exception:
        return False

def equal(a, b):
    return cloudpickle_rs.dumps(a) == cloudpickle_rs.dumps(b) or same(a, b, set())

ALLOW = json.loads(os.environ["CPRS_ALLOW"])
results = {}
tmp = tempfile.mkdtemp()
for name, payload in pickle.loads(data).items():
    plain = pickle.loads(payload)
    try:
        restricted = cloudpickle_rs.loads(payload, allow=ALLOW)
    except pickle.UnpicklingError as e:
        outcome = "refused: " + str(e)
    else:
        outcome = "same" if type(restricted) is type(plain) and equal(restricted, plain) else "different"
    # The inspector's verdict on the same bytes, under the same allow list.
    path = os.path.join(tmp, "p.pkl")
    with open(path, "wb") as f:
        f.write(payload)
    with contextlib.redirect_stdout(io.StringIO()):
        code = _inspect.main([path, *[a for m in ALLOW for a in ("--allow", m)]])
    # Which allowed modules it needs: leaving one out is refused, naming it.
    needs = []
    if not outcome.startswith("refused"):
        for module in ALLOW:
            try:
                cloudpickle_rs.loads(payload, allow=[m for m in ALLOW if m != module])
            except pickle.UnpicklingError as e:
                named = re.search("module " + re.escape(module) + r"(\\.\\w+)* is not allowed", str(e))
                needs.append([module, bool(named)])
    results[name] = [outcome, code, needs]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    package = tmp_path_factory.mktemp("pkgs")
    (package / "regpkg.py").write_text(REGPKG)
    out = send_and_receive(
        CORPUS_SENDER,
        CORPUS_RECEIVER,
        sender_sys_path=[package],
        receiver_env={"CPRS_ALLOW": json.dumps(CORPUS_ALLOW)},
        autoload=False,
    )
    return json.loads(out)


def test_our_pickles_load_under_allow_as_plain_pickle_loads_them(corpus):
    assert len(corpus) > 150
    for name, (outcome, exit_code, _) in corpus.items():
        obj, protocol = name.split("@")
        if obj in REFUSED and (obj, protocol) != ("pair", "0"):  # protocol 0: tuple.__new__
            assert outcome.startswith("refused") and REFUSED[obj] in outcome, (name, outcome)
            assert "shipped by value" in outcome, (name, outcome)
        else:
            assert outcome == "same", (name, outcome)
        # Same rules: the inspector passes what the loader loads, and only that.
        assert exit_code == (0 if outcome == "same" else 1), (name, outcome, exit_code)


def test_each_referenced_module_is_needed_and_named(corpus):
    needed = {name: {m for m, _ in needs} for name, (_, _, needs) in corpus.items()}
    for name, (_, _, needs) in corpus.items():
        assert all(named for _, named in needs), (name, needs)
    expect = {
        "closure": {"math"},
        "floor": {"math"},
        "registered": {"math"},
        "join": {"posixpath"},
        "blue": {"enum"},
        "frozen": {"dataclasses"},
        "T": {"typing"},
        "od": {"collections"},
        "when": {"datetime"},
        "partial": {"functools"},
        "logger": {"logging"},
        "lam": set(),
        "counter": set(),
        "point": set(),
        "data": set(),
        "dyn": set(),
    }
    for obj, modules in expect.items():
        for proto in (5, 2):
            assert modules <= needed[f"{obj}@{proto}"], (obj, proto, needed[f"{obj}@{proto}"])
        if not modules:
            assert needed[f"{obj}@5"] <= {"copyreg", *ANNOTATIONS}, (obj, needed[f"{obj}@5"])


def test_namedtuple_instances_are_refused_for_their_shipped_new():
    payload = run_sender(
        "import typing\nclass Pair(typing.NamedTuple):\n    a: int\nobjs = (Pair, Pair(1))",
        expr="objs",
    )
    assert_refused(payload, [], "Pair", "__new__", "shipped by value")
    out = subprocess_loads(
        run_sender("import typing\nclass Pair(typing.NamedTuple):\n    a: int\nobjs = Pair"),
        "import cloudpickle_rs\n"
        f"Pair = cloudpickle_rs.loads(data, allow={['typing', 'collections', '_collections', *ANNOTATIONS]!r})\n"
        "print(Pair._fields, Pair(5).a)",
        autoload=False,
    )
    assert out.split() == ["('a',)", "5"]


# ---------------------------------------------------------------------------
# Receivers that lack the sender's code.


def test_round_trip_into_a_receiver_that_lacks_the_code():
    out = send_and_receive(
        """
        import enum, math
        SCALE = 10
        class Unit(enum.Enum):
            M = "m"
        class Reading:
            def __init__(self, value):
                self.value, self.unit = value, Unit.M
            def scaled(self):
                return math.floor(self.value) * SCALE
        objs = (lambda r: r.scaled() + 1, Reading(2.5))
        """,
        """
        import cloudpickle_rs
        assert "Reading" not in vars(sys.modules["__main__"])
        task, reading = cloudpickle_rs.loads(data, allow=["math", "enum"])
        print(task(reading), reading.unit.value, type(reading).__module__)
        try:
            cloudpickle_rs.loads(data, allow=["enum"])
        except pickle.UnpicklingError as e:
            print("refused", "math" in str(e))
        """,
        autoload=False,
    )
    assert out.split() == ["21", "m", "__main__", "refused", "True"]


def test_upstream_cloudpickle_pickles_need_cloudpickle_allowed():
    upstream = pytest.importorskip("cloudpickle")
    offset = 4
    payload = upstream.dumps(lambda x: x + offset)
    assert_refused(payload, [], "cloudpickle.cloudpickle._make_function", "not allowed")
    out = subprocess_loads(
        payload,
        "import cloudpickle_rs\nprint(cloudpickle_rs.loads(data, allow=['cloudpickle'])(1))",
        autoload=False,
    )
    assert out.strip() == "5"


TRACKED_SENDER = """
class Point:
    def get(self):
        return {result!r}

objs = Point
"""


@pytest.mark.parametrize("upstream", [False, True], ids=["ours", "upstream"])
def test_a_pickle_cannot_change_a_class_this_process_already_tracks(upstream):
    # A class id names a class across pickles: a forged pickle that reuses
    # the id of a class the receiver already has must not change it under
    # allow (plain pickle.loads does, as upstream cloudpickle's loader does).
    if upstream:
        pytest.importorskip("cloudpickle")
        footer = "\nimport sys\nsys.stdout.buffer.write(__import__('cloudpickle').dumps(objs))\n"
        good = run_python(["-c", TRACKED_SENDER.format(result="original") + footer]).stdout
        evil = run_python(["-c", TRACKED_SENDER.format(result="changed") + footer]).stdout
    else:
        good = run_sender(TRACKED_SENDER.format(result="original"))
        evil = run_sender(TRACKED_SENDER.format(result="changed"))
    id_pattern = rb"[0-9a-f]{32}"  # ours: a digest; upstream's: uuid4().hex
    good_ids = set(re.findall(id_pattern, good))
    evil_ids = set(re.findall(id_pattern, evil))
    assert len(good_ids) == len(evil_ids) == 1 and good_ids != evil_ids
    forged = evil.replace(evil_ids.pop(), good_ids.pop())
    allow = ["cloudpickle"] if upstream else []
    out = subprocess_loads(
        pickle.dumps((good, forged)),
        f"""
        import cloudpickle_rs
        good, forged = objs
        Point = pickle.loads(good)
        same = cloudpickle_rs.loads(forged, allow={allow!r})
        print(same is Point, Point().get())
        pickle.loads(forged)
        print(Point().get())
        """,
    )
    assert out.split() == ["True", "original", "changed"]


# ---------------------------------------------------------------------------
# The API: streams, arguments, bad input.


def test_load_reads_one_pickle_at_a_time_and_keeps_the_memo(tmp_path):
    shared = [1, 2]
    path = tmp_path / "stream.pkl"
    with open(path, "wb") as f:
        pickler = cloudpickle_rs.Pickler(f)
        pickler.dump(shared)
        pickler.dump([shared, shared])  # refers to the first pickle's memo
        pickle.dump("tail", f)
    with open(path, "rb") as f:
        unpickler = RestrictedUnpickler(f, allow=[])
        first = unpickler.load()
        second = unpickler.load()
        assert second == [[1, 2], [1, 2]] and second[0] is second[1] is first
        assert cloudpickle_rs.load(f, allow=[]) == "tail"
        with pytest.raises(EOFError):
            cloudpickle_rs.load(f, allow=[])
    assert unpickler.allow == ()


def test_loads_ignores_what_follows_the_pickle_and_takes_pickle_arguments():
    assert cloudpickle_rs.loads(pickle.dumps([1]) + b"junk", allow=[]) == [1]
    py2_string = b"\x80\x02U\x04caf\xe9."
    assert cloudpickle_rs.loads(py2_string, allow=[], encoding="latin1") == "caf\xe9"
    assert cloudpickle_rs.loads(bytearray(pickle.dumps((1, 2))), allow=[]) == (1, 2)
    assert cloudpickle_rs.loads(memoryview(pickle.dumps("m")), allow=[]) == "m"
    buffers = []
    blob = pickle.PickleBuffer(bytearray(b"z" * 100))
    payload = pickle.dumps(blob, protocol=5, buffer_callback=buffers.append)
    assert bytes(cloudpickle_rs.loads(payload, allow=[], buffers=buffers)) == b"z" * 100


@pytest.mark.parametrize(
    "allow, error",
    [
        ("os", TypeError),
        (b"os", TypeError),
        ([1], TypeError),
        (None.__class__, TypeError),
        ([""], ValueError),
        (["os."], ValueError),
    ],
)
def test_bad_allow_lists_are_rejected(allow, error):
    with pytest.raises(error):
        cloudpickle_rs.loads(pickle.dumps(1), allow=allow)


def test_restricted_unpickler_needs_allow_and_a_file():
    with pytest.raises(TypeError):
        RestrictedUnpickler(io.BytesIO(b"."))
    with pytest.raises(TypeError, match="read"):
        RestrictedUnpickler(b"not a file", allow=[])
    assert "RestrictedUnpickler" in cloudpickle_rs.__all__
    assert issubclass(RestrictedUnpickler, pickle.Unpickler)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not a pickle at all",
        bytes(range(256)) * 4,
        b"R.",
        b"\x80\x04h\x05.",
        b"\x80\x04K\x01K\x02\x93.",
        b"\x80\x04K\x01u.",
        b"\x80\x05\x95\xff\xff\xff\xff\xff\xff\xff\x7f",
        b"\x80\x04\x80\x02N.",  # a second PROTO
    ],
)
def test_bad_input_raises_a_clear_exception(payload):
    with pytest.raises((pickle.UnpicklingError, EOFError)):
        cloudpickle_rs.loads(payload, allow=["builtins"])


def test_truncated_pickles_of_ours_raise(tmp_path):
    payload = run_sender("class C:\n    def m(self):\n        return 1\nobjs = (C, C())")
    for cut in (1, len(payload) // 3, len(payload) // 2, len(payload) - 1):
        with pytest.raises(pickle.UnpicklingError, match="truncated"):
            cloudpickle_rs.loads(payload[:cut], allow=[])
    # Loading each truncation in a subprocess never crashes either.
    out = subprocess_loads(
        payload,
        """
        import cloudpickle_rs
        for cut in range(1, len(data)):
            try:
                cloudpickle_rs.loads(data[:cut], allow=[])
            except (pickle.UnpicklingError, EOFError):
                pass
        print("ok")
        """,
        autoload=False,
    )
    assert out.strip() == "ok"


def test_file_errors_are_the_files():
    class Broken(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, buffer):
            raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        cloudpickle_rs.load(io.BufferedReader(Broken()), allow=[])


def test_inspect_cli_reports_the_loaders_refusals(tmp_path, tricks):
    payload, _ = tricks["REDUCE of a function shipped by value"]
    result = inspect_allow(payload, ["json"], tmp_path)
    assert result.returncode == 1
    reasons = [v["reason"] for v in json.loads(result.stdout)["violations"]]
    assert any("function shipped by value" in r for r in reasons), reasons
    text = run_python(["-m", "cloudpickle_rs", "inspect", str(tmp_path / "payload.pkl"), "--allow", "json"])
    out = text.stdout.decode()
    assert text.returncode == 1 and "NOT ALLOWED" in out and "shipped by value" in out
