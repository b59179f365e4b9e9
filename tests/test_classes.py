"""Classes by value and the other types cloudpickle handles (issue 3).

Each test runs a SENDER script as ``__main__`` in a fresh interpreter, which
pickles objects with cloudpickle_rs, and a RECEIVER fresh interpreter that
lacks the sender's code, loads them with plain ``pickle`` and asserts.
"""

import pickle
import sys

import pytest

from testutils import reconstructors_called, run_script, run_sender, send_and_receive, subprocess_loads


def roundtrip(sender, receiver):
    """Pickles `objs` in a __main__ sender; runs `receiver` where they load."""
    send_and_receive(sender, receiver)


def test_class_of_main_by_value_with_its_methods():
    roundtrip(
        """
        class Point:
            '''A point.'''
            dims = 2
            def __init__(self, x, y):
                self.x, self.y = x, y
            def norm2(self):
                return self.x ** 2 + self.y ** 2
            @classmethod
            def origin(cls):
                return cls(0, 0)
            @staticmethod
            def kind():
                return "point"
            @property
            def swapped(self):
                return Point(self.y, self.x)
            def __repr__(self):
                return f"Point({self.x}, {self.y})"
        objs = (Point, Point(3, 4))
        """,
        """
        assert "Point" not in vars(sys.modules["__main__"])
        Point, p = objs
        assert type(p) is Point and p.norm2() == 25
        assert Point.origin().norm2() == 0 and Point.kind() == "point"
        assert repr(p.swapped) == "Point(4, 3)"
        assert Point.__doc__ == "A point." and Point.dims == 2 and Point.__module__ == "__main__"
        """,
    )


def test_local_class_and_class_of_dynamic_module():
    roundtrip(
        """
        import types
        def factory(k):
            class Local:
                def get(self):
                    return k
            return Local
        mod = types.ModuleType("dynmod")
        exec("class InMod:\\n    def hello(self):\\n        return 'hi'\\n", mod.__dict__)
        objs = (factory(7)(), mod.InMod())
        """,
        """
        local, in_mod = objs
        assert local.get() == 7 and type(local).__qualname__ == "factory.<locals>.Local"
        assert in_mod.hello() == "hi" and type(in_mod).__module__ == "dynmod"
        """,
    )


def test_class_of_module_registered_by_value(tmp_path):
    package = tmp_path / "regpkg"
    package.mkdir()
    (package / "__init__.py").write_text("class Shape:\n    def sides(self):\n        return 4\n")
    sender = f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import regpkg, cloudpickle_rs
        cloudpickle_rs.register_pickle_by_value(regpkg)
        objs = regpkg.Shape()
        """
    assert "regpkg" not in subprocess_loads(run_sender(sender), "assert objs.sides() == 4\nprint(sorted(sys.modules))")


def test_inheritance_super_and_nested_class_qualname():
    roundtrip(
        """
        class Base:
            def who(self):
                return "base"
        class Child(Base):
            def who(self):
                return "child>" + super().who()
            class Inner:
                class Deeper:
                    pass
        objs = (Child(), Child.Inner, Child.Inner.Deeper)
        """,
        """
        child, inner, deeper = objs
        assert child.who() == "child>base"
        assert inner.__qualname__ == "Child.Inner"
        assert deeper.__qualname__ == "Child.Inner.Deeper"
        """,
    )


def test_class_is_written_once_for_many_instances():
    sender = """
        class Rec:
            def __init__(self, i):
                self.i = i
        objs = [Rec(i) for i in range(N)]
        """
    one = run_sender(sender.replace("N", "1"))
    many = run_sender(sender.replace("N", "2001"))
    # Each further instance costs its own state (~10 bytes), never the class again.
    assert (len(many) - len(one)) / 2000 < 16
    subprocess_loads(many, "assert len({type(r) for r in objs}) == 1 and objs[2000].i == 2000")


def test_identity_two_pickles_of_one_class_load_as_one_class():
    payload = run_sender("class Thing:\n    pass\nobjs = (Thing, Thing())")
    receiver = """
        import pickle, sys, threading
        data = sys.stdin.buffer.read()
        # Eight threads race to load the class first, then the main thread
        # loads it twice more: all must agree on one class object.
        results = []
        start = threading.Barrier(8)
        def load():
            start.wait()
            for _ in range(50):
                results.append(pickle.loads(data)[0])
        threads = [threading.Thread(target=load) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        first = pickle.loads(data)
        second = pickle.loads(data)
        assert first[0] is second[0] and isinstance(second[1], first[0])
        assert len(results) == 400 and all(r is first[0] for r in results)
        print("ok")
        """
    assert run_script(receiver, input=payload).strip() == "ok"


def test_distinct_live_classes_with_one_definition_stay_distinct():
    roundtrip(
        """
        def make():
            class Twin:
                pass
            return Twin
        A, B = make(), make()
        objs = (A, B, A(), B())
        """,
        """
        A, B, a, b = objs
        assert A is not B and type(a) is A and type(b) is B
        """,
    )


LONG_LIVED_WORKER = """
    import pickle, sys
    loaded = [pickle.loads(payload) for payload in pickle.load(sys.stdin.buffer)]
    print(*[cls().get() for cls in loaded])
    print(len({id(cls) for cls in loaded}))
"""


@pytest.mark.parametrize(
    "variant",
    [
        "    threshold = [{value}]\n    def get(self):\n        return self.threshold[0]\n",
        "    def get(self, threshold={value}):\n        return threshold\n",
        "    def get(self):\n        return THRESHOLD\n",
        "    def get(self):\n        return pick()\n",
    ],
    ids=["list attribute", "method default", "global of a method", "function a method calls"],
)
def test_classes_that_differ_in_any_pickled_value_stay_apart_in_one_worker(variant, tmp_path):
    # Two senders whose Cfg differs in one value a digest of the code alone
    # cannot see; one long-lived worker loads both, then both again. (One
    # script path for every run: `__file__` is part of what is pickled.)
    def sender(value):
        return (
            f"THRESHOLD = {value}\n"
            f"def pick():\n    return THRESHOLD\n"
            f"class Cfg:\n{variant.format(value=value)}"
            "objs = Cfg\n"
        )

    payloads = [run_sender(sender(v), script_dir=str(tmp_path)) for v in (0.5, 0.9, 0.5, 0.9)]
    assert payloads[0] == payloads[2] and payloads[1] == payloads[3]
    out = run_script(LONG_LIVED_WORKER, input=pickle.dumps(payloads)).split()
    assert out == ["0.5", "0.9", "0.5", "0.9", "2"]


def test_classes_referring_to_each_other_are_tracked():
    # A cycle of definitions cannot be described from its own bytes: each
    # class gets an id of its own process; it still loads as one class.
    payload = run_sender(
        """
        class Node:
            def child(self):
                return Leaf()
        class Leaf:
            def parent(self):
                return Node()
        objs = (Node, Leaf, Node, Node().child())
        """
    )
    out = run_script(
        """
        import pickle, sys
        data = sys.stdin.buffer.read()
        Node, Leaf, again, leaf = pickle.loads(data)
        assert again is Node and type(leaf) is Leaf
        assert isinstance(Node().child(), Leaf) and isinstance(Leaf().parent(), Node)
        assert pickle.loads(data)[0] is Node
        print("ok")
        """,
        input=payload,
    )
    assert out.split() == ["ok"]


def test_enums_with_aliases_methods_and_flags():
    roundtrip(
        """
        import enum
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
        class Mode(enum.IntFlag):
            X = 1
            Y = 2
        objs = (Color, Color.BLUE, Level.HIGH, Perm.R | Perm.W, Mode.X | Mode.Y, Color.RED)
        """,
        """
        Color, blue, high, rw, xy, red = objs
        assert blue is Color.BLUE and red is Color.RED and Color.CRIMSON is Color.RED
        assert [m.name for m in Color] == ["RED", "BLUE"] and blue.lower() == "blue"
        assert high == 2 and high > 1 and type(high).__name__ == "Level"
        assert type(rw).R in rw and type(rw).W in rw
        assert int(xy) == 3
        """,
    )


def test_abc_stays_abstract_and_keeps_virtual_subclasses():
    roundtrip(
        """
        import abc
        class Shape(abc.ABC):
            @abc.abstractmethod
            def area(self): ...
            @property
            @abc.abstractmethod
            def name(self): ...
        class Square(Shape):
            def area(self):
                return 4
            name = "square"
        class Virtual:
            pass
        Shape.register(Virtual)
        objs = (Shape, Square, Virtual)
        """,
        """
        Shape, Square, Virtual = objs
        try:
            Shape()
        except TypeError:
            pass
        else:
            raise AssertionError("abstract class instantiated")
        assert Shape.__abstractmethods__ == frozenset({"area", "name"})
        assert Square().area() == 4 and issubclass(Square, Shape)
        assert issubclass(Virtual, Shape) and isinstance(Virtual(), Shape)
        """,
    )


def test_dataclasses_fields_and_sentinels_are_the_receivers():
    roundtrip(
        """
        import dataclasses, typing
        @dataclasses.dataclass(frozen=True)
        class Frozen:
            a: int
            tags: list = dataclasses.field(default_factory=list)
            limit: typing.ClassVar[int] = 3
        objs = (Frozen, Frozen(1), dataclasses.MISSING, dataclasses.fields(Frozen)[0].default)
        """,
        """
        import dataclasses
        Frozen, f, missing, default = objs
        assert missing is dataclasses.MISSING and default is dataclasses.MISSING
        assert [x.name for x in dataclasses.fields(Frozen)] == ["a", "tags"]
        assert Frozen(2).tags == [] and f == Frozen(1)
        try:
            f.a = 5
        except dataclasses.FrozenInstanceError:
            pass
        else:
            raise AssertionError("frozen dataclass mutated")
        """,
    )


def test_namedtuples():
    roundtrip(
        """
        import collections, typing
        class Pair(typing.NamedTuple):
            a: int
            b: str = "z"
            def twice(self):
                return self.a * 2
        Pt = collections.namedtuple("Pt", "x y")
        objs = (Pair(2), Pair, Pt(1, 2), Pt)
        """,
        """
        pair, Pair, pt, Pt = objs
        assert pair == (2, "z") and pair.twice() == 4 and Pair._fields == ("a", "b")
        assert Pair(5).b == "z" and pt.y == 2 and Pt(3, 4).x == 3
        """,
    )


def test_typing_constructs():
    roundtrip(
        """
        import typing
        T = typing.TypeVar("T", bound=int)
        # ParamSpec is 3.10+; on 3.9 the Callable takes a plain argument list.
        P = typing.ParamSpec("P") if hasattr(typing, "ParamSpec") else None
        class Box(typing.Generic[T]):
            def __init__(self, v: T):
                self.v = v
        objs = (T, Box, Box[int], Box(3), typing.Literal["a", "b"], typing.Union[int, Box],
                typing.Optional[Box], typing.ClassVar[int], typing.Final[int],
                typing.Annotated[int, "meta"], typing.Callable[P if P else [int], T], P)
        """,
        """
        import typing
        T, Box, BoxInt, box, lit, union, opt, cv, final, ann, call, P = objs
        assert T.__bound__ is int and Box.__parameters__ == (T,)
        assert typing.get_args(BoxInt) == (int,) and typing.get_origin(BoxInt) is Box
        assert box.v == 3 and typing.get_args(lit) == ("a", "b")
        assert typing.get_args(union) == (int, Box) and typing.get_args(opt) == (Box, type(None))
        assert typing.get_args(ann) == (int, "meta")
        assert typing.get_args(call)[0] is P if P else typing.get_args(call)[0] == [int]
        second = pickle.loads(pickle.dumps(objs))  # stdlib round trip keeps working too
        """,
    )


def test_typevar_tracked_identity():
    payload = run_sender("import typing\nobjs = typing.TypeVar('U')")
    run_script(
        """
        import pickle, sys
        data = sys.stdin.buffer.read()
        assert pickle.loads(data) is pickle.loads(data)
        """,
        input=payload,
    )


def test_class_attributes_keep_their_definition_order():
    # Upstream sorts them; vars(C) is what the class statement wrote.
    script = """
        import dataclasses

        class Settings:
            "Doc."
            zeta = 1
            alpha = 2
            def middle(self):
                return "m"
            beta = property(lambda self: 3)

        @dataclasses.dataclass
        class Row:
            zz: int = 0
            aa: str = ""

        print([k for k in vars(Settings) if not k.startswith("__")],
              [k for k in vars(Row) if not k.startswith("__")], list(Row.__dataclass_fields__))
        objs = (Settings, Row)
    """
    sender = run_script(script)
    received = send_and_receive(
        script,
        """
        Settings, Row = objs
        print([k for k in vars(Settings) if not k.startswith("__")],
              [k for k in vars(Row) if not k.startswith("__")], list(Row.__dataclass_fields__))
        """,
    )
    assert sender.startswith("['zeta', 'alpha', 'middle', 'beta'] ['zz', 'aa']")
    assert received == sender


def test_typevars_echoed_back_by_a_worker_are_the_senders_own():
    # upstream's test_pickle_dynamic_typevar_tracking, with the TypeVar made
    # in a function (by value though its module is importable) and beside a
    # module-level TypeVar of the same name.
    out = run_script(
        """
        import pickle, subprocess, sys, typing
        import cloudpickle_rs

        T = typing.TypeVar("T")

        def make():
            return typing.TypeVar("T", bound=int)

        def echo(obj):
            worker = (
                "import pickle, sys, cloudpickle_rs\\n"
                "obj = pickle.loads(sys.stdin.buffer.read())\\n"
                "sys.stdout.buffer.write(cloudpickle_rs.dumps(obj))\\n"
            )
            done = subprocess.run([sys.executable, "-c", worker], input=cloudpickle_rs.dumps(obj),
                                  capture_output=True, check=True)
            return pickle.loads(done.stdout)

        local = make()
        print(echo(local) is local, echo(T) is T, echo((T, local)) == (T, local))
        print(echo(typing.Generic[local]).__parameters__[0] is local)
        """
    )
    assert out.split() == ["True"] * 4


def test_exceptions_and_metaclass_call():
    roundtrip(
        """
        class AppError(Exception):
            pass
        class Meta(type):
            def __call__(cls, *args, **kwargs):
                obj = super().__call__(*args, **kwargs)
                obj.made_by_meta = True
                return obj
        class Managed(metaclass=Meta):
            pass
        objs = (AppError("boom"), AppError, Managed)
        """,
        """
        err, AppError, Managed = objs
        assert isinstance(err, AppError) and err.args == ("boom",)
        assert Managed().made_by_meta and type(Managed).__name__ == "Meta"
        """,
    )


def test_instances_with_custom_reduce_and_state():
    roundtrip(
        """
        class Reduced:
            def __init__(self, v):
                self.v = v
            def __reduce__(self):
                return (Reduced, (self.v * 10,))
        class Stateful:
            def __init__(self):
                self.a = 1
            def __getstate__(self):
                return {"a": self.a, "extra": 5}
            def __setstate__(self, state):
                self.__dict__.update(state)
                self.restored = True
        objs = (Reduced(1), Stateful())
        """,
        """
        reduced, stateful = objs
        assert reduced.v == 10
        assert vars(stateful) == {"a": 1, "extra": 5, "restored": True}
        """,
    )


def test_descriptors_views_and_small_types():
    roundtrip(
        """
        import abc, collections, logging, types, weakref
        d = {"k": 1, "j": 2}
        od = collections.OrderedDict(a=1, b=2)
        class Member:
            pass
        members = [Member(), Member()]
        objs = dict(
            prop=property(lambda self: 1, doc="pdoc"), aprop=abc.abstractproperty(lambda self: 2),
            cm=classmethod(lambda cls: cls), sm=staticmethod(lambda: 3),
            acm=abc.abstractclassmethod(lambda cls: 4), asm=abc.abstractstaticmethod(lambda: 5),
            getset=type.__dict__["__dict__"], proxy=types.MappingProxyType({"x": 1}),
            keys=d.keys(), values=d.values(), items=d.items(),
            okeys=od.keys(), ovalues=od.values(), oitems=od.items(),
            weakset=weakref.WeakSet(members), members=members,
            logger=logging.getLogger("app.sub"), root=logging.getLogger(),
            view=memoryview(b"abc"),
            types=(type(None), type(...), type(NotImplemented), types.FunctionType, types.CodeType),
        )
        """,
        """
        import abc, logging, types
        o = objs
        assert o["prop"].fget(None) == 1 and o["prop"].__doc__ == "pdoc"
        assert type(o["aprop"]) is abc.abstractproperty and o["aprop"].fget(None) == 2
        assert o["cm"].__func__(int) is int and o["sm"].__func__() == 3
        assert type(o["acm"]) is abc.abstractclassmethod and type(o["asm"]) is abc.abstractstaticmethod
        assert o["getset"] is type.__dict__["__dict__"]
        assert type(o["proxy"]) is types.MappingProxyType and dict(o["proxy"]) == {"x": 1}
        assert list(o["keys"]) == ["k", "j"] and list(o["values"]) == [1, 2]
        assert list(o["items"]) == [("k", 1), ("j", 2)]
        assert type(o["okeys"]).__name__ == "odict_keys" and list(o["oitems"]) == [("a", 1), ("b", 2)]
        assert len(o["weakset"]) == 2
        assert o["logger"] is logging.getLogger("app.sub") and o["root"] is logging.getLogger()
        assert o["view"] == b"abc"
        assert o["types"] == (type(None), type(...), type(NotImplemented), types.FunctionType, types.CodeType)
        """,
    )


def test_text_files(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("line1\nline2\n")
    roundtrip(
        f"""
        import sys
        f = open({str(path)!r})
        f.readline()
        objs = (f, sys.stdout, sys.stderr)
        """,
        f"""
        f, out, err = objs
        assert f.readline() == "line2\\n" and f.name == {str(path)!r}
        f.seek(0)
        assert f.read() == "line1\\nline2\\n"
        assert out is sys.stdout and err is sys.stderr
        """,
    )
    out = run_script(
        f"""
        import pickle, cloudpickle_rs
        closed = open({str(path)!r}); closed.close()
        write_only = open({str(path) + ".out"!r}, "w")
        for f in (closed, write_only):
            try:
                cloudpickle_rs.dumps(f)
            except pickle.PicklingError as e:
                print(e)
        """
    )
    assert "Cannot pickle closed files" in out
    assert "Cannot pickle files that are not opened for reading: w" in out


def test_sys_stdout_replaced_by_pytest_capture_goes_by_reference(capsys):
    # Under pytest's capture, sys.stdout and sys.stderr are subclasses of
    # io.TextIOWrapper that upstream cannot pickle; they stand for the
    # receiver's own streams, as the real ones do.
    import io

    import cloudpickle_rs

    assert type(sys.stdout) is not io.TextIOWrapper
    assert isinstance(sys.stdout, io.TextIOWrapper)
    data = cloudpickle_rs.dumps((sys.stdout, sys.stderr, lambda: print("hi", file=sys.stdout)))
    out, err, say = pickle.loads(data)
    assert out is sys.stdout and err is sys.stderr
    received = subprocess_loads(
        data,
        """
        out, err, say = objs
        assert out is sys.stdout and err is sys.stderr
        say()
        """,
    )
    assert received.split() == ["hi"]


def test_other_text_io_wrapper_subclasses_pickle_as_their_class_says(tmp_path):
    out = run_script(
        f"""
        import io, pickle, cloudpickle_rs

        class Named(io.TextIOWrapper):
            def __reduce_ex__(self, protocol):
                return (str, ("named",))

        with Named(open({str(tmp_path / "f.txt")!r}, "wb")) as f:
            print(pickle.loads(cloudpickle_rs.dumps(f)))
        """
    )
    assert out.split() == ["named"]


# --- Beyond cloudpickle: it gets these wrong, we must not -------------------


def test_slots_survive():
    roundtrip(
        """
        class Slotted:
            __slots__ = ("a", "__hidden")
            def __init__(self):
                self.a = 1
                self.__hidden = 2
            def hidden(self):
                return self.__hidden
        objs = Slotted()
        """,
        """
        assert objs.a == 1 and objs.hidden() == 2
        assert not hasattr(objs, "__dict__") and type(objs).__slots__ == ("a", "__hidden")
        try:
            objs.other = 3
        except AttributeError:
            pass
        else:
            raise AssertionError("instance of a slotted class got a __dict__")
        """,
    )


def test_init_subclass_side_effects_not_repeated():
    roundtrip(
        """
        REGISTRY = []
        class Plugin:
            def __init_subclass__(cls, flavour="plain", **kwargs):
                super().__init_subclass__(**kwargs)
                cls.flavour = flavour
                REGISTRY.append(cls.__name__)
        class A(Plugin, flavour="spicy"):
            pass
        objs = (REGISTRY, A)
        """,
        """
        registry, A = objs
        assert registry == ["A"], registry
        assert A.flavour == "spicy"  # what the class keyword argument did is kept
        """,
    )


def test_exception_with_required_init_arguments():
    roundtrip(
        """
        class CodedError(Exception):
            def __init__(self, msg, code):
                super().__init__(msg)
                self.code = code
        objs = CodedError("bad thing", 42)
        """,
        """
        assert type(objs).__name__ == "CodedError"
        assert objs.args == ("bad thing",) and objs.code == 42 and str(objs) == "bad thing"
        """,
    )


def test_getset_descriptor_loads_as_itself():
    roundtrip(
        "objs = (type.__dict__['__dict__'], type.__dict__['__doc__'])",
        "assert objs[0] is type.__dict__['__dict__'] and objs[1] is type.__dict__['__doc__']",
    )


def test_dataclass_missing_is_the_receivers():
    roundtrip(
        "import dataclasses\nobjs = (dataclasses.MISSING, getattr(dataclasses, 'KW_ONLY', None))",
        "import dataclasses\n"
        "assert objs[0] is dataclasses.MISSING and objs[1] is getattr(dataclasses, 'KW_ONLY', None)",
    )


def test_deterministic_class_pickles_across_hash_seeds(tmp_path):
    sender = """
        import enum, dataclasses
        class Base:
            tags = ("x", "y")
            def m(self):
                return {"a", "b"}
        class A(Base):
            '''doc'''
            def get(self):
                return 1 if self else 2
        class Color(enum.Enum):
            RED = 1
        @dataclasses.dataclass
        class DC:
            a: int = 0
        objs = (A, A(), Color, DC)
        """
    # One script path for both runs: `__file__` is part of what is pickled.
    first = run_sender(sender, env={"PYTHONHASHSEED": "1"}, script_dir=str(tmp_path))
    second = run_sender(sender, env={"PYTHONHASHSEED": "2"}, script_dir=str(tmp_path))
    assert first == second


def test_module_subclass_in_sys_modules_by_reference():
    payload = run_sender(
        """
        import sys, types
        class LazyModule(types.ModuleType):
            pass
        mod = LazyModule("json")  # stands for a library that swapped itself in
        import json
        objs = json
        """
    )
    subprocess_loads(payload, "import json\nassert objs is json")
    payload = run_sender(
        """
        import sys, types
        class Special(types.ModuleType):
            pass
        sys.modules["special_mod"] = Special("special_mod")
        objs = sys.modules["special_mod"]
        """
    )
    assert "subimport" in reconstructors_called(payload)


@pytest.mark.parametrize("slots", [True, False])
def test_attrs_classes_in_main(slots):
    roundtrip(
        f"""
        import attrs
        @attrs.define(slots={slots})
        class Item:
            name: str
            qty: int = attrs.field(default=1, validator=attrs.validators.instance_of(int))
            def total(self, price):
                return self.qty * price
        objs = (Item, Item("a", 3))
        """,
        f"""
        Item, item = objs
        assert item.total(2) == 6 and Item("b").qty == 1 and item == Item("a", 3)
        assert hasattr(item, "__dict__") is (not {slots})
        try:
            Item("c", "not an int")
        except TypeError:
            pass
        else:
            raise AssertionError("attrs validator lost")
        """,
    )


def test_pydantic_model_in_main():
    roundtrip(
        """
        import pydantic
        class User(pydantic.BaseModel):
            name: str
            age: int = 0
            @pydantic.field_validator("age")
            @classmethod
            def non_negative(cls, v):
                if v < 0:
                    raise ValueError("negative age")
                return v
            def greeting(self):
                return "hi " + self.name
        objs = (User, User(name="ann", age=3))
        """,
        """
        import pydantic
        User, user = objs
        assert user.greeting() == "hi ann" and user.age == 3
        assert User(name="bob").age == 0 and User.model_validate({"name": "c", "age": 1}).age == 1
        try:
            User(name="x", age=-1)
        except pydantic.ValidationError:
            pass
        else:
            raise AssertionError("pydantic validator lost")
        """,
    )


def test_same_behaviour_as_upstream_for_classes():
    import cloudpickle

    import cloudpickle_rs

    def make():
        class Counter:
            start = 10

            def __init__(self):
                self.n = self.start

            def bump(self, by=1):
                self.n += by
                return self.n

        return Counter

    Counter = make()
    ours = cloudpickle_rs.loads(cloudpickle_rs.dumps(Counter))()
    theirs = cloudpickle.loads(cloudpickle.dumps(Counter))()
    assert (ours.bump(), ours.bump(5)) == (theirs.bump(), theirs.bump(5))
    assert type(ours).__qualname__ == type(theirs).__qualname__
