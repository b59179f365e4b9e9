"""Pickles that do not change under a round trip: ``dumps(loads(dumps(x)))``
equals ``dumps(x)`` in the process that made ``x`` and in one that loaded it.

Dask's tokenizer relies on it (it dumps an object, loads it, and dumps it
again until two results agree), and so does any cache keyed by pickle bytes.
What can break it: the pickler shares a memo entry between two uses of one
object, and which strings are one object differs between the process that
compiled the code (where a name and an equal string of data are often one
interned object) and one that loaded it.
"""

import textwrap

import pytest

from testutils import run_script, send_and_receive

LOCAL_SUBCLASS = """
        def make():
            class Base:
                def __init__(self, x):
                    self.x = x

            class Child(Base):
                def get(self):
                    return self.x

            return Child
"""

CASES = {
    "instance of a local subclass of a local class": LOCAL_SUBCLASS
    + """
        objs = make()(3)
        """,
    "class whose attribute value is one of its names": """
        class Cfg:
            arg_1 = "join"
            mode = "fast"

            def join(self, arg_1, mode="fast"):
                return "-".join([arg_1, mode, self.mode])

        objs = (Cfg, Cfg())
        """,
    "closure, function defaults and globals that are names": """
        sep = "join"

        def make(kind="split"):
            def task(text, how="join"):
                return getattr(text, kind)(), how, sep

            return task

        objs = make()
        """,
    "classes with slots, generics, docstrings, dataclasses and an instance": """
        import dataclasses, enum, typing

        T = typing.TypeVar("T")

        class Slotted:
            "doc"
            zeta = 1
            __slots__ = ("b", "a")
            alpha = 2

        class Box(typing.Generic[T]):
            zeta: int = 0
            def get(self) -> T:
                return self.zeta

        @dataclasses.dataclass(frozen=True)
        class Point:
            y: int
            x: int = 0

        class Mode(enum.Enum):
            "modes"
            slow = 2
            fast = 1

        objs = (Slotted, Box, Box[int], Point, Point(1, 2), Mode.fast)
        """,
    "a typing.NamedTuple class and an instance": """
        import typing

        class Pair(typing.NamedTuple):
            a: int
            b: str = "x"

            def swap(self):
                return Pair(self.b, self.a)

        objs = (Pair, Pair(1, "y"))
        """,
    "functions and classes sharing strings with data": """
        import enum

        class Color(enum.Enum):
            red = "red"
            blue = "blue"

        def paint(color="red", names=("red", "blue")):
            return Color(color).name in names

        table = {"red": paint, "paint": "red"}
        objs = (table, Color.blue)
        """,
    "functions whose code objects are equal but distinct": """
        LIMIT = 0.5

        # exec'd twice: equal code objects, not one object, as a receiver
        # that makes code once per content would have them.
        source = "def f(x, k=0):\\n    return [lambda: x + k + LIMIT]\\n"
        made = []
        for k in range(2):
            namespace = dict(globals())
            exec(source, namespace)
            made.append(namespace["f"])
        objs = (made, [eval(f"lambda x, k={i}: x + k + LIMIT") for i in range(3)], made[0].__code__)
        """,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_bytes_after_a_round_trip_in_the_process_that_made_them(case):
    out = run_script(
        textwrap.dedent(CASES[case])
        + textwrap.dedent(
            """
            import pickle
            import cloudpickle_rs

            first = cloudpickle_rs.dumps(objs)
            second = cloudpickle_rs.dumps(pickle.loads(first))
            third = cloudpickle_rs.dumps(pickle.loads(second))
            assert first == second == third, (len(first), len(second), len(third))
            assert cloudpickle_rs.dumps(objs) == first
            print("stable")
            """
        )
    )
    assert out.split() == ["stable"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_bytes_when_a_process_that_loaded_them_pickles_them(case):
    out = send_and_receive(
        CASES[case],
        """
        import cloudpickle_rs
        again = cloudpickle_rs.dumps(objs)
        assert again == data, (len(again), len(data))
        assert cloudpickle_rs.dumps(pickle.loads(again)) == data
        print("stable")
        """,
    )
    assert out.split() == ["stable"]


def test_dask_tokenizes_instances_of_a_local_subclass_deterministically():
    # dask.base.tokenize pickles objects of __main__ with cloudpickle, here
    # served by cloudpickle-rs, and refuses results that do not agree.
    out = run_script(
        """
        import cloudpickle_rs
        cloudpickle_rs.install()
        import dask
        from dask.base import tokenize
        """
        + LOCAL_SUBCLASS
        + """
        Child = make()
        with dask.config.set({"tokenize.ensure-deterministic": True}):
            first = tokenize(Child(3))
            assert tokenize(Child(3)) == first
            assert tokenize(Child(4)) != first
        print("deterministic")
        """
    )
    assert out.split() == ["deterministic"]


def test_same_bytes_for_instances_of_a_local_class_of_an_importable_module(tmp_path):
    # The class goes by value (the module cannot give it by name); its
    # instances' state names must be written as for a class of __main__.
    (tmp_path / "shapes_lib.py").write_text(
        textwrap.dedent(
            """
            import dataclasses

            def make():
                @dataclasses.dataclass(frozen=True)
                class Point:
                    y: int
                    x: int = 0
                    label: str = "x"

                return Point
            """
        )
    )
    out = send_and_receive(
        """
        import shapes_lib
        Point = shapes_lib.make()
        objs = (Point(1, 2), Point(3))
        """,
        """
        import cloudpickle_rs
        assert "shapes_lib" not in sys.modules
        again = cloudpickle_rs.dumps(objs)
        assert again == data, (len(again), len(data))
        print(objs[0].y, objs[1].label)
        """,
        sender_sys_path=[str(tmp_path)],
    )
    assert out.split() == ["1", "x"]
