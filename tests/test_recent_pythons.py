"""What CPython 3.14 and 3.15 changed, round-tripped into fresh interpreters.

* 3.14, PEP 649/749: annotations are computed on first use by an
  ``__annotate__`` function (``__annotate_func__`` and ``__annotations_cache__``
  in a class's dict); ``functools.update_wrapper`` copies ``__annotate__``.
* 3.14: ``multiprocessing`` starts workers with ``forkserver`` by default.
* 3.15, PEP 814: ``frozendict``, which CPython itself now hands out (e.g.
  ``opcode.opmap``).
* 3.15, PEP 810: ``lazy import``: a module's namespace holds a proxy until the
  name is first used.

Tests of a feature that older versions do not have are skipped there; the
rest run on every version.
"""

import sys
import textwrap

import pytest

from testutils import run_python, run_script, run_sender, send_and_receive, subprocess_loads

PY314 = sys.version_info >= (3, 14)
PY315 = sys.version_info >= (3, 15)
needs_314 = pytest.mark.skipif(not PY314, reason="deferred annotations (PEP 649) are new in 3.14")
needs_315 = pytest.mark.skipif(not PY315, reason="new in CPython 3.15")


# --------------------------------------------------------------------------
# Deferred annotations (3.14).


@needs_314
def test_lazy_function_annotations_stay_lazy_and_forward_references_resolve_later():
    out = send_and_receive(
        """
        def f(x: int, y: "Quoted") -> Missing:
            return x + y

        def g(a: list[int]) -> None:
            pass

        g.__annotations__  # computed once: both forms are stored now
        objs = (f, g)
        """,
        """
        import annotationlib
        f, g = objs
        forward = annotationlib.get_annotations(f, format=annotationlib.Format.FORWARDREF)
        assert forward["x"] is int and forward["y"] == "Quoted", forward
        assert isinstance(forward["return"], annotationlib.ForwardRef), forward
        try:
            f.__annotations__
        except NameError:
            pass
        else:
            raise AssertionError("Missing does not exist yet")
        f.__globals__["Missing"] = str  # the forward reference resolves once it exists
        assert f.__annotations__ == {"x": int, "y": "Quoted", "return": str}
        assert g.__annotate__ is not None
        assert g.__annotations__ == {"a": list[int], "return": None}
        print(f(3, 4))
        """,
    )
    assert out.split() == ["7"]


@needs_314
def test_dumps_does_not_evaluate_annotations():
    out = run_script(
        """
        import cloudpickle_rs

        calls = []

        def note(value):
            calls.append(value)
            return value

        def f(x: note("evaluated")) -> None:
            pass

        cloudpickle_rs.dumps(f)
        assert calls == [], calls
        print("lazy")
        """
    )
    assert out.split() == ["lazy"]


@needs_314
def test_lazy_class_annotations_survive():
    # Upstream cloudpickle 3.1.2 leaves __annotate_func__ out: unless the
    # sender had read them, the receiver's class has no annotations at all.
    out = send_and_receive(
        """
        import abc

        class Model(abc.ABC):
            Width = int
            a: int
            b: Width
            c: "Quoted"
            d: Later
            e: Undefined

            @abc.abstractmethod
            def area(self, scale: Width) -> "Model": ...

        class Later:
            pass

        class Square(Model):
            def area(self, scale: int) -> int:
                return scale * scale

        objs = (Model, Square)
        """,
        """
        import annotationlib
        Model, Square = objs
        forward = annotationlib.get_annotations(Model, format=annotationlib.Format.FORWARDREF)
        assert forward["a"] is int and forward["b"] is int and forward["c"] == "Quoted"
        assert forward["d"].__name__ == "Later" and forward["d"].__module__ == "__main__"
        assert isinstance(forward["e"], annotationlib.ForwardRef), forward
        Model.__annotate__.__globals__["Undefined"] = bytes
        assert Model.__annotations__["e"] is bytes
        assert Model.area.__annotations__ == {"scale": int, "return": "Model"}
        assert Square().area(3) == 9 and issubclass(Square, Model)
        try:
            Model()
        except TypeError:
            print("abstract")
        """,
    )
    assert out.split() == ["abstract"]


def test_abc_with_annotations_and_methods_wrapped_with_update_wrapper():
    # 3.14's update_wrapper copies __annotate__, which for a method closes
    # over the class namespace (with the unpicklable _abc_impl in it).
    out = send_and_receive(
        """
        import abc
        import functools

        def logged(func):
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                return ("logged", func(*args, **kwargs))
            return wrapper

        class Shape(abc.ABC):
            sides: int = 0

            @abc.abstractmethod
            def area(self) -> float: ...

        class Square(Shape):
            sides = 4

            def __init__(self, size: float):
                self.size = size

            @logged
            def area(self) -> float:
                return self.size * self.size

        class Wrapper:
            # A callable object made to look like the function it wraps.
            def __init__(self, function):
                self.function = function
                functools.update_wrapper(self, function)

            def __call__(self, *args):
                return self.function(*args)

        def scale(x: float, factor: float = 2.0) -> float:
            return x * factor

        objs = (Shape, Square(3.0), Wrapper(scale))
        """,
        """
        Shape, square, wrapped = objs
        assert square.area() == ("logged", 9.0)
        assert isinstance(square, Shape) and square.sides == 4
        assert type(square).area.__wrapped__.__annotations__ == {"return": float}
        assert Shape.__annotations__ == {"sides": int}
        assert wrapped(5.0) == 10.0 and wrapped.__name__ == "scale"
        # update_wrapper copies __annotate__ from 3.14, __annotations__ before.
        copied = wrapped.__annotate__(1) if hasattr(wrapped, "__annotate__") else wrapped.__annotations__
        assert copied == {"x": float, "factor": float, "return": float}
        print("ok")
        """,
    )
    assert out.split() == ["ok"]


def test_wrapper_of_an_importable_function_keeps_it_by_reference(tmp_path):
    # The copied __annotate__ belongs to an importable function: it goes by
    # reference with it (cloudpickle issue 585, CPython issue 143067).
    (tmp_path / "helper_module.py").write_text(
        textwrap.dedent(
            """
            import functools

            class FuncWrapper:
                def __init__(self, function):
                    self.function = function
                    functools.update_wrapper(self, function)

                def __call__(self, *args):
                    return self.function(*args)

            def some_function(x: str) -> str:
                return x + "!"
            """
        )
    )
    payload = run_sender(
        """
        import helper_module
        objs = helper_module.FuncWrapper(helper_module.some_function)
        """,
        sys_path=[tmp_path],
    )
    out = subprocess_loads(
        payload,
        """
        import helper_module
        assert objs.function is helper_module.some_function
        if hasattr(objs, "__annotate__"):  # copied by update_wrapper from 3.14
            assert objs.__annotate__ is helper_module.some_function.__annotate__
        else:
            assert objs.__annotations__ == {"x": str, "return": str}
        print(objs("hi"))
        """,
        sys_path=[tmp_path],
    )
    assert out.split() == ["hi!"]


# --------------------------------------------------------------------------
# multiprocessing's forkserver (the default on Linux from 3.14).

FORKSERVER_SCRIPT = """
import concurrent.futures
import multiprocessing
import sys

import cloudpickle_rs

cloudpickle_rs.install()


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm1(self):
        return abs(self.x) + abs(self.y)


def make_adder(n):
    return lambda x: x + n


if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1] or None)
    factor = 7
    with ctx.Pool(2) as pool:
        assert pool.map(lambda v: v * factor, range(6)) == [0, 7, 14, 21, 28, 35]
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        assert executor.submit(lambda p: p.norm1() * 10, Point(2, -3)).result() == 50
        # The workers send back what only cloudpickle-rs pickles.
        adder = executor.submit(make_adder, 5).result()
        assert adder(1) == 6
        assert executor.submit(lambda: Point(1, 2)).result().norm1() == 3
    print(ctx.get_start_method())
"""


@pytest.mark.parametrize("method", ["forkserver", ""], ids=["forkserver", "default"])
def test_install_serves_forkserver_workers_as_spawn_workers(tmp_path, method):
    # A script file: the workers import it as __mp_main__ (so install()
    # runs there too) but have none of the functions made in its main block.
    script = tmp_path / "job.py"
    script.write_text(FORKSERVER_SCRIPT)
    result = run_python([str(script), method])
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    expected = method or ("forkserver" if PY314 else "fork")
    assert result.stdout.decode().split() == [expected]


# --------------------------------------------------------------------------
# frozendict (3.15).


@needs_315
def test_frozendicts_in_user_data_round_trip_deterministically():
    out = send_and_receive(
        """
        import cloudpickle_rs

        limits = frozendict(low=1, high=frozendict(soft=5, hard=9))

        def within(x, bounds=limits):
            return bounds["low"] <= x <= bounds["high"]["hard"]

        class Config:
            defaults = frozendict(mode="fast", check=lambda v: v > 0)

        objs = (within, Config, frozendict(f=lambda: 42))
        assert cloudpickle_rs.dumps(objs) == cloudpickle_rs.dumps(objs)
        """,
        """
        within, Config, table = objs
        assert within(3) and not within(10)
        assert type(within.__defaults__[0]) is frozendict
        assert type(within.__defaults__[0]["high"]) is frozendict
        assert Config.defaults["mode"] == "fast" and Config.defaults["check"](1)
        assert type(table) is frozendict and table["f"]() == 42
        print("ok")
        """,
    )
    assert out.split() == ["ok"]


# --------------------------------------------------------------------------
# Lazy imports (3.15).

LAZY_SENDER = """
lazy import json
lazy from xml.etree import ElementTree as ET
lazy from os.path import join

import types
assert type(globals()["json"]) is types.LazyImportType, type(globals()["json"])

def task(text):
    return json.dumps([text]), join("a", text), ET.fromstring("<r><c/></r>")[0].tag

objs = task
"""


@needs_315
def test_lazily_imported_globals_are_resolved_as_the_function_sees_them():
    out = send_and_receive(
        LAZY_SENDER,
        """
        print(*objs("b"))
        """,
    )
    assert out.split() == ['["b"]', "a/b", "c"]


@needs_315
def test_lazy_imports_in_a_module_registered_by_value(tmp_path):
    (tmp_path / "lazy_helpers.py").write_text(textwrap.dedent(LAZY_SENDER))
    payload = run_sender(
        """
        import cloudpickle_rs
        import lazy_helpers
        cloudpickle_rs.register_pickle_by_value(lazy_helpers)
        objs = (lazy_helpers.task, lazy_helpers)
        """,
        sys_path=[tmp_path],
    )
    out = subprocess_loads(
        payload,
        """
        task, module = objs
        print(*task("b"), module.json.dumps(1))
        """,
    )
    assert out.split() == ['["b"]', "a/b", "c", "1"]
