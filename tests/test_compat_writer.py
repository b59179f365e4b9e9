"""``dumps(obj, compat=True)`` writes what upstream cloudpickle 3.x alone loads.

The receiver is a virtualenv of the running CPython holding only upstream
cloudpickle 3.1.2, not cloudpickle-rs (a client upgraded before its workers),
made once per test session. The sender is a fresh ``__main__`` script that
pickles with cloudpickle-rs while upstream cannot be imported there, so the
pickle must name upstream's reconstructors without the sender having them.
"""

import os
import pickle
import subprocess
import sys
import tempfile
import textwrap

import pytest
from test_upstream_compat import HIDE_UPSTREAM, isolated_header

from testutils import TIMEOUT, SubprocessFailure, run_python

UPSTREAM_VERSION = "3.1.2"


def _run(args, **kwargs):
    return subprocess.run(args, capture_output=True, timeout=TIMEOUT, **kwargs)


@pytest.fixture(scope="session")
def upstream_python(tmp_path_factory):
    """The python of a new virtualenv with only upstream cloudpickle installed."""
    venv = tmp_path_factory.mktemp("upstream_only") / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr.decode()
    python = str(venv / "bin" / "python")
    # This interpreter's pip installs into the new venv, from pip's cache when it can.
    installed = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "-q",
            "--disable-pip-version-check",
            f"cloudpickle=={UPSTREAM_VERSION}",
        ]
    )
    assert installed.returncode == 0, installed.stderr.decode()
    probe = _run(
        [
            python,
            "-c",
            "import cloudpickle, importlib.util; "
            "print(cloudpickle.__version__, importlib.util.find_spec('cloudpickle_rs'))",
        ],
        env=receiver_env(),
    )
    assert probe.stdout.decode().split() == [UPSTREAM_VERSION, "None"], probe.stderr.decode()
    return python


def receiver_env():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


SENDER_FOOTER = """

# --- appended by test_compat_writer ---
import cloudpickle_rs as _cloudpickle_rs
_payloads = [_cloudpickle_rs.dumps(_obj, compat={compat}) for _obj in {expr}]
assert "cloudpickle" not in sys.modules, "the sender imported upstream cloudpickle"
import pickle as _pickle
with open(sys.argv[1], "wb") as _file:
    _pickle.dump(_payloads, _file)
"""


def send(src, *, expr="[objs]", compat=True):
    """Runs ``src`` as a ``__main__`` script where upstream cloudpickle cannot be
    imported; returns ``[dumps(obj, compat=compat) for obj in <expr>]``."""
    script = HIDE_UPSTREAM + textwrap.dedent(src) + SENDER_FOOTER.format(expr=expr, compat=compat)
    with tempfile.TemporaryDirectory(prefix="cprs_compat_") as tmp:
        path = os.path.join(tmp, "sender_main.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(script)
        out = os.path.join(tmp, "payloads.pkl")
        result = run_python([path, out])
        if result.returncode != 0:
            raise SubprocessFailure("sender failed:\n" + result.stderr.decode(errors="replace"))
        with open(out, "rb") as f:
            return pickle.load(f)


RECEIVER_HEADER = """\
import pickle
import sys
import cloudpickle
assert cloudpickle.__version__ == {version!r}
payloads = pickle.load(sys.stdin.buffer)
"""


def upstream_run(python, payloads, check_src):
    """Runs ``check_src`` in the upstream-only interpreter; ``payloads`` (the
    pickles, not yet loaded) are bound to that name. Returns the result."""
    source = RECEIVER_HEADER.format(version=UPSTREAM_VERSION) + textwrap.dedent(check_src)
    with tempfile.TemporaryDirectory(prefix="cprs_cwd_") as empty:
        return _run(
            [python, "-c", source],
            input=pickle.dumps(payloads),
            env=receiver_env(),
            cwd=empty,
        )


def upstream_loads(python, payloads, check_src):
    """Loads every payload in the upstream-only interpreter (as ``objs``, or
    ``objs_list`` for all of them) and runs ``check_src``."""
    check = """
        objs_list = [pickle.loads(p) for p in payloads]
        objs = objs_list[0]
        assert "cloudpickle_rs" not in sys.modules
    """
    result = upstream_run(python, payloads, textwrap.dedent(check) + textwrap.dedent(check_src))
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace")
        raise SubprocessFailure("upstream receiver failed:\n" + stderr)
    return result.stdout.decode()


def roundtrip(python, sender_src, check_src, **send_options):
    return upstream_loads(python, send(sender_src, **send_options), check_src)


def test_lambdas_and_closures(upstream_python):
    roundtrip(
        upstream_python,
        """
        base = 10
        def make_counter(start):
            count = start
            def bump(step=1):
                nonlocal count
                count += step
                return count
            return bump
        def make_factorial():
            def fact(n):
                return 1 if n <= 1 else n * fact(n - 1)
            return fact
        def make_unbound():
            if False:
                late = None
            def read():
                return late
            return read
        def make_pair():
            shared = []
            def push(x):
                shared.append(x)
            def get():
                return list(shared)
            return push, get
        objs = {
            "lambda": lambda x, y=2: x * y + base,
            "counter": make_counter(5),
            "fact": make_factorial(),
            "unbound": make_unbound(),
            "pair": make_pair(),
        }
        """,
        """
        assert objs["lambda"](3) == 16 and objs["lambda"](3, y=1) == 13
        counter = objs["counter"]
        assert counter() == 6 and counter(4) == 10
        assert objs["fact"](5) == 120
        try:
            objs["unbound"]()
        except NameError:
            pass
        else:
            raise AssertionError("an empty cell should stay empty")
        push, get = objs["pair"]
        push(1)
        assert get() == [1], "both closures hold the same list"
        """,
    )


def test_function_attributes_and_shared_globals(upstream_python):
    roundtrip(
        upstream_python,
        """
        shared = 0
        def set_shared(value):
            global shared
            shared = value
        def get_shared():
            return shared
        def documented(a, b=3, *, scale: int = 10) -> int:
            '''Multiply (a + b) by scale.'''
            return (a + b) * scale
        documented.tag = "custom"
        objs = (documented, set_shared, get_shared)
        """,
        """
        documented, set_shared, get_shared = objs
        assert documented(1) == 40 and documented(1, 1, scale=2) == 4
        assert documented.__defaults__ == (3,)
        assert documented.__kwdefaults__ == {"scale": 10}
        assert documented.__annotations__ == {"scale": int, "return": int}
        assert documented.__doc__ == "Multiply (a + b) by scale."
        assert documented.tag == "custom"
        assert documented.__name__ == documented.__qualname__ == "documented"
        assert documented.__module__ == "__main__"
        assert get_shared() == 0
        set_shared(7)
        assert get_shared() == 7, "functions pickled together share their globals"
        """,
    )


def test_generator_functions_and_nested_names(upstream_python):
    roundtrip(
        upstream_python,
        """
        def outer():
            def countdown(n):
                while n > 0:
                    yield n
                    n -= 1
            return countdown
        objs = outer()
        """,
        """
        assert list(objs(3)) == [3, 2, 1]
        assert objs.__qualname__ == "outer.<locals>.countdown"
        """,
    )


def test_submodules_are_imported_on_load(upstream_python):
    roundtrip(
        upstream_python,
        """
        import xml.etree.ElementTree
        def root_child(text):
            return xml.etree.ElementTree.fromstring(text)[0].tag
        objs = root_child
        """,
        """
        assert objs("<a><b/></a>") == "b"
        """,
    )


def test_dynamic_class_with_methods_and_instances(upstream_python):
    roundtrip(
        upstream_python,
        """
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
        def make_square():
            class Square(Shape):
                '''A square.'''
                sides = 4
                def __repr__(self):
                    return f"Square({self.size})"
            return Square
        Square = make_square()
        objs = (Square, Square(5), Square(2).perimeter)
        """,
        """
        Square, square, method = objs
        assert type(square) is Square and square.perimeter() == 20
        assert Square(3).doubled == 6 and Square.unit().size == 1
        assert Square.describe() == "shape" and method() == 8
        assert Square.__doc__ == "A square." and repr(square) == "Square(5)"
        assert Square.__qualname__ == "make_square.<locals>.Square"
        assert [c.__name__ for c in Square.__mro__] == ["Square", "Shape", "object"]
        """,
    )


def test_abc_with_registered_subclass(upstream_python):
    roundtrip(
        upstream_python,
        """
        import abc
        class Plugin(abc.ABC):
            @abc.abstractmethod
            def run(self):
                pass
        class External:
            def run(self):
                return "external"
        Plugin.register(External)
        objs = (Plugin, External)
        """,
        """
        Plugin, External = objs
        assert issubclass(External, Plugin) and isinstance(External(), Plugin)
        try:
            Plugin()
        except TypeError:
            pass
        else:
            raise AssertionError("Plugin is abstract")
        """,
    )


def test_enum(upstream_python):
    roundtrip(
        upstream_python,
        """
        import enum
        class Color(enum.Enum):
            RED = 1
            GREEN = 2
            CRIMSON = 1
            def label(self):
                return self.name.lower()
        objs = (Color, Color.GREEN)
        """,
        """
        Color, green = objs
        assert [m.name for m in Color] == ["RED", "GREEN"]
        assert green is Color.GREEN and Color(1) is Color.RED
        assert Color.CRIMSON is Color.RED and Color.RED.label() == "red"
        """,
    )


def test_dataclass_and_named_tuple(upstream_python):
    roundtrip(
        upstream_python,
        """
        import dataclasses, typing
        @dataclasses.dataclass
        class Point:
            x: int
            y: int = 0
            tags: list = dataclasses.field(default_factory=list)
        class Pair(typing.NamedTuple):
            left: int
            right: str = "r"
        objs = (Point, Pair, Point(1, 2))
        """,
        """
        import dataclasses
        Point, Pair, point = objs
        assert [f.name for f in dataclasses.fields(Point)] == ["x", "y", "tags"]
        assert Point(1) == Point(1, 0, []) and point == Point(1, 2)
        assert repr(Point(3)) == "Point(x=3, y=0, tags=[])"
        assert Pair(1)._asdict() == {"left": 1, "right": "r"} and Pair._fields == ("left", "right")
        """,
    )


def test_type_variables_and_generic_classes(upstream_python):
    roundtrip(
        upstream_python,
        """
        import typing
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
        # Upstream has no reconstructor for these: they are made by calling their class.
        P = typing.ParamSpec("P") if hasattr(typing, "ParamSpec") else None
        objs = (T, K, V_co, Box, first, P)
        """,
        """
        T, K, V_co, Box, first, P = objs
        assert P is None or (type(P).__name__ == "ParamSpec" and P.__name__ == "P")
        assert T.__name__ == "T" and T.__bound__ is int
        assert K.__constraints__ == (str, bytes) and V_co.__covariant__
        assert Box.__parameters__ == (T,) and Box(3).get() == 3
        assert first([4]) == 4 and first.__annotations__["items"].__args__ == (T,)
        assert repr(Box[int]) == "__main__.Box[int]"
        """,
    )


def test_dynamic_module(upstream_python):
    roundtrip(
        upstream_python,
        """
        import types
        mod = types.ModuleType("made_at_run_time", "A dynamic module.")
        exec("FACTOR = 4\\ndef scale(x):\\n    return x * FACTOR\\n", mod.__dict__)
        mod.MOD = mod
        objs = mod
        """,
        """
        assert objs.__name__ == "made_at_run_time" and objs.__doc__ == "A dynamic module."
        assert objs.scale(3) == 12 and objs.MOD is objs
        assert "made_at_run_time" not in sys.modules
        """,
    )


def test_class_loaded_twice_is_one_class(upstream_python):
    roundtrip(
        upstream_python,
        """
        class Counter:
            def __init__(self):
                self.n = 0
        import enum, typing
        class Mode(enum.Enum):
            A = 1
        T = typing.TypeVar("T")
        objs = (Counter, Mode, T)
        """,
        """
        first, second = objs_list
        assert all(a is b for a, b in zip(first, second))
        """,
        expr="[objs, objs]",
    )


def test_other_objects_cloudpickle_handles(upstream_python):
    roundtrip(
        upstream_python,
        """
        import collections, logging, os, tempfile, types, weakref
        path = os.path.join(tempfile.mkdtemp(), "notes.txt")
        with open(path, "w") as f:
            f.write("line one\\nline two\\n")
        text_file = open(path)
        text_file.read(5)
        class Tiny:
            pass
        def make_cell():
            value = [1, 2]
            return (lambda: value).__closure__[0]
        class AppError(Exception):
            def __init__(self, code, detail):
                super().__init__(code)
                self.detail = detail
        objs = {
            "views": ({"a": 1}.keys(), {"a": 1}.values(), {"a": 1}.items(),
                      collections.OrderedDict(z=1).keys()),
            "proxy": types.MappingProxyType({"k": 1}),
            "getset": types.FunctionType.__dict__["__code__"],
            "type_dict": type.__dict__["__dict__"],
            "logger": logging.getLogger("compat.logger"),
            "weak": (Tiny, weakref.WeakSet([Tiny])),
            "file": text_file,
            "cell": make_cell(),
            "code": make_cell.__code__,
            "types": (types.CellType, types.CodeType, types.FunctionType, types.MethodType),
            "error": ValueError("bad", 3),
            "app_error": AppError(404, "missing"),
        }
        """,
        """
        import logging
        keys, values, items, okeys = objs["views"]
        assert list(keys) == ["a"] and list(values) == [1] and list(items) == [("a", 1)]
        assert type(okeys).__name__ == "odict_keys" and list(okeys) == ["z"]
        assert type(objs["proxy"]).__name__ == "mappingproxy" and objs["proxy"]["k"] == 1
        assert objs["getset"].__name__ == "__code__"
        assert type(objs["type_dict"]).__name__ == "getset_descriptor"
        assert objs["logger"] is logging.getLogger("compat.logger")
        Tiny, weak = objs["weak"]
        assert Tiny in weak
        assert objs["file"].read() == "one\\nline two\\n"
        assert objs["cell"].cell_contents == [1, 2]
        assert objs["code"].co_name == "make_cell"
        assert [t.__name__ for t in objs["types"]] == ["cell", "code", "function", "method"]
        assert objs["error"].args == ("bad", 3)
        app_error = objs["app_error"]
        assert app_error.args == (404,) and app_error.detail == "missing"
        assert isinstance(app_error, Exception) and type(app_error).__name__ == "AppError"
        """,
    )


def test_cell_holding_itself(upstream_python):
    roundtrip(
        upstream_python,
        """
        def make():
            box = []
            def get():
                return box
            return get
        get = make()
        cell = get.__closure__[0]
        get()[:] = [cell]
        objs = get
        """,
        """
        box = objs()
        assert box[0].cell_contents is box
        """,
    )


def test_pickler_compat_option_and_compat_pickler_subclasses(upstream_python):
    payloads = send(
        """
        import io
        import cloudpickle_rs

        class Sub(cloudpickle_rs.CompatPickler):
            pass

        class Plain(cloudpickle_rs.Pickler):
            pass

        makers = [
            lambda f: cloudpickle_rs.Pickler(f, compat=True),
            lambda f: cloudpickle_rs.CloudPickler(f, 4, compat=True),
            Sub,
            lambda f: Sub(f, compat=True),
        ]
        written = []
        for make in makers:
            buf = io.BytesIO()
            pickler = make(buf)
            assert isinstance(pickler, cloudpickle_rs.CompatPickler), type(pickler)
            pickler.dump(lambda x: x * 3)
            written.append(buf.getvalue())
        try:
            Plain(io.BytesIO(), compat=True)
        except TypeError as e:
            assert "CompatPickler" in str(e), e
        else:
            raise AssertionError("a plain Pickler subclass cannot write compat pickles")
        assert type(cloudpickle_rs.Pickler(io.BytesIO(), compat=False)) is cloudpickle_rs.Pickler
        objs = written
        """
    )
    upstream_loads(
        upstream_python,
        payloads,
        """
        assert [pickle.loads(p)(2) for p in objs] == [6, 6, 6, 6]
        """,
    )


def test_without_compat_upstream_cannot_load_it(upstream_python):
    payloads = send("objs = lambda x: x + 1", compat=False)
    result = upstream_run(upstream_python, payloads, "pickle.loads(payloads[0])")
    assert result.returncode != 0
    assert b"No module named 'cloudpickle_rs'" in result.stderr


def test_compat_pickles_also_load_with_cloudpickle_rs_installed_as_cloudpickle():
    # A mixed fleet: a worker that already runs cloudpickle-rs (install()
    # serving the cloudpickle names) and has no upstream loads them too.
    payloads = send(
        """
        import enum
        base = 5
        class Color(enum.Enum):
            RED = 1
        def make():
            def fact(n):
                return 1 if n <= 1 else n * fact(n - 1)
            return fact
        objs = (lambda x: x + base, make(), Color.RED)
        """
    )
    check = textwrap.dedent(
        """
        import pickle
        add, fact, red = pickle.loads(sys.stdin.buffer.read())
        assert add(1) == 6 and fact(5) == 120 and red.name == "RED"
        assert not any(
            name.split(".")[0] == "cloudpickle"
            and not getattr(module, "__name__", "").startswith("cloudpickle_rs")
            and not getattr(module, "__cloudpickle_rs__", False)
            for name, module in sys.modules.items()
        )
        """
    )
    source = isolated_header() + check
    result = run_python(["-c", source], input=payloads[0])
    assert result.returncode == 0, result.stderr.decode(errors="replace")


@pytest.mark.skipif(sys.version_info < (3, 14), reason="deferred annotations (PEP 649) are new in 3.14")
def test_lazy_annotations_and_an_annotated_abc(upstream_python):
    roundtrip(
        upstream_python,
        """
        import abc

        def f(x: int) -> Missing:
            return x

        class Shape(abc.ABC):
            sides: int

            @abc.abstractmethod
            def area(self, scale: float) -> "Shape": ...

        objs = (f, Shape)
        """,
        """
        import annotationlib
        f, Shape = objs
        forward = annotationlib.get_annotations(f, format=annotationlib.Format.FORWARDREF)
        assert forward["x"] is int and isinstance(forward["return"], annotationlib.ForwardRef)
        f.__globals__["Missing"] = str
        assert f.__annotations__ == {"x": int, "return": str}
        assert Shape.__annotations__ == {"sides": int}
        assert Shape.area.__annotations__ == {"scale": float, "return": "Shape"}
        assert f(2) == 2
        """,
    )
