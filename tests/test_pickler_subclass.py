"""Python subclasses of cloudpickle_rs.Pickler, the way Ray, loky and joblib
write them: extra constructor arguments, ``__new__``, instance attributes,
``reducer_override`` delegating to ``super()``, ``persistent_id`` and the
several ways of customising ``dispatch_table``."""

import collections.abc
import copyreg
import io
import pickle
import types
import typing

import cloudpickle_rs
from cloudpickle_rs import Pickler

_OFFSET = 100  # a module global read by functions pickled by value


def _tagged(tag, value):
    """Module-level (importable) reconstructor used by the test reducers."""
    return (tag, value)


class Celsius:
    def __init__(self, degrees):
        self.degrees = degrees


class Fahrenheit:
    def __init__(self, degrees):
        self.degrees = degrees


class Kelvin:
    def __init__(self, degrees):
        self.degrees = degrees


def reduce_celsius(obj):
    return _tagged, ("celsius", obj.degrees)


def reduce_fahrenheit(obj):
    return _tagged, ("fahrenheit", obj.degrees)


def reduce_kelvin(obj):
    return _tagged, ("kelvin", obj.degrees)


def dump_with(pickler, *objs):
    """Dumps each of ``objs`` with ``pickler`` (one dump call each)."""
    for obj in objs:
        pickler.dump(obj)


def load_all(payload, count=1, unpickler=pickle.Unpickler):
    stream = io.BytesIO(payload)
    reader = unpickler(stream)
    return [reader.load() for _ in range(count)]


def make_closure(n):
    def add(x):
        return x + n + _OFFSET

    return add


# --------------------------------------------------------------------------
# Construction and instances
# --------------------------------------------------------------------------


def test_subclass_init_with_extra_arguments():
    class ContextPickler(Pickler):
        def __init__(self, file, context, protocol=None, buffer_callback=None):
            super().__init__(file, protocol=protocol, buffer_callback=buffer_callback)
            self.context = context

    buf = io.BytesIO()
    pickler = ContextPickler(buf, {"job": 1}, protocol=4)
    pickler.dump(make_closure(2))
    assert pickler.context == {"job": 1}
    payload = buf.getvalue()
    assert payload[1] == 4
    assert pickle.loads(payload)(1) == 103


def test_subclass_with_custom_new():
    class NewPickler(Pickler):
        def __new__(cls, *args, **kwargs):
            self = super().__new__(cls)
            self.created_by_new = True
            return self

        def __init__(self, file, tag):
            super().__init__(file)
            self.tag = tag

    buf = io.BytesIO()
    pickler = NewPickler(buf, "t")
    assert type(pickler) is NewPickler
    assert pickler.created_by_new is True and pickler.tag == "t"
    pickler.dump(lambda x: x * 3)
    assert pickle.loads(buf.getvalue())(2) == 6


def test_subclass_instances_have_a_dict():
    class AttrPickler(Pickler):
        pass

    pickler = AttrPickler(io.BytesIO())
    pickler.anything = [1, 2]
    assert pickler.anything == [1, 2]
    assert vars(pickler)["anything"] == [1, 2]


def test_multiple_inheritance_with_typing_generic():
    T = typing.TypeVar("T")

    class TypedPickler(Pickler, typing.Generic[T]):
        def __init__(self, file, label: T):
            super().__init__(file)
            self.label = label

    buf = io.BytesIO()
    pickler = TypedPickler[int](buf, 3)
    assert isinstance(pickler, Pickler)
    assert pickler.label == 3
    pickler.dump(make_closure(1))
    assert pickle.loads(buf.getvalue())(1) == 102


def test_one_pickler_shares_globals_across_dump_calls():
    def make():
        def read():
            return _OFFSET

        def read_too():
            return _OFFSET + 1

        return read, read_too

    read, read_too = make()
    buf = io.BytesIO()
    pickler = Pickler(buf)
    dump_with(pickler, read, read_too)
    loaded_read, loaded_read_too = load_all(buf.getvalue(), 2)
    assert loaded_read() == 100 and loaded_read_too() == 101
    assert loaded_read.__globals__ is loaded_read_too.__globals__


def test_default_and_positional_protocol():
    buf = io.BytesIO()
    Pickler(buf).dump(lambda: 1)
    assert buf.getvalue()[1] == cloudpickle_rs.DEFAULT_PROTOCOL

    buf = io.BytesIO()
    Pickler(buf, 2).dump(make_closure(0))
    payload = buf.getvalue()
    assert payload[1] == 2
    assert pickle.loads(payload)(1) == 101

    buf = io.BytesIO()
    Pickler(buf, protocol=3).dump(make_closure(0))
    assert buf.getvalue()[1] == 3


def test_class_identity_and_ancestry():
    assert cloudpickle_rs.CloudPickler is Pickler
    assert issubclass(Pickler, pickle.Pickler)
    import _pickle

    assert pickle.Pickler is _pickle.Pickler  # the C pickler


def test_reducer_override_is_native():
    assert not isinstance(Pickler.reducer_override, types.FunctionType)


# --------------------------------------------------------------------------
# reducer_override and persistent_id
# --------------------------------------------------------------------------


def test_reducer_override_delegating_to_super():
    class OverridingPickler(Pickler):
        def __init__(self, file):
            super().__init__(file)
            self.seen = []

        def reducer_override(self, obj):
            if isinstance(obj, Celsius):
                self.seen.append(obj.degrees)
                return _tagged, ("overridden", obj.degrees * 2)
            return super().reducer_override(obj)

    class LocalPoint:
        def __init__(self, x):
            self.x = x

        def double(self):
            return self.x * 2

    buf = io.BytesIO()
    pickler = OverridingPickler(buf)
    pickler.dump([Celsius(2), lambda x: x * 3, make_closure(5), LocalPoint(4)])
    assert pickler.seen == [2]
    tagged, triple, add, point = pickle.loads(buf.getvalue())
    assert tagged == ("overridden", 4)
    assert triple(2) == 6
    assert add(1) == 106
    assert point.double() == 8


def _instances_of_local_classes():
    """Instances of classes pickled by value, one of them reached first
    through its class (a class attribute), while the outer state waits."""

    class Unit:
        def __init__(self, name):
            self.name = name

    class Reading:
        default_unit = Unit("m")

        def __init__(self, value, unit):
            self.value = value
            self.unit = unit

    return [Reading(i, Unit(f"u{i}")) for i in range(3)]


def _described(readings):
    return [(r.value, r.unit.name, type(r).default_unit.name) for r in readings]


def test_an_override_that_rewraps_reductions_keeps_every_state():
    # The state of an instance of a class pickled by value is a dict made for
    # the pickler; it must reach the stream whole even when a Python
    # reducer_override hands the pickler a tuple of its own.
    class RewrappingPickler(Pickler):
        def reducer_override(self, obj):
            reduced = super().reducer_override(obj)
            return tuple(list(reduced)) if isinstance(reduced, tuple) else reduced

    readings = _instances_of_local_classes()
    buf = io.BytesIO()
    RewrappingPickler(buf).dump(readings)
    assert _described(pickle.loads(buf.getvalue())) == _described(readings)
    assert _described(pickle.loads(cloudpickle_rs.dumps(readings))) == _described(readings)


def test_what_persistent_id_is_shown_stays_as_shown():
    class KeepingPickler(Pickler):
        def __init__(self, file):
            super().__init__(file)
            self.shown = []

        def persistent_id(self, obj):
            self.shown.append(obj)
            return None

    readings = _instances_of_local_classes()
    buf = io.BytesIO()
    pickler = KeepingPickler(buf)
    pickler.dump(readings)
    states = [obj for obj in pickler.shown if type(obj) is dict and "value" in obj]
    assert [state["value"] for state in states] == [0, 1, 2]
    assert _described(pickle.loads(buf.getvalue())) == _described(readings)


def test_persistent_id_is_honored():
    class DbPickler(Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, str) and obj.startswith("db:"):
                return ("db", obj[3:])
            return None

    class DbUnpickler(pickle.Unpickler):
        def persistent_load(self, pid):
            kind, key = pid
            return f"{kind} row {key}"

    buf = io.BytesIO()
    DbPickler(buf).dump({"ref": "db:users", "fn": make_closure(1)})
    payload = buf.getvalue()
    assert b"db:users" not in payload
    (loaded,) = load_all(payload, 1, DbUnpickler)
    assert loaded["ref"] == "db row users"
    assert loaded["fn"](1) == 102


# --------------------------------------------------------------------------
# dispatch_table
# --------------------------------------------------------------------------


def test_dispatch_table_readable_on_the_class():
    table = Pickler.dispatch_table
    assert isinstance(table, collections.abc.Mapping)
    assert Pickler.dispatch is Pickler.dispatch_table
    # copyreg registers complex (and a few others) at import
    assert complex in copyreg.dispatch_table
    for cls, reducer in copyreg.dispatch_table.items():
        assert cls in table
        assert table[cls] is reducer


def test_class_level_dispatch_table_addition_is_used():
    Pickler.dispatch_table[Celsius] = reduce_celsius
    try:
        assert pickle.loads(cloudpickle_rs.dumps([Celsius(21)])) == [("celsius", 21)]

        class Sub(Pickler):
            pass

        buf = io.BytesIO()
        Sub(buf).dump(Celsius(3))
        assert pickle.loads(buf.getvalue()) == ("celsius", 3)
    finally:
        del Pickler.dispatch_table[Celsius]
    assert Celsius not in Pickler.dispatch_table
    assert isinstance(pickle.loads(cloudpickle_rs.dumps(Celsius(5))), Celsius)


def test_subclass_class_attribute_dispatch_table_is_honored():
    class ClassTablePickler(Pickler):
        dispatch_table = {**Pickler.dispatch_table, Celsius: reduce_celsius}

    buf = io.BytesIO()
    ClassTablePickler(buf).dump([Celsius(1), make_closure(3)])
    tagged, add = pickle.loads(buf.getvalue())
    assert tagged == ("celsius", 1)
    assert add(1) == 104


def test_subclass_class_attribute_entry_for_code_objects_takes_priority():
    class CodeTablePickler(Pickler):
        dispatch_table = {types.CodeType: lambda co: (_tagged, ("code", co.co_name))}

    def some_function():
        return 1

    buf = io.BytesIO()
    CodeTablePickler(buf).dump(some_function.__code__)
    assert pickle.loads(buf.getvalue()) == ("code", "some_function")


def test_copyreg_registration_is_honored():
    copyreg.pickle(Kelvin, reduce_kelvin)
    try:
        assert Kelvin in Pickler.dispatch_table
        assert pickle.loads(cloudpickle_rs.dumps(Kelvin(300))) == ("kelvin", 300)
    finally:
        del copyreg.dispatch_table[Kelvin]
    loaded = pickle.loads(cloudpickle_rs.dumps(Kelvin(1)))
    assert isinstance(loaded, Kelvin) and loaded.degrees == 1


def test_table_set_through_the_member_descriptor_loky_style():
    # loky sets its per-instance table through _pickle.Pickler's member
    # descriptor (so that the C pickler sees it) and as an attribute.
    class LokyStylePickler(Pickler):
        def __init__(self, file, reducers):
            super().__init__(file)
            table = dict(self.dispatch_table)
            table.update(reducers)
            for klass in type(self).__mro__:
                descriptor = vars(klass).get("dispatch_table")
                if isinstance(descriptor, types.MemberDescriptorType):
                    descriptor.__set__(self, table)
                    break
            else:
                raise AssertionError("no member descriptor for dispatch_table")
            self.dispatch_table = table

        def register(self, cls, reducer):
            self.dispatch_table[cls] = reducer

    buf = io.BytesIO()
    pickler = LokyStylePickler(buf, {Celsius: reduce_celsius})
    pickler.register(Fahrenheit, reduce_fahrenheit)
    pickler.dump([Celsius(7), Fahrenheit(8), make_closure(0)])
    celsius, fahrenheit, add = pickle.loads(buf.getvalue())
    assert celsius == ("celsius", 7)
    assert fahrenheit == ("fahrenheit", 8)
    assert add(1) == 101


# Per-instance tables assigned as plain attributes after __init__: honored by
# cloudpickle_rs (the C pickler's own semantics); cloudpickle ignores them.


def test_instance_dispatch_table_assigned_in_init_is_honored():
    class InstanceTablePickler(Pickler):
        def __init__(self, file):
            super().__init__(file)
            self.dispatch_table = {**Pickler.dispatch_table, Celsius: reduce_celsius}

    buf = io.BytesIO()
    InstanceTablePickler(buf).dump([Celsius(9), make_closure(1)])
    tagged, add = pickle.loads(buf.getvalue())
    assert tagged == ("celsius", 9)
    assert add(1) == 102


def test_instance_dispatch_table_mutation_after_assignment_is_honored():
    class RegisteringPickler(Pickler):
        def __init__(self, file):
            super().__init__(file)
            self.dispatch_table = copyreg.dispatch_table.copy()

        def register(self, cls, reducer):
            self.dispatch_table[cls] = reducer

    buf = io.BytesIO()
    pickler = RegisteringPickler(buf)
    pickler.register(Celsius, reduce_celsius)
    pickler.dump(Celsius(1))
    pickler.register(Fahrenheit, reduce_fahrenheit)
    pickler.dump(Fahrenheit(2))
    assert load_all(buf.getvalue(), 2) == [("celsius", 1), ("fahrenheit", 2)]


def test_instance_dispatch_table_entry_for_functions_takes_priority():
    class FunctionTablePickler(Pickler):
        def __init__(self, file):
            super().__init__(file)
            # (the reconstructor must not be a function itself: the entry
            # applies to every function in the pickle)
            self.dispatch_table = {types.FunctionType: lambda f: (tuple, (("function", f.__name__),))}

    buf = io.BytesIO()
    FunctionTablePickler(buf).dump(make_closure(1))
    assert pickle.loads(buf.getvalue()) == ("function", "add")


def test_instance_dispatch_table_does_not_leak_to_other_picklers():
    class InstanceTablePickler(Pickler):
        def __init__(self, file):
            super().__init__(file)
            self.dispatch_table = {**copyreg.dispatch_table, Celsius: reduce_celsius}

    InstanceTablePickler(io.BytesIO()).dump(Celsius(1))
    assert Celsius not in Pickler.dispatch_table
    loaded = pickle.loads(cloudpickle_rs.dumps(Celsius(2)))
    assert isinstance(loaded, Celsius)
