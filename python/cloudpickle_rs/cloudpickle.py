"""The module ``cloudpickle.cloudpickle``, served by cloudpickle-rs.

Pickles written by upstream cloudpickle (1.6 to 3.1) name their
reconstructors as ``cloudpickle.cloudpickle.<name>`` (or
``cloudpickle.cloudpickle_fast.<name>``); once :func:`cloudpickle_rs.install`
is active those names resolve here, to native equivalents with upstream's
signatures and behaviour. The private helpers that downstream code imports
from upstream's module are here too.
"""

import pickle
import sys
import types
from pickle import Unpickler, load, loads

from . import _native
from ._native import (
    Pickler,
    _class_setstate,
    _extract_code_globals,
    _file_reconstructor,
    _function_setstate,
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
    _whichmodule,
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

#: The classes of the ``types`` module by the name ``_builtin_type`` takes.
_BUILTIN_TYPE_NAMES = {
    value: name for name, value in vars(types).items() if type(value) is type
}


def instance(cls):
    """Create a new instance of a class."""
    return cls()


@instance
class _empty_cell_value:
    """Sentinel for empty closures (``_make_cell``'s default)."""

    @classmethod
    def __reduce__(cls):
        return cls.__name__


def _get_cell_contents(cell):
    """A cell's value, or ``_empty_cell_value`` for an empty cell."""
    try:
        return cell.cell_contents
    except ValueError:
        return _empty_cell_value


def _get_bases(typ):
    """``__orig_bases__`` when the class itself defines it (PEP 560), else ``__bases__``."""
    if "__orig_bases__" in getattr(typ, "__dict__", {}):
        return typ.__orig_bases__
    return typ.__bases__


def _extract_class_dict(cls):
    """A copy of ``cls.__dict__`` without the values it shares with its bases."""
    own = dict(cls.__dict__)
    inherited = {}
    for base in reversed(cls.__bases__):
        inherited.update(base.__dict__)
    return {
        name: value
        for name, value in own.items()
        if not (name in inherited and inherited[name] is value)
    }


def _find_imported_submodules(code, top_level_dependencies):
    """Submodules of the packages in ``top_level_dependencies`` that ``code``
    reaches by attribute names only (``import os.path`` then ``os.path.join``)."""
    names = set(code.co_names)
    found = []
    for dependency in top_level_dependencies:
        if not isinstance(dependency, types.ModuleType):
            continue
        if not getattr(dependency, "__package__", None):
            continue
        prefix = dependency.__name__ + "."
        for name in list(sys.modules):
            if name.startswith(prefix) and set(name[len(prefix) :].split(".")) <= names:
                found.append(sys.modules[name])
    return found


def __getattr__(name):
    # Upstream keeps the registry in a module-level set.
    if name == "_PICKLE_BY_VALUE_MODULES":
        return list_registry_pickle_by_value()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
