"""What a pickle ships by value: the functions, classes, enums, modules and
code objects its calls make, in cloudpickle-rs's format and in upstream
cloudpickle's, read field by field (see ``_layouts``)."""

import collections

from .._layouts import (
    CLASS_ARGS,
    CLASS_STATE,
    ENUM_ARGS,
    FUNCTION_ARGS,
    FUNCTION_STATE,
    STATE_AND_SLOTSTATE,
    UPSTREAM_DYNAMIC_SUBIMPORT,
    UPSTREAM_MAKE_FUNCTION,
    UPSTREAM_MAKE_SKELETON_CLASS,
    UPSTREAM_MAKE_SKELETON_ENUM,
    arguments_of,
    code_fields,
    code_fields_of_length,
)
from .._layouts import function_state as layouts_function_state
from .._trust import NATIVE, UPSTREAM_MODULES
from .machine import Call, Ref, SymDict, SymList, SymSet

MAKE_MODULE_ARGS = arguments_of("make_module")


class Shipped:
    """One function, class, enum, module or code object shipped by value."""

    def __init__(self, kind, call, name, qualname=None, module=None):
        self.kind, self.call = kind, call
        self.name, self.qualname, self.module = name, qualname or name, module
        self.filename = None
        self.firstlineno = None
        self.globals = []  # global names a function ships with it
        self.submodules = []
        self.members = []  # enum members, module namespace names
        self.code = None  # a function's code object (a Shipped of kind "code")
        self.owner = None
        self.size = sum(end - start for start, end in call.spans)
        self.own_size = self.size

    @property
    def display_name(self):
        if self.kind == "module":
            return self.name
        prefix = f"{self.module}." if self.module else ""
        return prefix + str(self.qualname)


def text(value):
    return value if isinstance(value, str) else None


def sym_dict(value):
    return value if isinstance(value, SymDict) else SymDict()


def callee(call):
    return call.func if isinstance(call.func, Ref) else None


def last_state(call):
    return call.states[-1] if call.states else None


def dict_keys(value):
    return value.str_keys() if isinstance(value, SymDict) else []


def module_names(value):
    items = value.items if isinstance(value, SymList) else value
    if not isinstance(items, (tuple, list)):
        return []
    return [item.module for item in items if isinstance(item, Ref) and item.name is None]


# ---------------------------------------------------------------------------
# Code objects.


class CodeSummary:
    """What the report tells of a code object."""

    __slots__ = ("name", "qualname", "filename", "firstlineno", "consts")

    def __init__(self, fields):
        self.name = text(fields.get("name"))
        self.qualname = text(fields.get("qualname", fields.get("name")))
        self.filename = text(fields.get("filename"))
        line = fields.get("firstlineno")
        self.firstlineno = line if type(line) is int else None
        self.consts = fields.get("consts")


def code_summary(call):
    """The :class:`CodeSummary` when ``call`` makes a code object: ours,
    ``make_code(blob, objects)``, or upstream's ``types.CodeType(*fields)``
    (the running version's arguments, told apart by their number); else None."""
    func = callee(call) if isinstance(call, Call) else None
    if func is None:
        return None
    if func.is_(NATIVE, "make_code"):
        fields = code_fields(call.args)
    elif func.is_("types", "CodeType") and isinstance(call.args, tuple):
        layout = code_fields_of_length(len(call.args))
        fields = layout and layout.read(call.args)
    else:
        return None
    return CodeSummary(fields) if fields else None


def shipped_code(call):
    summary = code_summary(call)
    if summary is None:
        return None
    item = Shipped("code", call, summary.name, summary.qualname)
    item.filename, item.firstlineno = summary.filename, summary.firstlineno
    return item


def nested_codes(call):
    summary = code_summary(call)
    consts = summary.consts if summary else None
    if not isinstance(consts, tuple):
        return []
    return [c for c in consts if isinstance(c, Call)]


# ---------------------------------------------------------------------------
# Functions.


def function_format(call):
    """``(layout of the arguments, ours)`` when ``call`` makes a function,
    else None. Upstream's ``_make_function`` takes ``types.FunctionType``'s
    arguments, which cloudpickle before 2.1 called directly (as
    ``_builtin_type("LambdaType")``)."""
    func = callee(call)
    if func is None:
        return None
    if func.is_(NATIVE, "make_function"):
        return FUNCTION_ARGS, True
    if func.is_upstream("_make_function") or func.is_("types", "FunctionType", "LambdaType"):
        return UPSTREAM_MAKE_FUNCTION, False
    return None


def function_state(call):
    """Our function's state: what ``function_setstate`` applies, or the
    fields after ``make_function``'s first arguments (a state of plain
    values travels there)."""
    return layouts_function_state(call.args, last_state(call))


def function_slotstate(call):
    """The attributes upstream's ``_function_setstate`` sets."""
    return sym_dict(STATE_AND_SLOTSTATE.get(last_state(call), "slotstate"))


def function_module(call):
    """The ``__name__`` of the globals a function is made with (None: unknown)."""
    layout, _ours = function_format(call) or (None, None)
    if layout is None:
        return None
    globals_ = layout.get(call.args, "globals")
    return text(globals_.get("__name__")) if isinstance(globals_, SymDict) else None


def function_code_call(call):
    """The call that makes a function's code object (or whatever the pickle gives)."""
    layout, _ours = function_format(call) or (None, None)
    return layout.get(call.args, "code") if layout else None


def given_function_name(call):
    """The name a function is made with, when given beside its code (None:
    the code's own, or not a function)."""
    found = function_format(call)
    if found is None:
        return None
    layout, ours = found
    if ours:
        return text(FUNCTION_ARGS.get(call.args, "name")) or text(FUNCTION_ARGS.get(call.args, "qualname"))
    return text(layout.get(call.args, "name"))


def shipped_function(call, codes):
    found = function_format(call)
    if found is None:
        return None
    _layout, ours = found
    code = codes.get(id(function_code_call(call)))
    code_name = code.name if code else None
    code_qualname = code.qualname if code else None
    module = function_module(call)
    if ours:
        state = function_state(call)
        name = text(FUNCTION_ARGS.get(call.args, "name")) or code_name
        qualname = text(FUNCTION_ARGS.get(call.args, "qualname")) or code_qualname
        module = text(FUNCTION_STATE.get(state, "module")) or module
        shipped_globals = dict_keys(FUNCTION_STATE.get(state, "globals"))
        submodules = module_names(FUNCTION_STATE.get(state, "submodules"))
    else:
        slots = function_slotstate(call)
        name = text(slots.get("__name__")) or text(UPSTREAM_MAKE_FUNCTION.get(call.args, "name")) or code_name
        qualname = text(slots.get("__qualname__")) or code_qualname
        module = text(slots.get("__module__")) or module
        shipped_globals = dict_keys(slots.get("__globals__"))
        submodules = module_names(slots.get("_cloudpickle_submodules"))
    item = Shipped("function", call, name or "?", qualname or name, module)
    item.code = code
    if code:
        item.filename, item.firstlineno = code.filename, code.firstlineno
    item.globals, item.submodules = shipped_globals, submodules
    return item


# ---------------------------------------------------------------------------
# Classes and enums.


class ClassFormat:
    """How a class or enum maker's call reads: the layout of its arguments,
    the field of its state holding the attributes, the fields (if any)
    holding the metaclass and the creation namespace."""

    __slots__ = ("kind", "args", "state", "attributes_field", "metaclass_field", "namespace_field")

    def __init__(self, kind, args, state, attributes_field, metaclass_field=None, namespace_field=None):
        self.kind, self.args, self.state = kind, args, state
        self.attributes_field = attributes_field
        self.metaclass_field, self.namespace_field = metaclass_field, namespace_field

    def arg(self, call, field):
        return self.args.get(call.args, field)

    def namespace(self, call):
        """The creation namespace (empty for an enum)."""
        return sym_dict(self.arg(call, self.namespace_field)) if self.namespace_field else SymDict()

    def metaclass(self, call):
        """The metaclass given (None for an enum: its bases' metaclass)."""
        return self.arg(call, self.metaclass_field) if self.metaclass_field else None

    def bases(self, call):
        bases = self.arg(call, "bases")
        return bases if isinstance(bases, tuple) else (bases,) if bases is not None else ()

    def attributes(self, state):
        """The attributes a state gives the class (None: not a state of this format)."""
        attributes = self.state.get(state, self.attributes_field)
        return attributes if isinstance(attributes, SymDict) else None


CLASS_FORMATS = {
    (NATIVE, "make_class"): ClassFormat("class", CLASS_ARGS, CLASS_STATE, "attributes", "metaclass", "namespace"),
    (NATIVE, "make_enum"): ClassFormat("enum", ENUM_ARGS, CLASS_STATE, "attributes"),
}
for _module in UPSTREAM_MODULES:
    CLASS_FORMATS[(_module, "_make_skeleton_class")] = ClassFormat(
        "class", UPSTREAM_MAKE_SKELETON_CLASS, STATE_AND_SLOTSTATE, "state", "type_constructor", "type_kwargs"
    )
    CLASS_FORMATS[(_module, "_make_skeleton_enum")] = ClassFormat(
        "enum", UPSTREAM_MAKE_SKELETON_ENUM, STATE_AND_SLOTSTATE, "state"
    )


def class_format(call):
    """The :class:`ClassFormat` of a call that makes a class or an enum, else None."""
    func = callee(call) if isinstance(call, Call) else None
    return CLASS_FORMATS.get(func.key) if func is not None else None


def registers_subclasses(setter, state):
    """Whether a class state setter registers ABC virtual subclasses: ours
    gets ``(attributes, registry)``, upstream's ``_abc_impl`` among the
    attributes. A state of another shape is assumed to."""
    ours = setter.is_(NATIVE, "class_setstate")
    layout = CLASS_STATE if ours else STATE_AND_SLOTSTATE
    if not isinstance(state, tuple) or len(state) != len(layout):
        return True
    if ours:
        registry = CLASS_STATE.get(state, "registry")
    else:
        attributes = STATE_AND_SLOTSTATE.get(state, "state")
        registry = attributes.get("_abc_impl") if isinstance(attributes, SymDict) else None
    if registry is None:
        return False
    items = registry.items if isinstance(registry, (SymList, SymSet)) else registry
    return not (isinstance(items, (tuple, list)) and not items)


def shipped_class(call):
    found = class_format(call)
    if found is None or found.kind != "class":
        return None
    attributes = found.attributes(last_state(call)) or SymDict()
    name = text(found.arg(call, "name"))
    if found.args is CLASS_ARGS:
        namespace = found.namespace(call)
        qualname = text(namespace.get("__qualname__"))
        module = text(namespace.get("__module__"))
    else:
        qualname = text(attributes.get("__qualname__"))
        module = text(found.namespace(call).get("__module__"))
    item = Shipped("class", call, name or "?", qualname or name, module)
    line = attributes.get("__firstlineno__")
    item.firstlineno = line if type(line) is int else None
    item.members = [k for k in attributes.str_keys() if not k.startswith("__")]
    return item


def shipped_enum(call):
    found = class_format(call)
    if found is None or found.kind != "enum":
        return None
    item = Shipped(
        "enum",
        call,
        text(found.arg(call, "name")) or "?",
        text(found.arg(call, "qualname")),
        text(found.arg(call, "module")),
    )
    item.members = dict_keys(found.arg(call, "members"))
    attributes = found.attributes(last_state(call))
    line = attributes.get("__firstlineno__") if attributes is not None else None
    item.firstlineno = line if type(line) is int else None
    return item


# ---------------------------------------------------------------------------
# Modules.


def shipped_module(call):
    func = callee(call)
    if func.is_(NATIVE, "make_module"):
        name = MAKE_MODULE_ARGS.get(call.args, "name")
        namespace = last_state(call)
    elif func.is_upstream("dynamic_subimport"):
        name = UPSTREAM_DYNAMIC_SUBIMPORT.get(call.args, "name")
        namespace = UPSTREAM_DYNAMIC_SUBIMPORT.get(call.args, "vars")
    else:
        return None
    item = Shipped("module", call, text(name) or "?")
    if isinstance(namespace, SymDict):
        item.filename = text(namespace.get("__file__"))
        item.members = [k for k in namespace.str_keys() if not k.startswith("__")]
    return item


# ---------------------------------------------------------------------------
# All of them.


def classify(calls):
    """The shipped objects among ``calls``, in the order loading makes them."""
    codes, nested = {}, set()
    for call in calls:
        code = shipped_code(call)
        if code is not None:
            codes[id(call)] = code
            nested.update(id(c) for c in nested_codes(call))
    items = []
    for call in calls:
        if callee(call) is None:
            continue
        item = (
            codes.get(id(call))
            or shipped_function(call, codes)
            or shipped_class(call)
            or shipped_enum(call)
            or shipped_module(call)
        )
        if item is not None:
            items.append(item)
    used_codes = {id(item.code) for item in items if item.code is not None}
    return [
        item for item in items if item.kind != "code" or (id(item) not in used_codes and id(item.call) not in nested)
    ]


def attribute_sizes(items, opcode_spans):
    """Sets ``own_size``: the bytes of the opcodes whose innermost enclosing
    span belongs to the item; and ``owner``: the innermost other item whose
    spans enclose the item's first one."""
    spans = sorted(
        ((start, end, item) for item in items for start, end in item.call.spans),
        key=lambda s: (s[0], -s[1]),
    )
    for item in items:
        item.own_size = 0
    open_spans, next_span = [], 0
    for pos, length in opcode_spans:
        while next_span < len(spans) and spans[next_span][0] <= pos:
            start, end, item = spans[next_span]
            if item.owner is None and (start, end) == item.call.spans[0]:
                item.owner = innermost_other(open_spans, item, pos)
            open_spans.append(spans[next_span])
            next_span += 1
        while open_spans and open_spans[-1][1] <= pos:
            open_spans.pop()
        if open_spans:
            open_spans[-1][2].own_size += length


def innermost_other(open_spans, item, pos):
    for _start, end, other in reversed(open_spans):
        if other is not item and end > pos:
            return other
    return None


def fill_class_files(items):
    """A class's source file: the one its methods were compiled from."""
    files = collections.defaultdict(collections.Counter)
    for item in items:
        if item.kind == "function" and item.owner is not None and item.filename:
            files[id(item.owner)][item.filename] += 1
    for item in items:
        if item.kind in ("class", "enum") and not item.filename and files[id(item)]:
            item.filename = files[id(item)].most_common(1)[0][0]
