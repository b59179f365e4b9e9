"""The module ``cloudpickle.cloudpickle``, served by cloudpickle-rs.

Pickles written by upstream cloudpickle (1.6 to 3.1) name their
reconstructors as ``cloudpickle.cloudpickle.<name>`` (or
``cloudpickle.cloudpickle_fast.<name>``); once :func:`cloudpickle_rs.install`
is active those names resolve here, to native equivalents with upstream's
signatures and behaviour. The private helpers that downstream code imports
from upstream's module are here too.
"""

import importlib
import pickle
import sys
import types
import warnings
from pickle import Unpickler, load, loads

from . import _native
from ._native import (
    Pickler,
    _class_setstate,
    _extract_class_dict,
    _extract_code_globals,
    _file_reconstructor,
    _find_imported_submodules,
    _function_setstate,
    _get_bases,
    _get_cell_contents,
    _get_dataclass_field_type_sentinel,
    _is_registered_pickle_by_value,
    _lookup_class_or_track,
    _lookup_module_and_qualname,
    _make_cell,
    _make_dict_items,
    _make_dict_keys,
    _make_dict_values,
    _make_empty_cell,
    _make_function,
    _make_skeleton_class,
    _make_skeleton_enum,
    _make_typevar,
    _should_pickle_by_reference,
    dump,
    dumps,
    dynamic_subimport,
    list_registry_pickle_by_value,
    register_pickle_by_value,
    subimport,
    unregister_pickle_by_value,
)

_builtin_type = _native.builtin_type

DEFAULT_PROTOCOL = pickle.HIGHEST_PROTOCOL
CloudPickler = Pickler
CellType = types.CellType
PYPY = False
builtin_code_type = None  # upstream's PyPy-only type

#: Public names upstream's module has because of its imports: each module by
#: its name, the others as (module, attribute). Resolved on first access, so
#: that importing cloudpickle-rs does not import them all.
_UPSTREAM_IMPORTED_MODULES = (
    "abc", "builtins", "copyreg", "dataclasses", "dis", "io", "itertools",
    "logging", "opcode", "platform", "struct", "threading", "typing", "uuid",
    "warnings", "weakref",
)  # fmt: skip
_UPSTREAM_IMPORTED_NAMES = {
    "ChainMap": ("collections", "ChainMap"),
    "OrderedDict": ("collections", "OrderedDict"),
    "Enum": ("enum", "Enum"),
    "HAVE_ARGUMENT": ("dis", "HAVE_ARGUMENT"),
    "EXTENDED_ARG": ("dis", "EXTENDED_ARG"),
}
_UPSTREAM_GLOBAL_OPS = ("STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_GLOBAL")

#: The classes of the ``types`` module by the name ``_builtin_type`` takes.
_BUILTIN_TYPE_NAMES = {value: name for name, value in vars(types).items() if type(value) is type}


def instance(cls):
    """Create a new instance of a class."""
    return cls()


@instance
class _empty_cell_value:
    """Sentinel for empty closures (``_make_cell``'s default)."""

    @classmethod
    def __reduce__(cls):
        return cls.__name__


def _whichmodule(obj, name):
    """The name of the module where ``obj`` is found as ``name``.

    Upstream answers ``cloudpickle.cloudpickle`` for its own functions even
    when their ``__module__`` was cleared; ours answer the same while served.
    """
    served = "cloudpickle.cloudpickle"
    if getattr(obj, "__module__", None) is None and sys.modules.get(served) is _this_module:
        if vars(_this_module).get(name) is obj:
            return served
    return _native._whichmodule(obj, name)


def is_tornado_coroutine(func):
    """Whether ``func`` is a Tornado coroutine function (deprecated, as upstream's)."""
    warnings.warn(
        "is_tornado_coroutine is deprecated in cloudpickle 3.0 and will be "
        "removed in cloudpickle 4.0; use tornado.gen.is_coroutine_function.",
        DeprecationWarning,
        stacklevel=2,
    )
    gen = sys.modules.get("tornado.gen")
    is_coroutine_function = getattr(gen, "is_coroutine_function", None)
    return bool(is_coroutine_function is not None and is_coroutine_function(func))


def _upstream_incidental(name):
    """The value of one of upstream's incidental public names, or KeyError."""
    if name in _UPSTREAM_IMPORTED_MODULES:
        return importlib.import_module(name)
    if name in _UPSTREAM_IMPORTED_NAMES:
        module, attribute = _UPSTREAM_IMPORTED_NAMES[name]
        return getattr(importlib.import_module(module), attribute)
    if name in _UPSTREAM_GLOBAL_OPS:
        return importlib.import_module("opcode").opmap[name]
    if name == "GLOBAL_OPS":
        return tuple(_upstream_incidental(op) for op in _UPSTREAM_GLOBAL_OPS)
    raise KeyError(name)


def _lazy_attribute(module_name, name):
    # Upstream keeps the registry in a module-level set.
    if name == "_PICKLE_BY_VALUE_MODULES":
        return list_registry_pickle_by_value()
    try:
        return _upstream_incidental(name)
    except KeyError:
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}") from None


def __getattr__(name):
    return _lazy_attribute(__name__, name)


#: Every name :func:`_upstream_incidental` resolves.
_UPSTREAM_INCIDENTAL_NAMES = frozenset(
    (*_UPSTREAM_IMPORTED_MODULES, *_UPSTREAM_IMPORTED_NAMES, *_UPSTREAM_GLOBAL_OPS, "GLOBAL_OPS")
)


def __dir__():
    return sorted(set(globals()) | _UPSTREAM_INCIDENTAL_NAMES)


_this_module = sys.modules[__name__]


__all__ = [
    "Pickler",
    "CloudPickler",
    "dumps",
    "loads",
    "dump",
    "load",
    "register_pickle_by_value",
    "unregister_pickle_by_value",
    "list_registry_pickle_by_value",
    "DEFAULT_PROTOCOL",
    "Unpickler",
]
