"""What each position of a pickled tuple holds, by field name.

Our layouts (a reconstructor's arguments, a state tuple) are declared once,
in Rust beside the code that writes them, and exported as ``_native.FORMAT``
(or are the reconstructor's signature); upstream cloudpickle's are the
signatures of its reconstructors, which the extension serves under their
names (src/compat.rs); a reduction
``(callable, args, state, listitems, dictitems, state_setter)`` is pickle's
own protocol. Code that reads such a tuple asks for a field by its name:

    FUNCTION_ARGS.get(args, "closure")
    code_fields(args)["qualname"]
"""

import functools
import inspect
import pickle

from . import _native


class Layout:
    """The field names of a tuple, by position. A tuple may be cut short
    after its last meaningful item (our pickles leave trailing Nones out):
    a field past its end reads as the default."""

    __slots__ = ("name", "fields", "_positions")

    def __init__(self, name, fields):
        self.name = name
        self.fields = tuple(fields)
        self._positions = {field: i for i, field in enumerate(self.fields)}

    def __len__(self):
        return len(self.fields)

    def __repr__(self):
        return f"<layout {self.name}: {', '.join(self.fields)}>"

    def has(self, field):
        return field in self._positions

    def get(self, values, field, default=None):
        """``values``'s ``field``, or ``default`` where ``values`` is not a
        tuple or ends before it."""
        i = self._positions[field]
        if isinstance(values, tuple) and i < len(values):
            return values[i]
        return default

    def read(self, values):
        """``{field: value}`` for every field (None where ``values`` ends before it)."""
        return {field: self.get(values, field) for field in self.fields}

    def replace(self, values, **fields):
        """``values`` with the given fields replaced (the rest as they were)."""
        items = list(values)
        for field, value in fields.items():
            i = self._positions[field]
            items.extend([None] * (i + 1 - len(items)))
            items[i] = value
        return tuple(items)

    def make(self, **values):
        """The tuple of the given fields, in order, cut after the last one
        given (a field between two given ones is None)."""
        unknown = set(values) - set(self.fields)
        if unknown:
            raise TypeError(f"{self.name} has no field {', '.join(sorted(unknown))}")
        last = max((self._positions[field] for field in values), default=-1)
        return tuple(values.get(field) for field in self.fields[: last + 1])


def _ours(name):
    return Layout(name, _native.FORMAT[name])


FUNCTION_ARGS = _ours("function_args")
FUNCTION_STATE = _ours("function_state")
CODE_ARGS = _ours("code_args")
CLASS_ARGS = _ours("class_args")
ENUM_ARGS = _ours("enum_args")
CLASS_STATE = _ours("class_state")
TYPE_PARAMETER_ARGS = _ours("type_parameter_args")


def function_state(args, state=None):
    """Our function's state: ``state``, what ``function_setstate`` applies,
    else the fields written after ``make_function``'s first arguments (a
    state of plain values travels there); None if there is none."""
    if state is None and isinstance(args, tuple) and len(args) > len(FUNCTION_ARGS):
        return args[len(FUNCTION_ARGS) :]
    return state


def code_fields(args):
    """What our ``make_code``'s arguments hold, by field name: the
    ``types.CodeType`` arguments of the CPython that wrote them, its
    ``version`` and the ``format`` (see ``_native._code_fields``); None when
    they are not a blob and its objects."""
    blob, objects = CODE_ARGS.get(args, "blob"), CODE_ARGS.get(args, "objects")
    if type(blob) is not bytes or type(objects) is not tuple:
        return None
    try:
        return _native._code_fields(blob, objects)
    except (ValueError, pickle.UnpicklingError):
        return None


@functools.cache
def arguments_of(name):
    """The layout of the positional arguments of the extension's function
    ``name`` (one of our reconstructors without a layout in ``FORMAT``, or
    one of upstream's), from its signature."""
    parameters = inspect.signature(getattr(_native, name)).parameters.values()
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return Layout(name, [p.name for p in parameters if p.kind in positional])


_CODE_FIELDS_PREFIX = "code_fields_"


def _code_field_layouts():
    """``[((major, minor), layout)]``, oldest first: the ``types.CodeType``
    arguments from each version on."""
    found = []
    for name in _native.FORMAT:
        if name.startswith(_CODE_FIELDS_PREFIX):
            major, minor = name[len(_CODE_FIELDS_PREFIX) :].split(".")
            found.append(((int(major), int(minor)), _ours(name)))
    return sorted(found, key=lambda pair: pair[0])


CODE_FIELDS = _code_field_layouts()


def code_fields_for(version):
    """The layout of ``types.CodeType``'s arguments on ``version`` ``(major,
    minor)``; None for anything else."""
    if not (isinstance(version, tuple) and len(version) == 2 and all(type(v) is int for v in version)):
        return None
    found = None
    for since, layout in CODE_FIELDS:
        if since <= version:
            found = layout
    return found


def code_fields_of_length(count):
    """The layout of ``types.CodeType``'s arguments as upstream cloudpickle
    writes them, without a version: the newest with ``count`` fields (3.9's
    and 3.10's differ only in the name of the line table); None if none has."""
    found = None
    for _since, layout in CODE_FIELDS:
        if len(layout) == count:
            found = layout
    return found


#: ``__reduce__``'s tuple (pickle's protocol).
REDUCTION = Layout("reduction", ("callable", "args", "state", "listitems", "dictitems", "state_setter"))
#: How the unpickler calls a reduction's ``state_setter``.
SETTER_CALL = Layout("state_setter call", ("obj", "state"))


def reduction(func, args, **rest):
    """``(func, args, ...)``, cut after its last given part (see :data:`REDUCTION`)."""
    return REDUCTION.make(callable=func, args=args, **rest)


def as_called(reduced):
    """A reduction of ours, ``(rebuild_v2, (number, *fields), ...)`` or
    ``(stand-in, fields, ...)``, as the call it makes: ``(reconstructor,
    fields, ...)``; any other as it is."""
    func = REDUCTION.get(reduced, "callable")
    if func is not _native.rebuild_v2:
        made_by = _native._reconstructor_of(func)
        return reduced if made_by is func else REDUCTION.replace(reduced, callable=made_by)
    args = REDUCTION.get(reduced, "args")
    if args and type(args[0]) is int and 0 <= args[0] < len(_native.RECONSTRUCTORS):
        maker = getattr(_native, _native.RECONSTRUCTORS[args[0]])
        return REDUCTION.replace(reduced, callable=maker, args=args[1:])
    return reduced


# Upstream cloudpickle's reconstructors (cloudpickle.cloudpickle).
UPSTREAM_MAKE_FUNCTION = arguments_of("_make_function")
UPSTREAM_MAKE_SKELETON_CLASS = arguments_of("_make_skeleton_class")
UPSTREAM_MAKE_SKELETON_ENUM = arguments_of("_make_skeleton_enum")
UPSTREAM_MAKE_TYPEVAR = arguments_of("_make_typevar")
UPSTREAM_DYNAMIC_SUBIMPORT = arguments_of("dynamic_subimport")
#: ``_make_dict_keys``, ``_make_dict_values`` and ``_make_dict_items`` alike.
UPSTREAM_MAKE_DICT_VIEW = arguments_of("_make_dict_keys")
#: The state pickle's BUILD applies by default: ``__dict__`` items, then
#: attributes set one by one; upstream's ``_function_setstate`` and
#: ``_class_setstate`` take the same pair.
STATE_AND_SLOTSTATE = Layout("(state, slotstate)", ("state", "slotstate"))
