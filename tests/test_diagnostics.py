"""Errors that say where: a failed dump keeps the exception type upstream
cloudpickle 3.1.2 raises, and tells the type of the object that could not be
pickled and the path by which it was reached from the dumped object.

What a user sees is checked: the traceback text (the message, and on 3.11+
the exception's notes), on every Python version.
"""

import abc
import enum
import functools
import io
import pickle
import re
import sys
import threading
import traceback

import cloudpickle
import pytest

import cloudpickle_rs
from cloudpickle_rs import _diagnose
from testutils import run_script

LOCK_TYPE = "'_thread.lock'"


class Connection:
    """Importable, so its instances pickle through ``__reduce_ex__``."""

    def __init__(self):
        self.lock = threading.Lock()


class Holder:
    def __init__(self, payload):
        self.payload = payload


class SlottedHolder:
    __slots__ = ("payload",)

    def __init__(self, payload):
        self.payload = payload


class Refuses:
    """Fails with a message that does not name its type."""

    def __reduce__(self):
        raise ValueError("refusing to travel")


class RefusesWithPicklingError:
    def __reduce__(self):
        raise pickle.PicklingError("stays on this host")


class ReduceExRaises:
    def __reduce_ex__(self, protocol):
        raise RuntimeError("no reduction today")


class GetattrRaises:
    def __getattr__(self, name):
        raise RuntimeError(f"touchy about {name}")


class GetattributeRaises:
    def __getattribute__(self, name):
        raise RuntimeError(f"no attribute access: {name}")


class ReducesToGarbage:
    def __reduce_ex__(self, protocol):
        return 42


class ReprRaises:
    def __repr__(self):
        raise RuntimeError("no repr")


CONN = Connection()


def upstream_error(obj):
    with pytest.raises(Exception) as info:
        cloudpickle.dumps(obj)
    return info.value


def dumped_error(obj, dump=cloudpickle_rs.dumps):
    with pytest.raises(Exception) as info:
        dump(obj)
    return info.value


def shown(exc):
    """The traceback text a user sees for ``exc``."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def assert_explained(obj, type_name, path, dump=cloudpickle_rs.dumps):
    """Dumping ``obj`` raises what upstream raises, and the traceback names
    ``type_name`` and ``path``; returns the exception."""
    upstream = upstream_error(obj)
    exc = dumped_error(obj, dump)
    assert type(exc) is type(upstream)
    assert type_name in shown(exc)
    assert_path_shown(exc, path, type_name)
    return exc


#: From 3.14 the pickler's own notes name each step through containers and
#: instance state ("when serializing list item 1"); cloudpickle-rs then adds
#: its path only where a function, a class or a key's repr lies on the way,
#: or where the message does not name the culprit's type.
PICKLER_DESCRIBES_DATA = sys.version_info >= (3, 14)


def said_by_the_pickler(exc, path, type_name):
    through_data = path.startswith("obj") and ".__class__" not in path and "<" not in path
    return PICKLER_DESCRIBES_DATA and through_data and type_name in str(exc)


def assert_path_shown(exc, path, type_name=None):
    text = shown(exc)
    if type_name is not None and said_by_the_pickler(exc, path, type_name):
        assert "when serializing" in text and "reached through" not in text, text
        return
    # The path ends a line: a note of its own, or the end of the message.
    pattern = re.escape(f"reached through {path}") + "$"
    assert re.search(pattern, text, re.MULTILINE), text


# --- where the object was reached ---


def test_closure_variable():
    conn = Connection()

    def task():
        return conn

    assert_explained(task, LOCK_TYPE, "test_closure_variable.<locals>.task.<closure conn>.lock")


def test_function_global():
    task = lambda: CONN.lock  # noqa: E731

    assert_explained(task, LOCK_TYPE, "test_function_global.<locals>.<lambda>.__globals__['CONN'].lock")


def test_global_of_a_function_in_a_closure():
    def outer():
        return inner()

    def inner():
        return CONN

    assert_explained(
        outer,
        LOCK_TYPE,
        "test_global_of_a_function_in_a_closure.<locals>.outer.<closure inner>.__globals__['CONN'].lock",
    )


def test_local_class_attribute():
    class Service:
        guard = threading.Lock()

    assert_explained(Service, LOCK_TYPE, "test_local_class_attribute.<locals>.Service.__dict__['guard']")


def test_local_class_method_global():
    class Service:
        def run(self):
            return CONN

    assert_explained(
        Service,
        LOCK_TYPE,
        "test_local_class_method_global.<locals>.Service.__dict__['run'].__globals__['CONN'].lock",
    )


def test_method_of_a_local_enum():
    class Mode(enum.Enum):
        FAST = 1

        def connection(self):
            return CONN

    assert_explained(
        Mode,
        LOCK_TYPE,
        "test_method_of_a_local_enum.<locals>.Mode.__dict__['connection'].__globals__['CONN'].lock",
    )


def test_value_of_a_local_enum_member():
    class Mode(enum.Enum):
        FAST = Holder(CONN)

    assert_explained(Mode, LOCK_TYPE, "test_value_of_a_local_enum_member.<locals>.Mode.FAST.value.payload.lock")


def test_virtual_subclass_of_a_local_abc():
    class Interface(abc.ABC):
        @abc.abstractmethod
        def serve(self): ...

    class Service:
        guard = threading.Lock()

    Interface.register(Service)
    assert_explained(
        Interface,
        LOCK_TYPE,
        "test_virtual_subclass_of_a_local_abc.<locals>.Interface.<registered subclass 0>.__dict__['guard']",
    )


def test_global_of_a_local_singledispatch_function():
    @functools.singledispatch
    def handle(value):
        return CONN

    assert_explained(
        handle,
        LOCK_TYPE,
        "test_global_of_a_local_singledispatch_function.<locals>.handle.<arg 0>.__globals__['CONN'].lock",
    )


def test_instance_of_a_local_class_reaches_its_class():
    class Service:
        guard = threading.Lock()

    assert_explained(Service(), LOCK_TYPE, "obj.__class__.__dict__['guard']")


def test_main_class_in_the_traceback_of_a_script():
    out = run_script(
        """
        import threading, traceback
        import cloudpickle, cloudpickle_rs

        class Job:
            lock = threading.Lock()

        def submit():
            return Job()

        try:
            cloudpickle.dumps(submit)
        except Exception as e:
            upstream = type(e)
        try:
            cloudpickle_rs.dumps(submit)
        except Exception as e:
            print("same type:", type(e) is upstream)
            traceback.print_exc(file=__import__("sys").stdout)
        """
    )
    assert "same type: True" in out
    assert LOCK_TYPE in out
    assert "reached through submit.__globals__['Job'].__dict__['lock']" in out


def test_instance_state():
    assert_explained(Holder(Connection()), LOCK_TYPE, "obj.payload.lock")


def test_instance_slots_state():
    obj = SlottedHolder(Holder(Connection()))
    assert_explained(obj, LOCK_TYPE, "obj.payload.payload.lock")


def test_nested_containers():
    obj = {"jobs": [("first", {"conn": Connection()})]}
    assert_explained(obj, LOCK_TYPE, "obj['jobs'][0][1]['conn'].lock")


def test_tuple_in_list_in_instance():
    obj = Holder([1, (2, 3, Connection())])
    assert_explained(obj, LOCK_TYPE, "obj.payload[1][2].lock")


def test_default_argument():
    def task(x, conn=Connection()):  # noqa: B008 (the unpicklable default is the point)
        return x

    assert_explained(task, LOCK_TYPE, "test_default_argument.<locals>.task.__defaults__[0].lock")


def test_keyword_only_default():
    def task(*, retries=3, conn=Connection()):  # noqa: B008 (the unpicklable default is the point)
        return retries

    assert_explained(
        task,
        LOCK_TYPE,
        "test_keyword_only_default.<locals>.task.__kwdefaults__['conn'].lock",
    )


def test_function_attribute():
    def task():
        return 1

    task.conn = Connection()
    assert_explained(task, LOCK_TYPE, "test_function_attribute.<locals>.task.conn.lock")


def test_message_without_the_type_name_gets_it():
    exc = assert_explained(Holder([Refuses()]), "Refuses", "obj.payload[0]")
    assert "refusing to travel" in shown(exc)


def test_pickling_error_keeps_its_type():
    exc = assert_explained(
        {"cfg": Holder(RefusesWithPicklingError())},
        "RefusesWithPicklingError",
        "obj['cfg'].payload",
    )
    assert isinstance(exc, pickle.PicklingError)


@pytest.mark.parametrize(
    "dump",
    [
        cloudpickle_rs.dumps,
        lambda obj: cloudpickle_rs.dump(obj, io.BytesIO()),
        lambda obj: cloudpickle_rs.Pickler(io.BytesIO()).dump(obj),
        lambda obj: cloudpickle_rs.dumps(obj, protocol=2),
    ],
    ids=["dumps", "dump", "Pickler.dump", "protocol 2"],
)
def test_every_entry_point(dump):
    assert_explained([Holder(Connection())], LOCK_TYPE, "obj[0].payload.lock", dump=dump)


def test_path_is_a_note_or_in_the_message():
    upstream = upstream_error(Holder(Connection()))
    exc = dumped_error(Holder(Connection()))
    if PICKLER_DESCRIBES_DATA:
        # The pickler's notes already say it: nothing said twice.
        assert str(exc) == str(upstream)
        assert exc.__notes__ == upstream.__notes__
    elif sys.version_info >= (3, 11):
        assert str(exc) == str(upstream)
        assert any("reached through obj.payload.lock" in note for note in exc.__notes__)
    else:
        assert str(exc) == f"{upstream}, reached through obj.payload.lock"


def test_unpicklable_root_is_left_untouched():
    upstream = upstream_error(threading.Lock())
    exc = dumped_error(threading.Lock())
    assert type(exc) is type(upstream)
    assert str(exc) == str(upstream)
    assert "reached through" not in shown(exc)
    assert getattr(exc, "__notes__", None) == getattr(upstream, "__notes__", None)


def test_probes_use_the_picklers_own_dispatch_table():
    # The table makes Connection picklable, so only the second item fails.
    def dumper(pickler_class):
        def dump(obj):
            pickler = pickler_class(io.BytesIO())
            pickler.dispatch_table = {Connection: lambda c: (Connection, ())}
            pickler.dump(obj)

        return dump

    obj = [Connection(), Holder(threading.Lock())]
    upstream = dumped_error(obj, dumper(cloudpickle.Pickler))
    exc = dumped_error(obj, dumper(cloudpickle_rs.Pickler))
    assert type(exc) is type(upstream)
    assert LOCK_TYPE in shown(exc)
    assert_path_shown(exc, "obj[1].payload", LOCK_TYPE)


def test_probes_use_the_picklers_class():
    class Secret:
        pass

    def reducer_override(self, obj):
        if isinstance(obj, Secret):
            raise pickle.PicklingError("secrets stay here")
        return super(type(self), self).reducer_override(obj)

    namespace = {"reducer_override": reducer_override}
    Strict = type("Strict", (cloudpickle_rs.Pickler,), namespace)
    UpstreamStrict = type("UpstreamStrict", (cloudpickle.Pickler,), namespace)
    obj = {"cfg": Holder(Secret())}
    with pytest.raises(Exception) as upstream:
        UpstreamStrict(io.BytesIO()).dump(obj)
    exc = dumped_error(obj, lambda o: Strict(io.BytesIO()).dump(o))
    assert type(exc) is type(upstream.value)
    assert "Secret' object reached through obj['cfg'].payload" in shown(exc)


# --- only on failure ---


def test_successful_dumps_never_diagnose(monkeypatch):
    calls = []
    real_find_path = _diagnose._find_path

    def recording_find_path(*args):
        calls.append(args)
        return real_find_path(*args)

    monkeypatch.setattr(_diagnose, "_find_path", recording_find_path)
    offset = 3

    class Local:
        def scale(self, x):
            return x * offset

    picklable = [lambda x: x + offset, Local, Local(), Holder([1, {"a": (2,)}])]
    for obj in picklable:
        cloudpickle_rs.dumps(obj)
        cloudpickle_rs.dump(obj, io.BytesIO())
        cloudpickle_rs.Pickler(io.BytesIO()).dump(obj)
    assert calls == []
    # The failure path does reach the diagnosis (so the check above can fail).
    with pytest.raises(TypeError):
        cloudpickle_rs.dumps([threading.Lock()])
    assert len(calls) == 1


# --- hostile objects, cycles, bounds ---


def test_reduce_ex_that_raises():
    assert_explained({"x": ReduceExRaises()}, "ReduceExRaises", "obj['x']")


def test_getattr_that_raises():
    obj = [GetattrRaises(), Holder(Connection())]
    upstream = upstream_error(obj)
    # Whether the object itself fails depends on the Python version.
    if isinstance(upstream, RuntimeError):
        assert_explained(obj, "GetattrRaises", "obj[0]")
    else:
        assert_explained(obj, LOCK_TYPE, "obj[1].payload.lock")


def test_getattribute_that_raises():
    obj = {"a": GetattributeRaises()}
    exc = dumped_error(obj)
    assert type(exc) is type(upstream_error(obj))
    assert "GetattributeRaises" in shown(exc)
    assert_path_shown(exc, "obj['a']")


def test_reduce_returning_garbage():
    assert_explained(Holder(ReducesToGarbage()), "ReducesToGarbage", "obj.payload")


def test_key_whose_repr_raises():
    key = ReprRaises()
    path = f"obj[<{__name__}.ReprRaises object>].lock"
    assert_explained({key: Connection()}, LOCK_TYPE, path)


def test_list_containing_itself():
    items = [1]
    items.append(items)
    items.append(Holder(Connection()))
    assert_explained(items, LOCK_TYPE, "obj[2].payload.lock")


def test_instance_referring_to_itself():
    obj = Holder(None)
    obj.me = obj
    obj.conn = Connection()
    assert_explained(obj, LOCK_TYPE, "obj.conn.lock")


def test_functions_calling_each_other():
    conn = Connection()

    def ping(n):
        return pong(n)

    def pong(n):
        return ping(n), conn

    assert_explained(
        ping,
        LOCK_TYPE,
        "test_functions_calling_each_other.<locals>.ping.<closure pong>.<closure conn>.lock",
    )


def test_many_children_found_by_bisection():
    items = [Holder(i) for i in range(3000)] + [Holder(Connection())]
    items += [Holder(i) for i in range(100)]
    assert_explained({"items": items}, LOCK_TYPE, "obj['items'][3000].payload.lock")


def test_work_is_bounded(monkeypatch):
    items = [Holder(i) for i in range(200)] + [Holder(Connection())]
    monkeypatch.setattr(_diagnose, "MAX_CHILDREN", 50)
    exc = dumped_error(items)
    assert type(exc) is TypeError
    assert "reached through" not in shown(exc)
    monkeypatch.undo()
    assert_explained(items, LOCK_TYPE, "obj[200].payload.lock")
