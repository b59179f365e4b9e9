"""Explains a failed dump: the path by which the unpicklable object was reached.

Called by the native ``Pickler.dump`` on its failure path only, as
``annotate(exc, obj, pickler)``. It walks the object graph again from ``obj``,
through what the pickler reduces each object to (a function's closure,
referenced globals, defaults and ``__dict__``; a class's metaclass, bases and
own attributes, as the native reduction gives them; anything else through
its reduction), and follows, level by level, the first part that
fails to pickle on its own with the same error. The part where no child fails
any more is the culprit; its path is added to ``exc``: as a note on 3.11+,
appended to the message before (on 3.14+, whose pickler adds a note per level,
only where a function or class lies on the way or the culprit's type needs
naming). The exception keeps its type. A walk that
finds nothing below ``obj``, or that runs out of budget, leaves ``exc`` as is.
"""

import copyreg
import pickle
import re
import sys
import threading
import time
import types

from . import _native
from ._layouts import (
    CLASS_ARGS,
    CLASS_STATE,
    ENUM_ARGS,
    FUNCTION_ARGS,
    FUNCTION_STATE,
    REDUCTION,
    STATE_AND_SLOTSTATE,
    as_called,
    function_state,
)

#: Pickling attempts one diagnosis may make.
MAX_PROBES = 2000
#: Child objects one diagnosis may look at.
MAX_CHILDREN = 100_000
#: Seconds one diagnosis may take (checked between steps).
MAX_SECONDS = 3.0
#: Above this many children, bisect for the failing one instead of probing each.
BISECT_FROM = 16

_NO_MATCH, _LOOSE, _EXACT = 0, 1, 2

_ATOMIC_TYPES = (type(None), bool, int, float, complex, str, bytes)
#: From 3.14 pickling errors carry a note per level ("when serializing ...").
_PICKLER_DESCRIBES_STEPS = sys.version_info >= (3, 14)
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
_MARK = "_cloudpickle_rs_reached_through"

# Probing pickles again, and a failed probe would call annotate again.
_local = threading.local()


def annotate(exc, obj, pickler):
    """Adds to ``exc`` where, below ``obj``, the unpicklable object sits."""
    if getattr(_local, "active", False) or _MARK in getattr(exc, "__dict__", {}):
        return
    _local.active = True
    try:
        # 3.14's pickler describes where it failed with the reprs of what it
        # was saving; a repr that raises replaces the error with its own,
        # the original one becoming its context: explain that one then.
        for error in (exc, exc.__context__):
            if not isinstance(error, BaseException):
                break
            found = _find_path(error, obj, pickler)
            if found is not None:
                path, culprit, through_data = found
                # From 3.14 the pickler's own notes ("when serializing list
                # item 1", "... dict item 'lock'") name each step through
                # containers and instance state: the path alone would add
                # nothing (naming the culprit's type still does).
                redundant = through_data and error is exc and _PICKLER_DESCRIBES_STEPS
                if not (redundant and _names_type(error, culprit)):
                    _add_path(error, path, culprit)
                break
    finally:
        _local.active = False


def _find_path(exc, obj, pickler):
    """``(path, culprit, through_data)`` for the deepest object below ``obj``
    that fails to pickle like ``exc``, or None when that is ``obj`` itself.
    ``through_data``: every step is an item of a container or an attribute
    of an instance's state (no function, class or other reduction part)."""
    walk = _Walk(exc, pickler)
    path, current = _root_name(obj), obj
    walk.mark_seen(obj)
    through_data = True
    while True:
        step = walk.failing_child(path, current)
        if step is None:
            break
        through_data = through_data and _is_data_step(current, step[0][len(path) :])
        path, current = step
    if current is obj:
        return None
    return path, current, through_data


_CONTAINERS = (list, tuple, dict, set, frozenset)
_NOT_DATA = (
    types.FunctionType,
    type,
    types.MethodType,
    types.CellType,
    types.ModuleType,
    property,
    staticmethod,
    classmethod,
)


def _is_data_step(parent, suffix):
    """Whether ``parent`` -> ``parent<suffix>`` is an item of a container, or
    an attribute (``.name``) from an ordinary instance's state."""
    kind = type(parent)
    if kind in _CONTAINERS:
        return suffix.startswith("[")
    if issubclass(kind, _NOT_DATA):
        return False
    return suffix.startswith(".") and suffix[1:].isidentifier() and suffix != ".__class__"


class _Walk:
    """One diagnosis: the failure to match, the probes, the budget."""

    def __init__(self, exc, pickler):
        self.error_type = type(exc)
        self.message = _safe_str(exc)
        self.prober = _Prober(pickler)
        self.seen = {}
        self.children_left = MAX_CHILDREN
        self.deadline = time.monotonic() + MAX_SECONDS

    def mark_seen(self, obj):
        # Holding the object keeps its id from being reused by a temporary.
        self.seen[id(obj)] = obj

    def out_of_budget(self):
        return self.children_left <= 0 or self.prober.probes_left <= 0 or time.monotonic() > self.deadline

    def failing_child(self, path, obj):
        """The first child of ``obj`` that fails alone like the original
        error (same type and message; failing that, same message up to
        addresses), or None."""
        candidates = self.candidates(path, obj)
        if len(candidates) > BISECT_FROM:
            suspect = self.bisect(candidates)
            # Probe the suspect first; the others only if it does not fail.
            candidates = candidates[suspect:] + candidates[:suspect]
        loose_match = None
        for candidate in candidates:
            if self.out_of_budget():
                break
            match = self.match(self.prober.error_of(candidate[1]))
            if match == _EXACT:
                return candidate
            if match == _LOOSE and loose_match is None:
                loose_match = candidate
        return loose_match

    def candidates(self, path, obj):
        """The children of ``obj`` worth probing: not seen, not atomic."""
        found = []
        for child_path, child in _children(path, obj, self.prober):
            if self.out_of_budget():
                break
            self.children_left -= 1
            if id(child) in self.seen or issubclass(type(child), _ATOMIC_TYPES):
                continue
            self.mark_seen(child)
            found.append((child_path, child))
        return found

    def bisect(self, candidates):
        """The index of the candidate that probably fails: halves the range
        while its first half, pickled as a list, fails like the original,
        else keeps the second half (a few probes instead of one per child,
        each pickling fewer objects than the last)."""
        objects = [child for _, child in candidates]
        low, high = 0, len(objects)
        while high - low > 1 and not self.out_of_budget():
            middle = (low + high) // 2
            if self.match(self.prober.error_of(objects[low:middle])):
                high = middle
            else:
                low = middle
        return low

    def match(self, error):
        if error is None or type(error) is not self.error_type:
            return _NO_MATCH
        message = _safe_str(error)
        if message == self.message:
            return _EXACT
        if _same_up_to_addresses(message, self.message):
            return _LOOSE
        return _NO_MATCH


class _Discard:
    """A file that forgets what is written to it."""

    def write(self, data):
        return len(data)


class _Prober:
    """Pickles single objects with a fresh pickler like the failed one."""

    def __init__(self, pickler):
        self.pickler_type = type(pickler)
        # The C pickler does not expose its protocol, only whether it is binary.
        self.protocol = pickle.HIGHEST_PROTOCOL if getattr(pickler, "bin", 1) else 0
        self.dispatch_table = _own_dispatch_table(pickler)
        self.probes_left = MAX_PROBES

    def new_pickler(self):
        try:
            fresh = self.pickler_type(_Discard(), self.protocol)
        except Exception:
            from . import Pickler

            fresh = Pickler(_Discard(), self.protocol)
        if self.dispatch_table is not None:
            fresh.dispatch_table = self.dispatch_table
        return fresh

    def error_of(self, obj):
        """The exception pickling ``obj`` alone raises, or None."""
        self.probes_left -= 1
        try:
            self.new_pickler().dump(obj)
        except Exception as error:
            return error
        return None

    def native_reduction_of(self, obj):
        """What cloudpickle-rs reduces ``obj`` to (NotImplemented: saved by
        reference), whatever the pickler's class overrides; None if that fails."""
        try:
            return _native.Pickler.reducer_override(self.new_pickler(), obj)
        except Exception:
            return None

    def reduction_of(self, obj):
        """What the pickler would save ``obj`` as: the pickler's own
        ``reducer_override``, then its dispatch table, then ``__reduce_ex__``."""
        try:
            fresh = self.new_pickler()
            reduced = fresh.reducer_override(obj)
            if reduced is not NotImplemented:
                return reduced
            table = getattr(fresh, "dispatch_table", copyreg.dispatch_table)
            reducer = table.get(type(obj))
            if reducer is not None:
                return reducer(obj)
            return obj.__reduce_ex__(self.protocol)
        except Exception:
            return None


def _own_dispatch_table(pickler):
    """The pickler instance's own ``dispatch_table``, or None for the default."""
    try:
        table = pickler.dispatch_table
        default = type(pickler).dispatch_table
    except Exception:
        return None
    return None if table is default else table


# --- children: (path, object) pairs in the order the pickler saves them ---


def _children(path, obj, prober):
    """The children, stopping quietly where producing them raises."""
    iterator = _children_by_kind(path, obj, prober)
    while True:
        try:
            child = next(iterator)
        except Exception:  # StopIteration included
            return
        yield child


def _children_by_kind(path, obj, prober):
    # type(obj), not isinstance: the latter reads obj.__class__, which an
    # object's own __getattribute__ may break.
    kind = type(obj)
    if issubclass(kind, (types.FunctionType, type)):
        return _native_reduction_children(path, obj, prober.native_reduction_of(obj))
    if issubclass(kind, (staticmethod, classmethod)):
        return _attribute_children(path, obj, ["__func__"])
    if issubclass(kind, property):
        return _attribute_children(path, obj, ["fget", "fset", "fdel"])
    if issubclass(kind, types.MethodType):
        return _attribute_children(path, obj, ["__func__", "__self__"])
    if issubclass(kind, types.CellType):
        return _attribute_children(path, obj, ["cell_contents"])
    if issubclass(kind, types.ModuleType):
        return _mapping_children(path, _safe_vars(obj), _attribute_path)
    return _object_children(path, obj, prober)


def _object_children(path, obj, prober):
    kind = type(obj)
    if kind in (list, tuple):
        yield from _sequence_children(path, obj)
        return
    if kind is dict:
        yield from _dict_children(path, obj.items())
        return
    if kind in (set, frozenset):
        yield from _set_children(path, obj)
        return
    yield from _reduction_children(path, prober.reduction_of(obj))


def _native_reduction_children(path, obj, reduced):
    """The parts of a function or class as our pickler saves it: a function
    or class by value part by part, by reference nothing."""
    if not isinstance(reduced, tuple):
        return iter(())
    reduced = as_called(reduced)
    maker = REDUCTION.get(reduced, "callable")
    if maker is _native.make_function:
        return _function_children(path, obj, reduced)
    if maker is _native.make_class:
        return _class_children(path, reduced)
    if maker is _native.make_enum:
        return _enum_children(path, reduced)
    return _reduction_children(path, reduced)


def _function_children(path, func, reduced):
    args = REDUCTION.get(reduced, "args")
    # A state of plain values travels as an argument, any other one apart.
    state = function_state(args, REDUCTION.get(reduced, "state"))
    freevars = getattr(getattr(func, "__code__", None), "co_freevars", ())
    for name, cell in zip(freevars, FUNCTION_ARGS.get(args, "closure") or ()):
        if name == "__classdict__":
            # A class's namespace, of which only the names read travel.
            continue
        try:
            yield f"{path}.<closure {name}>", cell.cell_contents
        except ValueError:  # an empty cell
            continue
    for name, value in (FUNCTION_STATE.get(state, "globals") or {}).items():
        yield f"{path}.__globals__[{name!r}]", value
    for i, default in enumerate(FUNCTION_STATE.get(state, "defaults") or ()):
        yield f"{path}.__defaults__[{i}]", default
    kwdefaults = FUNCTION_STATE.get(state, "kwdefaults") or {}
    yield from _mapping_children(path + ".__kwdefaults__", kwdefaults, _key_path)
    annotate = FUNCTION_STATE.get(state, "annotate")
    if annotate is not None:
        # 3.14: what travels is the function that computes the annotations
        # (beside them once they were computed).
        yield f"{path}.__annotate__", annotate
    else:
        annotations = FUNCTION_STATE.get(state, "annotations") or {}
        yield from _mapping_children(path + ".__annotations__", annotations, _key_path)
    yield from _mapping_children(path, FUNCTION_STATE.get(state, "dict") or {}, _attribute_path)
    for i, parameter in enumerate(FUNCTION_STATE.get(state, "type_params") or ()):
        yield f"{path}.__type_params__[{i}]", parameter


def _class_children(path, reduced):
    args = CLASS_ARGS.read(REDUCTION.get(reduced, "args"))
    if args["metaclass"] is not type:
        yield f"{path}.__class__", args["metaclass"]
    yield from _bases_children(path, args["bases"])
    yield from _mapping_children(path, args["namespace"] or {}, _class_dict_path)
    yield from _class_state_children(path, REDUCTION.get(reduced, "state"))


def _enum_children(path, reduced):
    args = ENUM_ARGS.read(REDUCTION.get(reduced, "args"))
    yield from _bases_children(path, args["bases"])
    yield from _mapping_children(path, args["members"] or {}, _member_value_path)
    yield from _class_state_children(path, REDUCTION.get(reduced, "state"))


def _bases_children(path, bases):
    for i, base in enumerate(bases if isinstance(bases, tuple) else ()):
        yield f"{path}.__bases__[{i}]", base


def _class_state_children(path, state):
    """A class's own attributes, then the classes registered as its virtual
    subclasses (an ABC's)."""
    yield from _mapping_children(path, CLASS_STATE.get(state, "attributes") or {}, _class_dict_path)
    for i, subclass in enumerate(CLASS_STATE.get(state, "registry") or ()):
        yield f"{path}.<registered subclass {i}>", subclass


def _attribute_children(path, obj, names):
    for name in names:
        try:
            value = getattr(obj, name)
        except Exception:
            continue
        if value is not None:
            yield f"{path}.{name}", value


def _sequence_children(path, items):
    for i, item in enumerate(items):
        yield f"{path}[{i}]", item


def _dict_children(path, items):
    for key, value in items:
        yield f"{path}.<key {_short_repr(key)}>", key
        yield _key_path(path, key), value


def _set_children(path, items):
    for item in items:
        yield f"{path}.<item {_short_repr(item)}>", item


def _mapping_children(path, mapping, name_path):
    try:
        items = list(mapping.items())
    except Exception:
        return
    for key, value in items:
        yield name_path(path, key), value


def _reduction_children(path, reduced):
    """The parts of a ``__reduce_ex__``-style tuple:
    ``(callable, args[, state[, listitems[, dictitems]]])``."""
    if not isinstance(reduced, tuple) or len(reduced) < 2:
        return
    parts = REDUCTION.read(reduced)
    yield from _reduce_args_children(path, parts["callable"], parts["args"])
    yield from _state_children(path, parts["state"])
    listitems = parts["listitems"]
    if listitems is not None:
        yield from _sequence_children(path, _bounded(listitems))
    dictitems = parts["dictitems"]
    if dictitems is not None:
        yield from _dict_children(path, _bounded(dictitems))


def _reduce_args_children(path, rebuild, args):
    if not isinstance(args, tuple):
        return
    if rebuild is copyreg.__newobj__ and args:
        yield f"{path}.__class__", args[0]
        args = args[1:]
    elif rebuild is copyreg.__newobj_ex__ and len(args) == 3:
        yield f"{path}.__class__", args[0]
        new_args, new_kwargs = args[1], args[2]
        if isinstance(new_args, tuple):
            yield from _indexed(path, "arg", new_args)
        if isinstance(new_kwargs, dict):
            for key, value in new_kwargs.items():
                yield f"{path}.<arg {key}>", value
        return
    else:
        yield f"{path}.<reconstructor>", rebuild
    yield from _indexed(path, "arg", args)


def _state_children(path, state):
    if state is None:
        return
    if isinstance(state, dict):
        yield from _mapping_children(path, state, _attribute_path)
        return
    is_slot_state = (
        isinstance(state, tuple)
        and len(state) == len(STATE_AND_SLOTSTATE)
        and all(part is None or isinstance(part, dict) for part in state)
    )
    if is_slot_state:
        for part in state:
            if part is not None:
                yield from _mapping_children(path, part, _attribute_path)
        return
    yield f"{path}.<state>", state


def _indexed(path, label, values):
    for i, value in enumerate(values):
        yield f"{path}.<{label} {i}>", value


def _bounded(iterable):
    """The items of an iterator a reduction returned, stopping quietly at an
    error; the walk's budget bounds how many are taken (it may be endless)."""
    try:
        iterator = iter(iterable)
    except Exception:
        return
    while True:
        try:
            item = next(iterator)
        except Exception:  # StopIteration included
            return
        yield item


# --- naming ---


def _root_name(obj):
    if issubclass(type(obj), (types.FunctionType, type)):
        qualname = getattr(obj, "__qualname__", None)
        if isinstance(qualname, str) and qualname:
            return qualname
    return "obj"


def _attribute_path(path, name):
    if isinstance(name, str) and name.isidentifier():
        return f"{path}.{name}"
    return f"{path}.__dict__[{_short_repr(name)}]"


def _class_dict_path(path, name):
    return f"{path}.__dict__[{_short_repr(name)}]"


def _member_value_path(path, name):
    if isinstance(name, str) and name.isidentifier():
        return f"{path}.{name}.value"
    return f"{path}.__members__[{_short_repr(name)}].value"


def _key_path(path, key):
    return f"{path}[{_short_repr(key)}]"


def _short_repr(value, limit=60):
    try:
        text = repr(value)
    except Exception:
        return f"<{_type_name(value)} object>"
    if not isinstance(text, str):
        return f"<{_type_name(value)} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(obj):
    cls = type(obj)
    try:
        module = getattr(cls, "__module__", None)
        qualname = getattr(cls, "__qualname__", cls.__name__)
    except Exception:
        return cls.__name__
    if module in (None, "builtins"):
        return qualname
    return f"{module}.{qualname}"


def _safe_str(exc):
    try:
        return str(exc)
    except Exception:
        return ""


def _safe_vars(obj):
    try:
        own = object.__getattribute__(obj, "__dict__")
    except Exception:
        return {}
    try:
        return dict(own)
    except Exception:
        return {}


def _same_up_to_addresses(a, b):
    return _ADDRESS.sub("0x", a) == _ADDRESS.sub("0x", b)


# --- reporting ---


def _names_type(exc, culprit):
    """Whether the message of ``exc`` names the culprit's type."""
    message = _safe_str(exc)
    names = {type(culprit).__name__, _type_name(culprit)}
    return any(f"'{name}'" in message for name in names)


def _describe(exc, path, culprit):
    """``reached through PATH``, naming the culprit's type unless the
    message already does."""
    if _names_type(exc, culprit):
        return f"reached through {path}"
    return f"'{_type_name(culprit)}' object reached through {path}"


def _add_path(exc, path, culprit):
    detail = _describe(exc, path, culprit)
    try:
        setattr(exc, _MARK, path)
    except Exception:
        pass
    if sys.version_info >= (3, 11):
        exc.add_note(detail)
        return
    args = exc.args
    # Only where the message is the argument: a KeyError's is its key's repr.
    if len(args) == 1 and isinstance(args[0], str) and _safe_str(exc) == args[0]:
        exc.args = (f"{args[0]}, {detail}",)
