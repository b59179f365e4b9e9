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
import sys
import types
import typing

from . import _native
from . import cloudpickle as _mirror
from ._layouts import (
    CLASS_ARGS,
    CLASS_STATE,
    ENUM_ARGS,
    FUNCTION_ARGS,
    FUNCTION_STATE,
    REDUCTION,
    STATE_AND_SLOTSTATE,
    TYPE_PARAMETER_ARGS,
    UPSTREAM_DYNAMIC_SUBIMPORT,
    UPSTREAM_MAKE_DICT_VIEW,
    UPSTREAM_MAKE_FUNCTION,
    UPSTREAM_MAKE_SKELETON_CLASS,
    UPSTREAM_MAKE_SKELETON_ENUM,
    UPSTREAM_MAKE_TYPEVAR,
    arguments_of,
    as_called,
    code_fields,
    code_fields_for,
    function_state,
    reduction,
)
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

_MAKE_MODULE_ARGS = arguments_of("make_module")
_MAKE_DICT_VIEW_ARGS = arguments_of("make_dict_view")
_CLASS_DICT_ITEM_ARGS = arguments_of("class_dict_item")
_MAKE_EXCEPTION_ARGS = arguments_of("make_exception")

#: The type-parameter keyword arguments upstream's ``_make_typevar`` takes.
_TYPEVAR_KWARGS = frozenset(("bound", "covariant", "contravariant"))


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
    args = REDUCTION.get(reduced, "args")
    closure = FUNCTION_ARGS.get(args, "closure")
    # A state of plain values travels as an argument, any other one apart.
    state = function_state(args, REDUCTION.get(reduced, "state"))
    annotate = FUNCTION_STATE.get(state, "annotate")
    if annotate is not None and FUNCTION_STATE.get(state, "annotations") is None:
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
        "_cloudpickle_submodules": list(FUNCTION_STATE.get(state, "submodules") or ()),
        "__globals__": FUNCTION_STATE.get(state, "globals") or {},
    }
    if getattr(func, "__type_params__", ()):
        slotstate["__type_params__"] = func.__type_params__
    made = UPSTREAM_MAKE_FUNCTION.make(
        code=FUNCTION_ARGS.get(args, "code"),
        globals=FUNCTION_ARGS.get(args, "globals"),
        name=None,
        argdefs=None,
        closure=None if closure is None else tuple(types.CellType() for _ in closure),
    )
    upstream_state = STATE_AND_SLOTSTATE.make(state=dict(func.__dict__), slotstate=slotstate)
    return reduction(_MAKE_FUNCTION, made, state=upstream_state, state_setter=_FUNCTION_SETSTATE)


_ABSENT = object()


def _cell(obj, reduced):
    """An empty cell is ``_make_empty_cell()``, a cell of a plain value
    ``_make_cell(value)``; any other value is set once the cell is memoized,
    through the cell's writable ``cell_contents`` (so that it may refer back
    to the cell)."""
    args = REDUCTION.get(reduced, "args")
    if args:
        return reduction(_MAKE_CELL, args)
    contents = REDUCTION.get(reduced, "state", _ABSENT)
    if contents is _ABSENT:
        return reduction(_MAKE_EMPTY_CELL, ())
    state = STATE_AND_SLOTSTATE.make(state=None, slotstate={"cell_contents": contents})
    return reduction(_MAKE_EMPTY_CELL, (), state=state)


def _code(obj, reduced):
    """``types.CodeType(*fields)``, the running version's arguments, read
    from our blob and its objects."""
    fields = code_fields(REDUCTION.get(reduced, "args"))
    return reduction(types.CodeType, tuple(fields[name] for name in code_fields_for(sys.version_info[:2]).fields))


def _class(obj, reduced):
    """``_make_skeleton_class(metaclass, name, bases, type_kwargs, tracker_id,
    None)`` then ``_class_setstate(cls, (attributes, {}))``, the ABC registry
    as ``_abc_impl``. The creation namespace keeps only what upstream's
    ``_class_getnewargs`` puts there (and ``__qualname__``, which upstream's
    ``types.new_class`` accepts): a ``__slots__`` would be refused by some
    metaclasses (NamedTuple's)."""
    args = CLASS_ARGS.read(REDUCTION.get(reduced, "args"))
    state = CLASS_STATE.read(REDUCTION.get(reduced, "state"))
    namespace = args["namespace"]
    kept = ("__module__", "__qualname__", "__dict__")
    type_kwargs = {key: namespace[key] for key in kept if key in namespace}
    made = UPSTREAM_MAKE_SKELETON_CLASS.make(
        type_constructor=args["metaclass"],
        name=args["name"],
        bases=args["bases"],
        type_kwargs=type_kwargs,
        class_tracker_id=args["tracker_id"],
        extra=None,
    )
    return reduction(_MAKE_SKELETON_CLASS, made, state=_upstream_class_state(state), state_setter=_CLASS_SETSTATE)


def _upstream_class_state(state):
    """``(attributes, {})``, the ABC registry (if any) as ``_abc_impl``."""
    attributes = dict(state["attributes"])
    if state["registry"] is not None:
        attributes["_abc_impl"] = list(state["registry"])
    return STATE_AND_SLOTSTATE.make(state=attributes, slotstate={})


def _enum(obj, reduced):
    """``_make_skeleton_enum(bases, name, qualname, members, module,
    tracker_id, None)`` then ``_class_setstate``."""
    args = ENUM_ARGS.read(REDUCTION.get(reduced, "args"))
    state = CLASS_STATE.read(REDUCTION.get(reduced, "state"))
    made = UPSTREAM_MAKE_SKELETON_ENUM.make(
        bases=args["bases"],
        name=args["name"],
        qualname=args["qualname"],
        members=args["members"],
        module=args["module"],
        class_tracker_id=args["tracker_id"],
        extra=None,
    )
    # Upstream's enums keep no ABC registry.
    upstream_state = STATE_AND_SLOTSTATE.make(state=dict(state["attributes"]), slotstate={})
    return reduction(_MAKE_SKELETON_ENUM, made, state=upstream_state, state_setter=_CLASS_SETSTATE)


def _type_parameter(obj, reduced):
    """A TypeVar upstream can describe is ``_make_typevar(...)`` (tracked, so
    loading it twice gives one object); any other type parameter, or a
    TypeVar with a default or inferred variance, is ``cls(name,
    *constraints, **kwargs)`` (not tracked: upstream has no way to)."""
    args = TYPE_PARAMETER_ARGS.read(REDUCTION.get(reduced, "args"))
    kwargs = args["kwargs"]
    if args["class"] is typing.TypeVar and set(kwargs) <= _TYPEVAR_KWARGS:
        made = UPSTREAM_MAKE_TYPEVAR.make(
            name=args["name"],
            bound=kwargs.get("bound"),
            constraints=args["constraints"],
            covariant=kwargs.get("covariant", False),
            contravariant=kwargs.get("contravariant", False),
            class_tracker_id=args["tracker_id"],
        )
        return reduction(_MAKE_TYPEVAR, made)
    return reduction(functools.partial(args["class"], **kwargs), (args["name"], *args["constraints"]))


def _module(obj, reduced):
    """An empty ``dynamic_subimport(name, {})`` whose namespace is set once
    it is memoized (by the standard BUILD into the module's ``__dict__``), so
    that objects inside may refer back to the module."""
    name = _MAKE_MODULE_ARGS.get(REDUCTION.get(reduced, "args"), "name")
    made = UPSTREAM_DYNAMIC_SUBIMPORT.make(name=name, vars={})
    return reduction(_DYNAMIC_SUBIMPORT, made, state=REDUCTION.get(reduced, "state"))


def _dict_view(obj, reduced):
    args = _MAKE_DICT_VIEW_ARGS.read(REDUCTION.get(reduced, "args"))
    made = UPSTREAM_MAKE_DICT_VIEW.make(obj=args["contents"], is_ordered=args["ordered"])
    return reduction(_MAKE_DICT_VIEW[args["kind"]], made)


def _class_dict_item(obj, reduced):
    """``vars(owner)[name]``: the descriptor itself, with the standard library."""
    args = _CLASS_DICT_ITEM_ARGS.read(REDUCTION.get(reduced, "args"))
    return reduction(operator.getitem, (_Call(vars, args["owner"]), args["name"]))


def _renamed(upstream):
    """A reduction whose arguments upstream's function takes as they are."""
    return lambda obj, reduced: REDUCTION.replace(reduced, callable=upstream)


def _exception(obj, reduced):
    """``BaseException.__new__(cls, *args)``, then its ``__dict__``: made
    without calling ``__init__``, which may take other arguments than
    ``args`` (upstream would call ``cls(*args)``)."""
    args = _MAKE_EXCEPTION_ARGS.read(REDUCTION.get(reduced, "args"))
    return REDUCTION.replace(reduced, callable=BaseException.__new__, args=(args["cls"], *args["args"]))


#: Our reconstructors by name (``_native.RECONSTRUCTORS``) -> how to write
#: their reductions for upstream. The state setters go with their makers;
#: the others have no upstream equivalent.
_TRANSLATIONS = {
    "make_function": _function,
    "make_cell": _cell,
    "make_code": _code,
    "make_class": _class,
    "make_enum": _enum,
    "make_type_parameter": _type_parameter,
    "make_module": _module,
    "make_dict_view": _dict_view,
    "class_dict_item": _class_dict_item,
    "make_method": _renamed(types.MethodType),
    "subimport": _renamed(_SUBIMPORT),
    "builtin_type": _renamed(_BUILTIN_TYPE),
    "dataclass_field_type": _renamed(_DATACLASS_FIELD_TYPE),
    "make_text_file": _renamed(_FILE_RECONSTRUCTOR),
    "make_exception": _exception,
}
# By identity: a reduction's callable may be any object, even unhashable.
_TRANSLATIONS_BY_ID = {id(_native.reconstructor(name)): translate for name, translate in _TRANSLATIONS.items()}


def _is_native(function):
    """A function of our extension: pickles naming it need cloudpickle-rs."""
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
        reduced = as_called(reduced)
        maker = REDUCTION.get(reduced, "callable")
        translate = _TRANSLATIONS_BY_ID.get(id(maker))
        if translate is not None:
            return translate(obj, reduced)
        if _is_native(maker):
            raise pickle.PicklingError(
                f"compat=True cannot write {type(obj).__name__} objects for "
                f"upstream cloudpickle (reduced with {maker.__name__})"
            )
        return reduced
