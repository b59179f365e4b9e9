"""Type stubs for the native module (Rust, PyO3); checked against it by
``python -m mypy.stubtest cloudpickle_rs._native`` (allowlist: stubtest-allowlist.txt)."""

import pickle
import types
from collections import ChainMap
from collections.abc import Iterable
from typing import IO, Any, Callable, final

__all__ = [
    "BUILT_FOR_PYTHON",
    "__version__",
    "FORMAT",
    "make_code",
    "SortedFrozenSet",
    "make_function",
    "function_setstate",
    "builtin_type",
    "make_class",
    "make_enum",
    "class_setstate",
    "make_type_parameter",
    "subimport",
    "make_module",
    "module_setstate",
    "make_exception",
    "make_traceback",
    "make_lru_cache",
    "make_singledispatch",
    "make_singledispatchmethod",
    "make_context_var",
    "make_cell",
    "cell_set",
    "make_method",
    "class_dict_item",
    "make_dict_view",
    "dataclass_field_type",
    "make_text_file",
    "reconstructor",
    "rebuild_v2",
    "RECONSTRUCTORS",
    "_make_function",
    "_function_setstate",
    "_make_empty_cell",
    "_make_cell",
    "dynamic_subimport",
    "_make_skeleton_class",
    "_lookup_class_or_track",
    "_make_skeleton_enum",
    "_class_setstate",
    "_make_typevar",
    "_make_dict_keys",
    "_make_dict_values",
    "_make_dict_items",
    "_file_reconstructor",
    "_get_dataclass_field_type_sentinel",
    "_whichmodule",
    "_lookup_module_and_qualname",
    "_is_registered_pickle_by_value",
    "_should_pickle_by_reference",
    "_extract_code_globals",
    "_find_imported_submodules",
    "_extract_class_dict",
    "_get_bases",
    "_get_cell_contents",
    "Pickler",
    "DispatchTableDescriptor",
    "dumps",
    "dump",
    "register_pickle_by_value",
    "unregister_pickle_by_value",
    "list_registry_pickle_by_value",
    "_tracked",
    "_code_fields",
    "_reconstructor_of",
    "VENDORED_CLOUDPICKLE",
    "PYTHON_VERSION",
]

# --- pickling ---

@final
class DispatchTableDescriptor:
    """``Pickler.dispatch_table``: the default ``ChainMap`` on the class, an
    instance's own table on an instance."""

    def __get__(self, instance: Pickler | None, owner: type | None = None, /) -> Any: ...
    def __set__(self, instance: Pickler, value: Any, /) -> None: ...
    def __delete__(self, instance: Pickler, /) -> None: ...

class Pickler(pickle.Pickler):
    """A pickle.Pickler that pickles lambdas, nested functions and the
    functions of ``__main__`` by value, as cloudpickle does."""

    #: A DispatchTableDescriptor: the default table on the class, an
    #: instance's own (or the default) on an instance.
    dispatch_table: ChainMap[type, Callable[[Any], Any]]
    dispatch: ChainMap[type, Callable[[Any], Any]]
    #: Set once the pickler pickled a function by value: its globals dicts by id.
    globals_ref: dict[int, dict[str, Any]]
    def __new__(cls, *_args: Any, compat: bool = False, **_kwargs: Any) -> Pickler: ...
    def __init__(
        self,
        file: IO[bytes],
        protocol: int | None = None,
        buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None,
        *,
        compat: bool = False,
    ) -> None: ...
    def reducer_override(self, obj: Any, /) -> Any: ...
    def dump(self, obj: Any, /) -> None: ...

def dumps(
    obj: Any,
    protocol: int | None = None,
    buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None,
    *,
    compat: bool = False,
) -> bytes: ...
def dump(
    obj: Any,
    file: IO[bytes],
    protocol: int | None = None,
    buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None,
    *,
    compat: bool = False,
) -> None: ...
def register_pickle_by_value(module: types.ModuleType) -> None: ...
def unregister_pickle_by_value(module: types.ModuleType) -> None: ...
def list_registry_pickle_by_value() -> set[str]: ...

@final
class SortedFrozenSet:
    """A frozenset constant of a code object, pickled with its items sorted."""

    def __reduce__(self) -> tuple[type, tuple[Iterable[Any]]]: ...

# --- constants ---

#: ``(major, minor)`` of the CPython the module runs on.
PYTHON_VERSION: tuple[int, int]
#: This package's version (Cargo.toml's, the one version source).
__version__: str
#: The CPython minor version the extension was compiled for, e.g. ``"3.11"``.
BUILT_FOR_PYTHON: str
#: Each pickle layout's field names by position (``_layouts`` reads them).
FORMAT: dict[str, tuple[str, ...]]
#: Our reconstructors' names, by the number ``rebuild_v2`` calls them by.
RECONSTRUCTORS: tuple[str, ...]
#: The modules that vendor a copy of upstream cloudpickle.
VENDORED_CLOUDPICKLE: tuple[str, ...]

# --- our reconstructors: a pickle names rebuild_v2 and calls the others through it ---

#: ``rebuild_v2(number, *args)`` is ``RECONSTRUCTORS[number](*args)``;
#: ``rebuild_v2(name)`` is that reconstructor.
rebuild_v2: Callable[..., Any]

def reconstructor(name: str, format: int | None = None) -> Callable[..., Any]: ...
def _tracked(id: str) -> Any: ...
def _code_fields(blob: bytes, objects: tuple[Any, ...]) -> dict[str, Any]: ...
def _reconstructor_of(callable: Any) -> Any: ...
def make_function(
    code: types.CodeType,
    globals: dict[str, Any],
    closure: tuple[types.CellType, ...] | None = None,
    name: str | None = None,
    qualname: str | None = None,
    *state: Any,
) -> types.FunctionType: ...
def function_setstate(func: types.FunctionType, state: tuple[Any, ...]) -> None: ...
def make_code(blob: bytes, objects: tuple[Any, ...]) -> types.CodeType: ...
def make_cell(*contents: Any) -> types.CellType: ...
def cell_set(cell: types.CellType, value: Any) -> None: ...
def make_method(func: Callable[..., Any], obj: Any) -> types.MethodType: ...
def subimport(name: str) -> types.ModuleType: ...
def make_module(name: str) -> types.ModuleType: ...
def module_setstate(module: types.ModuleType, namespace: dict[str, Any]) -> None: ...
def builtin_type(name: str) -> type: ...
def make_type_parameter(
    cls: type, name: str, constraints: tuple[Any, ...], kwargs: dict[str, Any], tracker_id: str
) -> Any: ...
def make_class(
    metaclass: type, name: str, bases: tuple[Any, ...], namespace: dict[str, Any], tracker_id: str
) -> type: ...
def make_enum(
    bases: tuple[type, ...],
    name: str,
    qualname: str,
    members: dict[str, Any],
    module: Any,
    tracker_id: str,
) -> type: ...
def class_setstate(cls: type, state: tuple[dict[str, Any], tuple[type, ...] | None]) -> None: ...
def class_dict_item(owner: type, name: str) -> Any: ...
def make_dict_view(kind: str, contents: Any, ordered: bool) -> Any: ...
def dataclass_field_type(name: str) -> Any: ...
def make_exception(cls: type, args: tuple[Any, ...]) -> BaseException: ...
def make_traceback(frames: tuple[tuple[str, str, int], ...]) -> types.TracebackType | None: ...
def make_text_file(contents: Any) -> Any: ...
def make_lru_cache(function: Callable[..., Any], maxsize: int | None, typed: bool) -> Callable[..., Any]: ...
def make_singledispatch(
    default: Callable[..., Any], registrations: tuple[tuple[Any, Callable[..., Any]], ...]
) -> Callable[..., Any]: ...
def make_singledispatchmethod(
    function: Callable[..., Any], registrations: tuple[tuple[Any, Callable[..., Any]], ...]
) -> Any: ...
def make_context_var(name: str, default: tuple[Any, ...], tracker_id: str) -> Any: ...

# --- upstream cloudpickle's names (src/compat.rs), served by cloudpickle_rs.cloudpickle ---

def _make_function(
    code: types.CodeType, globals: dict[str, Any], name: Any, argdefs: Any, closure: Any
) -> types.FunctionType: ...
def _function_setstate(func: types.FunctionType, state: tuple[Any, Any]) -> None: ...
def _make_empty_cell() -> types.CellType: ...
def _make_cell(*value: Any) -> types.CellType: ...
def dynamic_subimport(name: str, vars: dict[str, Any]) -> types.ModuleType: ...
def _make_skeleton_class(
    type_constructor: type,
    name: str,
    bases: tuple[Any, ...],
    type_kwargs: dict[str, Any],
    class_tracker_id: str | None,
    extra: Any,
) -> type: ...
def _lookup_class_or_track(class_tracker_id: str | None, class_def: Any) -> Any: ...
def _make_skeleton_enum(
    bases: tuple[type, ...],
    name: str,
    qualname: str,
    members: dict[str, Any],
    module: Any,
    class_tracker_id: str,
    extra: Any,
) -> type: ...
def _class_setstate(cls: type, state: tuple[Any, Any]) -> type: ...
def _make_typevar(
    name: str,
    bound: Any,
    constraints: tuple[Any, ...],
    covariant: bool,
    contravariant: bool,
    class_tracker_id: str,
) -> Any: ...
def _make_dict_keys(obj: Iterable[Any], is_ordered: bool = False) -> Any: ...
def _make_dict_values(obj: Iterable[Any], is_ordered: bool = False) -> Any: ...
def _make_dict_items(obj: Any, is_ordered: bool = False) -> Any: ...
def _file_reconstructor(retval: Any) -> Any: ...
def _get_dataclass_field_type_sentinel(name: str) -> Any: ...
def _whichmodule(obj: Any, name: Any) -> str | None: ...
def _lookup_module_and_qualname(obj: Any, name: str | None = None) -> tuple[types.ModuleType, str] | None: ...
def _is_registered_pickle_by_value(module: types.ModuleType) -> bool: ...
def _should_pickle_by_reference(obj: Any, name: str | None = None) -> bool: ...
def _extract_code_globals(co: types.CodeType) -> dict[str, None]: ...
def _find_imported_submodules(
    code: types.CodeType, top_level_dependencies: Iterable[Any]
) -> list[types.ModuleType]: ...
def _extract_class_dict(cls: type) -> dict[str, Any]: ...
def _get_bases(typ: type) -> tuple[Any, ...]: ...
def _get_cell_contents(cell: types.CellType) -> Any: ...
