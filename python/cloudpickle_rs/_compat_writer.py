"""A Pickler whose output loads where only upstream cloudpickle 3.x is installed.

``dumps(obj, compat=True)`` and ``dump(..., compat=True)`` use
:class:`CompatPickler`: for a client upgraded before its workers. It reduces
every object as the native Pickler does, then rewrites each reduction that
names one of our reconstructors (``cloudpickle_rs._native.*``) into upstream
cloudpickle 3.1's format: ``cloudpickle.cloudpickle._make_function`` with
``(state, slotstate)``, ``types.CodeType(*args)``, ``_make_skeleton_class`` /
``_class_setstate``, ``_make_skeleton_enum``, ``_make_typevar``,
``subimport`` / ``dynamic_subimport`` and so on, or into plain standard
library calls. Reductions of anything else stay as they are.

The sender need not have upstream installed: the C pickler writes a global
only if it can import it, so upstream's functions are referenced through
stand-ins that pickle as ``getattr(importlib.import_module(
"cloudpickle.cloudpickle"), name)``, each written once per pickle (memoized).
"""

import functools
import importlib
import operator
import pickle
import types
import typing

from . import _native
from . import cloudpickle as _mirror
from ._native import Pickler

UPSTREAM_MODULE_NAME = "cloudpickle.cloudpickle"


class _UpstreamModule:
    """Pickles as the receiver's ``cloudpickle.cloudpickle`` module."""

    __slots__ = ()

    def __reduce__(self):
        return importlib.import_module, (UPSTREAM_MODULE_NAME,)

    def __repr__(self):
        return f"<stand-in for module {UPSTREAM_MODULE_NAME}>"


_UPSTREAM_MODULE = _UpstreamModule()


class _UpstreamFunction:
    """Pickles as ``cloudpickle.cloudpickle.<name>`` on the receiver; called
    here, runs our native function of the same name and behaviour (the C
    pickler requires a reduction's first item to be callable)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __call__(self, *args, **kwargs):
        return getattr(_mirror, self.name)(*args, **kwargs)

    def __reduce__(self):
        return getattr, (_UPSTREAM_MODULE, self.name)

    def __repr__(self):
        return f"<stand-in for {UPSTREAM_MODULE_NAME}.{self.name}>"


class _Call:
    """Pickles as ``function(*args)``, evaluated while loading."""

    __slots__ = ("function", "args")

    def __init__(self, function, *args):
        self.function = function
        self.args = args

    def __reduce__(self):
        return self.function, self.args


_STAND_INS = (_UpstreamModule, _UpstreamFunction, _Call)

_MAKE_FUNCTION = _UpstreamFunction("_make_function")
_FUNCTION_SETSTATE = _UpstreamFunction("_function_setstate")
_MAKE_EMPTY_CELL = _UpstreamFunction("_make_empty_cell")
_MAKE_CELL = _UpstreamFunction("_make_cell")
_MAKE_SKELETON_CLASS = _UpstreamFunction("_make_skeleton_class")
_MAKE_SKELETON_ENUM = _UpstreamFunction("_make_skeleton_enum")
_CLASS_SETSTATE = _UpstreamFunction("_class_setstate")
_MAKE_TYPEVAR = _UpstreamFunction("_make_typevar")
_SUBIMPORT = _UpstreamFunction("subimport")
_DYNAMIC_SUBIMPORT = _UpstreamFunction("dynamic_subimport")
_BUILTIN_TYPE = _UpstreamFunction("_builtin_type")
_FILE_RECONSTRUCTOR = _UpstreamFunction("_file_reconstructor")
_DATACLASS_FIELD_TYPE = _UpstreamFunction("_get_dataclass_field_type_sentinel")
_MAKE_DICT_VIEW = {
    "keys": _UpstreamFunction("_make_dict_keys"),
    "values": _UpstreamFunction("_make_dict_values"),
    "items": _UpstreamFunction("_make_dict_items"),
}

#: The type-parameter keyword arguments upstream's ``_make_typevar`` takes.
_TYPEVAR_KWARGS = frozenset(("bound", "covariant", "contravariant"))


def _state_field(state, name):
    """A field of our function state (see ``_native.FORMAT["function_state"]``), None
    where the state was cut short."""
    index = _native.FORMAT["function_state"].index(name)
    return state[index] if state is not None and index < len(state) else None


def _function(func, reduced):
    """``_make_function(code, base_globals, None, None, empty cells)``, then
    ``_function_setstate(func, (func.__dict__, slotstate))`` (upstream's
    ``_dynamic_function_reduce``): the closure's values arrive in the
    slotstate's ``__closure__``, once the function is memoized.

    The code, the base globals (shared by the functions of one ``__globals__``
    in this pickle), the closure (whose ``__classdict__`` cell holds only the
    names it is read for), the referenced globals (lazy imports resolved) and
    the annotations come from our reduction; the rest is read from the
    function, as upstream reads it."""
    args = reduced[1]
    code, base_globals = args[:2]
    closure = args[2] if len(args) > 2 else None
    state = reduced[2] if len(reduced) > 2 else (args[3] if len(args) > 3 else None)
    referenced = _state_field(state, "globals") or {}
    empty_cells = None if closure is None else tuple(types.CellType() for _ in closure)
    annotate = _state_field(state, "annotate")
    if annotate is not None and _state_field(state, "annotations") is None:
        # 3.14, annotations not computed yet: they stay lazy (upstream's
        # _function_setstate sets every slotstate item it does not know).
        annotations = ("__annotate__", annotate)
    else:
        annotations = ("__annotations__", func.__annotations__)
    slotstate = {
        "__name__": func.__name__,
        "__qualname__": func.__qualname__,
        annotations[0]: annotations[1],
        "__kwdefaults__": func.__kwdefaults__,
        "__defaults__": func.__defaults__,
        "__module__": func.__module__,
        "__doc__": func.__doc__,
        "__closure__": closure,
        "_cloudpickle_submodules": list(_state_field(state, "submodules") or ()),
        "__globals__": referenced,
    }
    if getattr(func, "__type_params__", ()):
        slotstate["__type_params__"] = func.__type_params__
    state = (dict(func.__dict__), slotstate)
    args = (code, base_globals, None, None, empty_cells)
    return _MAKE_FUNCTION, args, state, None, None, _FUNCTION_SETSTATE


def _cell(obj, reduced):
    """An empty cell is ``_make_empty_cell()``, a cell of a plain value
    ``_make_cell(value)``; any other value is set once the cell is memoized,
    through the cell's writable ``cell_contents`` (so that it may refer back
    to the cell)."""
    if len(reduced[1]) == 1:
        return _MAKE_CELL, reduced[1]
    if len(reduced) == 2:
        return _MAKE_EMPTY_CELL, ()
    return _MAKE_EMPTY_CELL, (), (None, {"cell_contents": reduced[2]})


def _code(obj, reduced):
    """``types.CodeType(*args)``: our arguments are already in the order of
    the running version's constructor (we add only the version tag)."""
    _version, args = reduced[1]
    return types.CodeType, args


def _class(obj, reduced):
    """``_make_skeleton_class(metaclass, name, bases, type_kwargs, tracker_id,
    None)`` then ``_class_setstate(cls, (attributes, {}))``, the ABC registry
    as ``_abc_impl``. The creation namespace keeps only what upstream's
    ``_class_getnewargs`` puts there (and ``__qualname__``, which upstream's
    ``types.new_class`` accepts): a ``__slots__`` would be refused by some
    metaclasses (NamedTuple's)."""
    metaclass, name, bases, namespace, tracker_id = reduced[1]
    attributes, registry = reduced[2]
    kept = ("__module__", "__qualname__", "__dict__")
    type_kwargs = {key: namespace[key] for key in kept if key in namespace}
    attributes = dict(attributes)
    if registry is not None:
        attributes["_abc_impl"] = list(registry)
    args = (metaclass, name, bases, type_kwargs, tracker_id, None)
    return _MAKE_SKELETON_CLASS, args, (attributes, {}), None, None, _CLASS_SETSTATE


def _enum(obj, reduced):
    """``_make_skeleton_enum(bases, name, qualname, members, module,
    tracker_id, None)`` then ``_class_setstate``."""
    attributes, _registry = reduced[2]
    args = tuple(reduced[1]) + (None,)
    return _MAKE_SKELETON_ENUM, args, (dict(attributes), {}), None, None, _CLASS_SETSTATE


def _type_parameter(obj, reduced):
    """A TypeVar upstream can describe is ``_make_typevar(...)`` (tracked, so
    loading it twice gives one object); any other type parameter, or a
    TypeVar with a default or inferred variance, is ``cls(name,
    *constraints, **kwargs)`` (not tracked: upstream has no way to)."""
    cls, name, constraints, kwargs, tracker_id = reduced[1]
    if cls is typing.TypeVar and set(kwargs) <= _TYPEVAR_KWARGS:
        args = (
            name,
            kwargs.get("bound"),
            constraints,
            kwargs.get("covariant", False),
            kwargs.get("contravariant", False),
            tracker_id,
        )
        return _MAKE_TYPEVAR, args
    return functools.partial(cls, **kwargs), (name,) + tuple(constraints)


def _module(obj, reduced):
    """An empty ``dynamic_subimport(name, {})`` whose namespace is set once
    it is memoized (by the standard BUILD into the module's ``__dict__``), so
    that objects inside may refer back to the module."""
    (name,) = reduced[1]
    return _DYNAMIC_SUBIMPORT, (name, {}), reduced[2]


def _dict_view(obj, reduced):
    kind, contents, ordered = reduced[1]
    return _MAKE_DICT_VIEW[kind], (contents, ordered)


def _class_dict_item(obj, reduced):
    """``vars(owner)[name]``: the descriptor itself, with the standard library."""
    owner, name = reduced[1]
    return operator.getitem, (_Call(vars, owner), name)


def _renamed(upstream):
    """A reduction whose arguments upstream's function takes as they are."""
    return lambda obj, reduced: (upstream,) + tuple(reduced[1:])


def _exception(obj, reduced):
    """``BaseException.__new__(cls, *args)``, then its ``__dict__``: made
    without calling ``__init__``, which may take other arguments than
    ``args`` (upstream would call ``cls(*args)``)."""
    cls, args = reduced[1]
    return (BaseException.__new__, (cls,) + tuple(args)) + tuple(reduced[2:])


_TRANSLATIONS = {
    _native.make_function: _function,
    _native.make_cell: _cell,
    _native.make_code: _code,
    _native.make_class: _class,
    _native.make_enum: _enum,
    _native.make_type_parameter: _type_parameter,
    _native.make_module: _module,
    _native.make_dict_view: _dict_view,
    _native.class_dict_item: _class_dict_item,
    _native.make_method: _renamed(types.MethodType),
    _native.subimport: _renamed(_SUBIMPORT),
    _native.builtin_type: _renamed(_BUILTIN_TYPE),
    _native.dataclass_field_type: _renamed(_DATACLASS_FIELD_TYPE),
    _native.make_text_file: _renamed(_FILE_RECONSTRUCTOR),
    _native.make_exception: _exception,
}
# By identity: a reduction's callable may be any object, even unhashable.
_TRANSLATIONS_BY_ID = {id(native): translate for native, translate in _TRANSLATIONS.items()}


def _is_native(function):
    return getattr(function, "__module__", None) == _native.__name__


class CompatPickler(Pickler):
    """Writes upstream cloudpickle's reconstructor references and formats."""

    def reducer_override(self, obj):
        if isinstance(obj, _STAND_INS):
            return obj.__reduce__()
        if type(obj) is types.TracebackType:
            # Upstream has no traceback reconstructor: an exception arrives
            # without its traceback, as upstream's own output has it.
            return type(None), ()
        reduced = super().reducer_override(obj)
        if type(reduced) is not tuple:
            return reduced
        translate = _TRANSLATIONS_BY_ID.get(id(reduced[0]))
        if translate is not None:
            return translate(obj, reduced)
        if _is_native(reduced[0]):
            raise pickle.PicklingError(
                f"compat=True cannot write {type(obj).__name__} objects for "
                f"upstream cloudpickle (reduced with {reduced[0].__name__})"
            )
        return reduced
