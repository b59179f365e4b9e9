"""What loading a pickle may reach when only some modules are trusted.

One set of rules, used by ``python -m cloudpickle_rs inspect --allow`` (which
reports what breaks them, without loading) and by
``cloudpickle_rs.loads(data, allow=...)`` / :class:`RestrictedUnpickler`
(which refuses to load a pickle that breaks them, before anything runs).

Both run the pickle through the inspector's symbolic machine
(``_inspect.Machine``): globals are names, calls are records of callee and
arguments. :meth:`Policy.refusals` then checks

* every global loading would look up, and every module and attribute it
  would reach through calls with constant arguments (``subimport("os")``,
  ``getattr(module, "name")``): the module must be allowed (a module allows
  its submodules); cloudpickle-rs's own reconstructors and a few harmless
  builtins are allowed without being listed; no name may pass through the
  interpreter's internals (``__globals__``, ``__builtins__``, ``__self__``...);
* every call loading would make: the callee must be such a global, never a
  function the pickle ships by value nor anything else the pickle computes;
  a class the pickle ships by value may be instantiated, called, filled
  (``BUILD``, ``APPENDS``...) or hashed only when it ships no method that
  this would run (``__new__``, ``__init__``, ``__setstate__``, ``__hash__``,
  a metaclass's ``__init__``...);
* that loading modifies only objects the pickle made, never a module, class
  or function it looked up.

The loader also checks, as it resolves them, the objects these names lead to
(which the inspector, importing nothing, cannot see): a name that reaches
another module through an attribute (``dataclasses.builtins``) is refused
unless that module is allowed too (:meth:`Policy.step_refusal`).
"""

import builtins
import sys
import types

from . import _native
from ._layouts import SETTER_CALL, STATE_AND_SLOTSTATE, UPSTREAM_MAKE_DICT_VIEW, arguments_of

NATIVE = _native.__name__
UPSTREAM_MODULES = (
    "cloudpickle",
    "cloudpickle.cloudpickle",
    "cloudpickle.cloudpickle_fast",
    "cloudpickle_rs.cloudpickle",
    "cloudpickle_rs.cloudpickle_fast",
)
#: Our package: pickles may use only its reconstructors, even when allowed
#: (``cloudpickle_rs.loads`` would load a nested pickle without restriction).
OWN_PACKAGES = ("cloudpickle_rs", "cloudpickle")


#: Our reconstructors (declared in the extension); a pickle names
#: :data:`REBUILD` as its one global and calls them through it.
RECONSTRUCTORS = frozenset(_native.RECONSTRUCTORS)
#: ``cloudpickle_rs.rebuild_v2`` (the format's version in its name).
REBUILD = (type(_native.rebuild_v2).__module__, _native.FORMAT["global"])
#: Upstream cloudpickle's load-side functions, as pickles written by
#: cloudpickle 1.6 to 3.1 (and by ``dumps(..., compat=True)``) name them;
#: ``cloudpickle_rs.cloudpickle`` serves native equivalents.
UPSTREAM_RECONSTRUCTORS = frozenset(
    """_make_function _function_setstate _make_empty_cell _make_cell
    _builtin_type subimport dynamic_subimport _make_skeleton_class
    _lookup_class_or_track _make_skeleton_enum _class_setstate _make_typevar
    _make_dict_keys _make_dict_values _make_dict_items _file_reconstructor
    _get_dataclass_field_type_sentinel _empty_cell_value""".split()
)

# How a reference was reached: directly by an opcode, or through a call.
DIRECT_HOWS = ("GLOBAL", "STACK_GLOBAL", "INST", "EXT")
# References resolved by our reconstructors to fixed, harmless targets.
EXEMPT_HOWS = ("reconstructor", "builtin_type")
#: The name the symbolic machine gives what only loading would know.
COMPUTED = "?"

#: Attributes that lead from an object into the interpreter's internals or
#: to other modules' objects; no name a pickle looks up may pass through one.
BLOCKED_ATTRIBUTES = frozenset(
    """__builtins__ __globals__ __self__ __dict__ __class__ __base__ __bases__
    __mro__ __subclasses__ __getattribute__ __getattr__ __loader__ __spec__
    __closure__ __import__ __reduce__
    __reduce_ex__ __setattr__ __delattr__ __init_subclass__ __set_name__
    __getstate__ __setstate__ __call__""".split()
)
#: ... except these, as a module's own name (``builtins.__import__`` is the
#: import function, whose calls are checked as imports).
ALLOWED_DUNDERS_FIRST = frozenset(["__import__"])

# Builtins allowed without allowing ``builtins`` (which would allow eval).
#: Harmless to look up and to call with plain data: they store or convert it.
SAFE_BUILTIN_CLASSES = frozenset(
    """object bool int float complex str bytes bytearray tuple list dict set
    frozenset frozendict slice range classmethod staticmethod property""".split()
)
#: Harmless to look up (functions that compute, classes of iterators), not to call.
SAFE_BUILTIN_VALUES = frozenset(
    """abs all any ascii bin callable chr divmod enumerate filter format hash
    hex id isinstance issubclass iter len map max memoryview min next oct ord
    pow repr reversed round sorted sum super type zip Ellipsis NotImplemented""".split()
)
#: The builtin exception classes: harmless to look up and to call with
#: plain data (``ValueError("bad")`` pickles as that call).
BUILTIN_EXCEPTIONS = frozenset(
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)
)
#: Builtins whose calls only wrap their arguments (any arguments).
WRAPPERS = frozenset(["classmethod", "staticmethod", "property"])
#: Builtins that, called on a list, tuple, set or dict, only copy (or hash) its items.
COLLECTIONS = frozenset(["list", "tuple", "set", "frozenset", "dict", "frozendict"])  # 3.15: frozendict

#: Functions that import a module named by their first argument.
IMPORTERS = frozenset(
    [(NATIVE, "subimport"), ("importlib", "import_module"), ("builtins", "__import__")]
    + [(module, "subimport") for module in UPSTREAM_MODULES]
)
#: The reconstructors that set the state of what another reconstructor made,
#: by the kind of object they need.
STATE_SETTERS = {
    (NATIVE, "function_setstate"): "function",
    (NATIVE, "class_setstate"): "class",
    (NATIVE, "module_setstate"): "module",
    (NATIVE, "cell_set"): "cell",
}
STATE_SETTERS.update(
    {(m, "_function_setstate"): "function" for m in UPSTREAM_MODULES}
    | {(m, "_class_setstate"): "class" for m in UPSTREAM_MODULES}
)
#: What each maker makes: its callee (module, name) -> kind.
MAKERS = {
    (NATIVE, "make_function"): "function",
    (NATIVE, "make_class"): "class",
    (NATIVE, "make_enum"): "enum",
    (NATIVE, "make_module"): "module",
    (NATIVE, "make_cell"): "cell",
    (NATIVE, "make_code"): "code",
    (NATIVE, "make_method"): "method",
    (NATIVE, "make_type_parameter"): "type parameter",
    ("types", "FunctionType"): "function",
    ("types", "LambdaType"): "function",
    ("types", "CodeType"): "code",
    ("types", "CellType"): "cell",
    ("types", "MethodType"): "method",
    ("types", "ModuleType"): "module",
}
for _module in UPSTREAM_MODULES:
    MAKERS.update(
        {
            (_module, "_make_function"): "function",
            (_module, "_make_skeleton_class"): "class",
            (_module, "_make_skeleton_enum"): "enum",
            (_module, "dynamic_subimport"): "module",
            (_module, "_make_cell"): "cell",
            (_module, "_make_empty_cell"): "cell",
            (_module, "_make_typevar"): "type parameter",
        }
    )
CLASS_KINDS = ("class", "enum")
#: Kinds whose objects run no code of the pickle when looked at, hashed,
#: iterated or converted (a function runs only when called).
INERT_KINDS = ("function", "code", "cell", "module", "type parameter")
#: Our reconstructors whose results may hold (or be) objects of classes
#: shipped by value; the others make objects of the interpreter's own types.
NOT_INERT_RECONSTRUCTORS = frozenset(
    """make_class make_enum make_exception make_dict_view class_dict_item
    make_method _make_skeleton_class _make_skeleton_enum _make_dict_keys
    _make_dict_values _make_dict_items _lookup_class_or_track""".split()
)

# The methods each operation on an object (or class) shipped by value would run.
NEWOBJ_HOOKS = frozenset(["__new__", "__del__"])
CALL_HOOKS = frozenset(["__new__", "__init__", "__del__", "_missing_", "__getinitargs__"])
META_CALL_HOOKS = frozenset(["__call__", "__getattribute__", "__getattr__"])
BUILD_HOOKS = frozenset(["__setstate__", "__getattribute__", "__getattr__"])
HASH_HOOKS = frozenset(["__hash__", "__eq__"])
LOOKUP_HOOKS = frozenset(["__getattribute__", "__getattr__"])
APPEND_HOOKS = frozenset(["append", "extend"]) | LOOKUP_HOOKS
SETITEM_HOOKS = frozenset(["__setitem__"])
ADD_HOOKS = frozenset(["add"]) | LOOKUP_HOOKS
#: A metaclass's, when it makes a class and fills it.
META_MAKE_HOOKS = frozenset(["__new__", "__init__", "__prepare__", "__setattr__"])
META_REGISTER_HOOKS = frozenset(["register", "__subclasscheck__", "__instancecheck__"])
#: A base's, when a class is made from it (an enum's bases also make its members).
BASE_HOOKS = frozenset(["__init_subclass__", "__mro_entries__"])
ENUM_BASE_HOOKS = BASE_HOOKS | frozenset(
    [
        "__new__",
        "__init__",
        "_generate_next_value_",
        "__set_name__",
        "__hash__",
        "__eq__",
        "__setattr__",
        "__getattr__",
        "__getattribute__",
        "__del__",
    ]
)
GETITEM_HOOKS = frozenset(["__getitem__", "__class_getitem__"])
#: What our reconstructors that wrap a callable or register classes may run
#: on them (``functools.update_wrapper`` reads attributes; a dispatch
#: registry hashes classes, looks up ``__abstractmethods__`` and shows a bad
#: one in its error).
LOOKED_AT_HOOKS = LOOKUP_HOOKS | HASH_HOOKS | frozenset(["__repr__"])
#: Those reconstructors: which argument each wraps, and which holds
#: ``(class, implementation)`` registrations.
WRAPPING_RECONSTRUCTORS = {
    "make_lru_cache": ("function", None),
    "make_singledispatch": ("default", "registrations"),
    "make_singledispatchmethod": ("function", "registrations"),
}
MAKE_EXCEPTION_ARGS = arguments_of("make_exception")
CLASS_DICT_ITEM_ARGS = arguments_of("class_dict_item")
MAKE_DICT_VIEW_ARGS = arguments_of("make_dict_view")
#: Attributes of an object (not its class) that the unpickler looks up and calls.
CALLED_ATTRIBUTES = frozenset(["__setstate__", "append", "extend", "add"])

# Globals of the standard library that our pickles (and the standard
# pickler's) call, allowed without listing their module, as long as their
# arguments are what the rules below require.
COPYREG_RECONSTRUCTOR = (("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor"))
CODECS_ENCODE = ("_codecs", "encode")
GETITEM = (("_operator", "getitem"), ("operator", "getitem"))


def is_own_package(module):
    return any(module == p or module.startswith(p + ".") for p in OWN_PACKAGES)


def is_importer(module, name):
    return (module, name) in IMPORTERS


def is_state_setter(module, name):
    return (module, name) in STATE_SETTERS


def maker_kind(module, name):
    return MAKERS.get((module, name))


def blocked_part(name, first_allows=ALLOWED_DUNDERS_FIRST):
    """The first part of the dotted ``name`` that is one of the blocked
    attributes (or empty, or computed), else None."""
    for i, part in enumerate(name.split(".")):
        if not part or part == COMPUTED:
            return part or "''"
        if part in BLOCKED_ATTRIBUTES and not (i == 0 and part in first_allows):
            return part
    return None


def modernise(module, name):
    """``(module, name)`` as the unpickler resolves a Python 2 name (protocol
    0 to 2, ``fix_imports``): ``__builtin__.unicode`` is ``builtins.str``."""
    import _compat_pickle

    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def normalise_allow(allow):
    if isinstance(allow, (str, bytes)):
        raise TypeError("allow must be an iterable of module names, not a single string")
    try:
        names = tuple(allow)
    except TypeError:
        raise TypeError(f"allow must be an iterable of module names, not {type(allow).__name__}") from None
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"allow must hold module names (str), not {type(name).__name__}")
        if not name or name.startswith(".") or name.endswith("."):
            raise ValueError(f"not a module name: {name!r}")
    return names


class Refusal:
    """One thing loading would do that the rules forbid."""

    __slots__ = ("module", "name", "how", "offset", "reason")

    def __init__(self, module, name, how, offset, reason):
        self.module, self.name, self.how = module, name, how
        self.offset, self.reason = offset, reason

    @property
    def target(self):
        return self.module if self.name is None else f"{self.module}.{self.name}"

    def __str__(self):
        at = f" at offset {self.offset}" if self.offset is not None else ""
        return f"{self.target} ({self.how}{at}): {self.reason}"


class Policy:
    """The rules for one allow list."""

    def __init__(self, allow):
        self.allowed = normalise_allow(allow)
        self.builtins_allowed = self.allows_module("builtins")

    # -- names

    def allows_module(self, module):
        return isinstance(module, str) and any(module == a or module.startswith(a + ".") for a in self.allowed)

    def import_refusal(self, module):
        """Why importing ``module`` by name is refused, or None."""
        if not isinstance(module, str) or module == COMPUTED:
            return "the name of the module to import is computed while loading"
        if module == "builtins":
            return None  # always imported; what is looked up in it is checked
        if not self.allows_module(module):
            return f"module {module} is not allowed"
        return None

    def global_refusal(self, module, name, protocol=4):
        """Why looking up ``module.name`` (a dotted name: attribute after
        attribute) is refused, or None. Pickles of protocol 0 to 2 may name
        Python 2 modules; they are checked as the unpickler maps them."""
        if not isinstance(module, str) or not isinstance(name, str):
            return "a global's module and name must be strings"
        if protocol < 3:
            module, name = modernise(module, name)
        if module == COMPUTED:
            return "the module is computed while loading"
        blocked = blocked_part(name)
        if blocked is not None:
            return f"the name passes through {blocked}"
        first = name.partition(".")[0]
        if (module, name) == REBUILD:
            return None
        if module == NATIVE:
            if name in RECONSTRUCTORS or name == "reconstructor" or name in UPSTREAM_RECONSTRUCTORS:
                return None
            return f"{NATIVE}.{name} is not one of cloudpickle-rs's reconstructors"
        if module in UPSTREAM_MODULES and name in UPSTREAM_RECONSTRUCTORS:
            if self.allows_module(module):
                return None
            return f"module {module} is not allowed"
        if is_own_package(module):
            return f"{module}.{name} is not one of cloudpickle's reconstructors"
        if module == "builtins" and not self.builtins_allowed:
            if name == "getattr" or (
                name == first
                and (first in SAFE_BUILTIN_CLASSES or first in SAFE_BUILTIN_VALUES or first in BUILTIN_EXCEPTIONS)
            ):
                return None
            if first in SAFE_BUILTIN_CLASSES and name.count(".") == 1 and name.endswith(".__new__"):
                return None  # object.__new__, tuple.__new__: no code of the pickle
            return "module builtins is not allowed"
        if (module, name) in COPYREG_RECONSTRUCTOR or (module, name) == CODECS_ENCODE:
            return None  # arguments checked where it is called
        if (module, name) in GETITEM:
            return None
        if not self.allows_module(module):
            return f"module {module} is not allowed"
        return None

    def reference_refusal(self, module, name, how, protocol=4):
        """Why a reference the symbolic machine reports is refused, or None."""
        if how == "reconstructor":
            if name in RECONSTRUCTORS:
                return None
            return f"cloudpickle-rs has no reconstructor named {name!r}"
        if how == "builtin_type":
            # What builtin_type gives: a class of the types module (upstream's
            # _builtin_type would give any attribute, types.new_class too).
            if (module, name) == ("builtins", "type") or isinstance(getattr(types, str(name), None), type):
                return None
            return f"types.{name} is not a class"
        if how == "import":
            return self.import_refusal(module)
        return self.global_refusal(module, name, protocol if how in DIRECT_HOWS else 4)

    # -- objects (the loader, as it resolves names)

    def module_object_allowed(self, module):
        """Whether ``module`` (an object) is an allowed module: by its own name
        or by a name it is registered under (``os.path`` is ``posixpath``)."""
        if self.allows_module(getattr(module, "__name__", None)):
            return True
        return any(m is module and self.allows_module(n) for n, m in list(sys.modules.items()))

    def step_refusal(self, owner, attr, value):
        """Why ``getattr(owner, attr)``, which gave ``value``, is refused: a
        blocked attribute, or another module than the allowed ones."""
        if not isinstance(attr, str):
            return "attribute names must be strings"
        if attr in BLOCKED_ATTRIBUTES:
            return f"the name passes through {attr}"
        if isinstance(value, types.ModuleType):
            if self.module_object_allowed(value):
                return None
            return f"it is the module {getattr(value, '__name__', '?')}, which is not allowed"
        return None

    # -- what the symbolic machine found

    def refusals(self, machine):
        """Every :class:`Refusal` for the pickle the machine ran."""
        return Scan(self, machine).run()


class Scan:
    """The checks of :meth:`Policy.refusals` over one machine's findings."""

    def __init__(self, policy, machine):
        from . import _inspect as sym
        from ._inspect import shipped

        self.sym, self.shipped, self.policy, self.machine = sym, shipped, policy, machine
        self.protocol = machine.protocol
        self.found = []
        self.seen = set()

    def refuse(self, module, name, how, offset, reason):
        key = (module, name, how, reason)
        if key not in self.seen:
            self.seen.add(key)
            self.found.append(Refusal(module, name, how, offset, reason))

    def run(self):
        protocols = self.machine.protocols
        if len(protocols) > 1 or (protocols and protocols[0][0] != 0):
            pos = protocols[-1][0]
            self.refuse("pickle", "PROTO", "PROTO", pos, "the protocol must be given once, by the first opcode")
        for ref in self.machine.refs:
            reason = self.policy.reference_refusal(*ref.key, ref.how)
            if reason is not None:
                self.refuse(ref.module, ref.name, ref.how, ref.offset, reason)
        for call in self.machine.calls:
            self.check_call(call)
        for op, target, state, pos in self.machine.mutations:
            self.check_mutation(op, target, state, pos)
        for value, pos in self.machine.hashed:
            self.check_hashed(value, pos)
        return self.found

    # -- what a symbol is

    def ref_key(self, value):
        """``(module, name)`` of a Ref as the unpickler resolves it, else None."""
        return value.key if isinstance(value, self.sym.Ref) else None

    def kind(self, value):
        """What a Call makes ("function", "class", ...), else None."""
        if isinstance(value, self.sym.Call):
            key = self.ref_key(value.func)
            if key is not None:
                return maker_kind(*key)
        return None

    def is_class(self, value):
        return self.kind(value) in CLASS_KINDS

    def label(self, value):
        """(module, qualified name) to name a symbol in a refusal."""
        if isinstance(value, self.sym.Ref):
            return value.module, value.name
        if isinstance(value, self.sym.Call):
            kind = self.kind(value)
            if kind in CLASS_KINDS:
                name = self.shipped.class_format(value).arg(value, "name")
                return self.class_module(value), name if isinstance(name, str) else "?"
            if kind == "function":
                module = self.shipped.function_module(value) or "<shipped by value>"
                return module, self.function_name(value)
            func = value.func
            if isinstance(func, self.sym.Ref):
                return func.module, f"{func.name}(...)"
            return "<computed>", "?"
        return "<computed>", type(value).__name__

    def class_module(self, cls):
        for key, value in self.attributes(cls):
            if key == "__module__" and isinstance(value, str):
                return value
        found = self.shipped.class_format(cls)
        module = found.arg(cls, "module") if found.kind == "enum" else None
        return module if isinstance(module, str) else "<shipped by value>"

    def function_name(self, func):
        shipped = self.shipped
        name = shipped.given_function_name(func)
        if name is not None:
            return name
        code = shipped.code_summary(shipped.function_code_call(func))
        return (code.qualname or code.name if code else None) or "<function>"

    # -- a class shipped by value: its attributes, bases, metaclass, hooks

    def attributes(self, cls):
        """(name, value) pairs a class shipped by value gets: its creation
        namespace and the attributes its state setter gives it."""
        found = self.shipped.class_format(cls)
        pairs = list(found.namespace(cls).pairs)
        for state in cls.states:
            attributes = found.attributes(state)
            if attributes is not None:
                pairs.extend(attributes.pairs)
        return pairs

    def bases(self, cls):
        return self.shipped.class_format(cls).bases(cls)

    def metaclass(self, cls):
        """The metaclass symbol of a class shipped by value (None: trusted)."""
        found = self.shipped.class_format(cls)
        if found.kind == "class":
            return found.metaclass(cls)
        bases = self.bases(cls)
        return self.metaclass(bases[-1]) if bases and self.is_class(bases[-1]) else None

    def hooks(self, cls, names, seen=None):
        """Which of ``names`` the class (or its bases shipped by value) ships
        as code of the pickle. A computed class that is not a class shipped
        by value is assumed to ship them all."""
        sym = self.sym
        if cls is None or isinstance(cls, sym.Ref):
            return set()
        seen = set() if seen is None else seen
        if id(cls) in seen:
            return set()
        seen.add(id(cls))
        if not self.is_class(cls):
            if isinstance(cls, sym.Call) and isinstance(cls.func, sym.Ref):
                # What an allowed function made (``Generic[T]``, ``Box[int]``):
                # its code is trusted, but not that of the classes it was given.
                found = set()
                for given in self.instance_classes(cls):
                    found |= self.hooks(given, names, seen)
                return found
            return set(names) if self.is_computed(cls) else set()
        found = {key for key, value in self.attributes(cls) if key in names and self.is_computed(value)}
        for base in self.bases(cls):
            found |= self.hooks(base, names, seen)
        return found

    def meta_hooks(self, cls, names):
        return self.hooks(self.metaclass(cls), names) if self.is_class(cls) else set()

    def is_computed(self, value):
        """A value only loading makes (a call's result, a persistent id), not
        a constant, container or global."""
        return isinstance(value, (self.sym.Call, self.sym.Opaque))

    def instance_classes(self, value):
        """The classes shipped by value that ``value`` may be an instance of:
        the class it calls, or (an allowed function given a class, as
        ``copyreg._reconstructor(cls, ...)``, ``getattr(Enum, "member")``)
        the classes among its arguments."""
        sym = self.sym
        if not isinstance(value, sym.Call):
            return []
        func = value.func
        if self.is_class(func):
            return [func]
        if isinstance(func, sym.Ref) and self.kind(value) is None:
            module, name = func.key
            ours = (module == NATIVE and name != "make_exception") or (
                module in UPSTREAM_MODULES and name in UPSTREAM_RECONSTRUCTORS
            )
            if ours:
                return []  # they set classes up, or make objects of their own
            args = value.args if isinstance(value.args, tuple) else ()
            return [a for a in args if self.is_class(a)]
        return []

    def inert(self, value, depth=0):
        """Whether looking at, hashing, iterating or converting ``value``
        runs no code of the pickle."""
        sym = self.sym
        if depth > 50:
            return False
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes, sym.Ref)):
            return True
        if isinstance(value, tuple):
            return all(self.inert(v, depth + 1) for v in value)
        if isinstance(value, (sym.SymList, sym.SymSet)):
            return all(self.inert(v, depth + 1) for v in value.items)
        if isinstance(value, sym.SymDict):
            return all(self.inert(k, depth + 1) and self.inert(v, depth + 1) for k, v in value.pairs)
        if isinstance(value, sym.Call):
            if self.kind(value) in INERT_KINDS:
                return True
            key = self.ref_key(value.func)
            if key is None:
                return False
            module, name = key
            if module == NATIVE and name in RECONSTRUCTORS:
                return name not in NOT_INERT_RECONSTRUCTORS
            if module in UPSTREAM_MODULES and name in UPSTREAM_RECONSTRUCTORS:
                return name not in NOT_INERT_RECONSTRUCTORS
            if module == "builtins" and (name in SAFE_BUILTIN_CLASSES or name in BUILTIN_EXCEPTIONS or name == "type"):
                return True  # checked as calls themselves
            if key == CODECS_ENCODE:
                return True
        return False

    def plain(self, value):
        """A constant, global or container the pickle builds (whatever it holds)."""
        sym = self.sym
        return isinstance(value, (tuple, sym.SymList, sym.SymSet, sym.SymDict)) or self.inert(value)

    # -- calls

    def check_call(self, call):
        sym = self.sym
        func, args = call.func, call.args
        args = args if isinstance(args, tuple) else None
        op = getattr(call, "op", "REDUCE")
        if not isinstance(func, sym.Ref):
            self.check_computed_call(call, func, op)
            return
        key = self.ref_key(func)
        if key is None or args is None:
            if args is None and op in ("REDUCE", "NEWOBJ", "NEWOBJ_EX"):
                self.refuse(func.module, func.name, "call", call.start, "its arguments are computed while loading")
            return
        module, name = key
        for cls in self.instance_classes(call):
            hooks = self.hooks(cls, frozenset(["__del__"]))
            if hooks:
                self.refuse_hooks(cls, hooks, call.start, "making an instance of")
        if (module, name) in STATE_SETTERS:
            self.check_state_setter(call, STATE_SETTERS[(module, name)], args)
        kind = maker_kind(module, name)
        if kind in CLASS_KINDS:
            self.check_class_maker(call, kind, args)
        if module == "builtins" and not self.policy.builtins_allowed:
            self.check_safe_builtin(call, name, args)
        elif module == "builtins" and name == "getattr":
            # No name through the interpreter's internals, whatever is allowed.
            blocked = blocked_part(args[1], frozenset()) if len(args) > 1 and isinstance(args[1], str) else None
            if blocked is not None:
                self.refuse("builtins", "getattr", "call", call.start, f"the name passes through {blocked}")
            self.check_getattr(call, args)
        if module == "builtins" and name in ("set", "frozenset") and args:
            for item in getattr(args[0], "items", ()) or ():
                self.check_hashed(item, call.start)
        if (module, name) in COPYREG_RECONSTRUCTOR:
            self.check_copyreg_reconstructor(call, args)
        elif (module, name) == CODECS_ENCODE:
            if not (1 <= len(args) <= 2 and all(isinstance(a, str) for a in args)):
                self.refuse(module, name, "call", call.start, "its arguments must be strings")
        elif (module, name) in GETITEM:
            self.check_getitem(call, args)
        elif (module, name) in ((NATIVE, "make_exception"),):
            cls = MAKE_EXCEPTION_ARGS.get(args, "cls")
            hooks = self.hooks(cls, frozenset(["__setattr__", "args"]))
            if hooks:
                self.refuse_hooks(cls, hooks, call.start, "making an exception of")
        elif module == NATIVE and name in WRAPPING_RECONSTRUCTORS:
            self.check_wrapping(call, name, args)
        elif (module, name) == (NATIVE, "class_dict_item"):
            owner = CLASS_DICT_ITEM_ARGS.get(args, "owner")
            hooks = self.meta_hooks(owner, LOOKUP_HOOKS)
            if hooks:
                self.refuse_hooks(self.metaclass(owner), hooks, call.start, "reading the namespace of")
        elif (module, name) == (NATIVE, "make_dict_view") or (module in UPSTREAM_MODULES and name == "_make_dict_keys"):
            if module == NATIVE:
                is_keys = MAKE_DICT_VIEW_ARGS.get(args, "kind") == "keys"
                contents = MAKE_DICT_VIEW_ARGS.get(args, "contents") if is_keys else None
            else:
                contents = UPSTREAM_MAKE_DICT_VIEW.get(args, "obj")
            for item in getattr(contents, "items", ()) or ():
                self.check_hashed(item, call.start)

    def check_wrapping(self, call, name, args):
        """``make_lru_cache``, ``make_singledispatch``...: the wrapped callable
        and the registered classes are looked at; their registrations must be
        written out, not computed."""
        layout = arguments_of(name)
        wrapped_field, registrations_field = WRAPPING_RECONSTRUCTORS[name]
        missing = object()
        wrapped = layout.get(args, wrapped_field, missing)
        if wrapped is not missing:
            self.check_looked_at(wrapped, call.start, "wrapping")
        registrations = layout.get(args, registrations_field, missing) if registrations_field else missing
        if registrations is missing:
            return
        if not isinstance(registrations, tuple):
            self.refuse(NATIVE, name, "call", call.start, "its registrations are computed while loading")
            return
        for pair in registrations:
            if not isinstance(pair, tuple):
                self.refuse(NATIVE, name, "call", call.start, "its registrations are computed while loading")
            elif pair:
                self.check_looked_at(pair[0], call.start, "registering")

    def check_looked_at(self, value, pos, verb):
        """``value`` has its attributes read, is hashed or shown: no method
        shipped by value may run."""
        if self.is_class(value):
            hooks = self.meta_hooks(value, LOOKED_AT_HOOKS)
            if hooks:
                self.refuse_hooks(self.metaclass(value), hooks, pos, f"{verb} a class of")
            return
        for cls in self.instance_classes(value):
            hooks = self.hooks(cls, LOOKED_AT_HOOKS)
            if hooks:
                self.refuse_hooks(cls, hooks, pos, f"{verb} an instance of")

    def check_computed_call(self, call, func, op):
        """A call of something the pickle made: refused, except making or
        calling a class shipped by value that ships no method it would run."""
        module, name = self.label(func)
        if self.is_class(func):
            if op in ("NEWOBJ", "NEWOBJ_EX"):
                hooks = self.hooks(func, NEWOBJ_HOOKS)
                verb = "creating an instance of"
            else:
                hooks = self.hooks(func, CALL_HOOKS) | self.meta_hooks(func, META_CALL_HOOKS)
                verb = "calling"
            if hooks:
                self.refuse_hooks(func, hooks, call.start, verb)
            return
        kind = self.kind(func)
        if kind == "function":
            reason = "it is a function shipped by value: calling it would run the pickle's code"
        elif kind is not None:
            reason = f"it is a {kind} made by the pickle: calling it would run the pickle's code"
        else:
            reason = "it is computed while loading: the pickle may only call allowed globals"
        self.refuse(module, name, op.lower() if op != "REDUCE" else "call", call.start, reason)

    def refuse_hooks(self, cls, hooks, offset, verb):
        module, name = self.label(cls)
        what = ", ".join(sorted(hooks))
        self.refuse(module, name, "class shipped by value", offset, f"{verb} it would run {what}, shipped by value")

    def check_state_setter(self, call, needed, args):
        target = SETTER_CALL.get(args, "obj")
        kind = self.kind(target)
        if needed == "class":
            ok = kind in CLASS_KINDS
        elif needed == "function":
            ok = kind == "function"
        else:
            ok = kind == needed
        if not ok:
            module, name = self.label(target) if target is not None else ("?", None)
            self.refuse(
                module, name, "modified", call.start, f"loading would change a {needed} the pickle did not make"
            )
            return
        if needed == "class":
            meta = self.meta_hooks(target, frozenset(["__setattr__"]))
            if self.shipped.registers_subclasses(call.func, SETTER_CALL.get(args, "state")):
                meta |= self.meta_hooks(target, META_REGISTER_HOOKS)
                own = self.hooks(target, frozenset(["register", "__subclasshook__"]))
                if own:
                    self.refuse_hooks(target, own, call.start, "registering virtual subclasses of")
            if meta:
                self.refuse_hooks(self.metaclass(target), meta, call.start, "setting the attributes of a class of")

    def check_class_maker(self, call, kind, args):
        """A class shipped by value: its metaclass and bases must not run
        code of the pickle while it is made; its namespace must be inert."""
        sym = self.sym
        found = self.shipped.class_format(call)
        meta, bases = found.metaclass(call), found.bases(call)
        if meta is not None and not isinstance(meta, sym.Ref):
            if self.is_class(meta):
                hooks = self.hooks(meta, META_MAKE_HOOKS) | self.meta_hooks(meta, META_CALL_HOOKS)
                if hooks:
                    self.refuse_hooks(meta, hooks, call.start, "making a class with the metaclass")
            else:
                module, name = self.label(meta)
                self.refuse(module, name, "metaclass", call.start, "the metaclass is computed while loading")
        base_hooks = ENUM_BASE_HOOKS if kind == "enum" else BASE_HOOKS
        for base in bases:
            if isinstance(base, sym.Ref):
                continue
            made_by_allowed = isinstance(base, sym.Call) and isinstance(base.func, sym.Ref)
            if not self.is_class(base) and not made_by_allowed:
                module, name = self.label(base)
                self.refuse(module, name, "base class", call.start, "a base class is computed while loading")
                continue
            hooks = self.hooks(base, base_hooks) | self.meta_hooks(base, META_MAKE_HOOKS)
            if hooks:
                self.refuse_hooks(base, hooks, call.start, "deriving a class from")
        for key, value in found.namespace(call).pairs:
            if not self.inert(value) and not self.is_class(value):
                module, name = self.label(value)
                self.refuse(
                    module, name, "class namespace", call.start, f"the value of {key!r} is computed while loading"
                )

    def check_safe_builtin(self, call, name, args):
        """A builtin called without ``builtins`` being allowed."""
        if name == "getattr":
            if len(args) != 2 or not isinstance(args[1], str):
                self.refuse(
                    "builtins",
                    "getattr",
                    "call",
                    call.start,
                    "getattr needs a constant attribute name (builtins is not allowed)",
                )
                return
            blocked = blocked_part(args[1], frozenset())
            if blocked is not None:
                self.refuse("builtins", "getattr", "call", call.start, f"the name passes through {blocked}")
                return
            self.check_getattr(call, args)
            return
        if name in WRAPPERS or (name == "type" and len(args) == 1):
            return
        if name in SAFE_BUILTIN_CLASSES or name in BUILTIN_EXCEPTIONS:
            if name == "object" and args:
                self.refuse("builtins", name, "call", call.start, "object() takes no arguments here")
            check = self.plain if name in COLLECTIONS else self.inert
            if not all(check(a) for a in args):
                self.refuse("builtins", name, "call", call.start, "its arguments include objects whose code would run")
            return
        if name.endswith(".__new__"):
            return  # object.__new__(cls): no code of the pickle
        self.refuse("builtins", name, "call", call.start, "calling it is allowed only when builtins is allowed")

    def check_getattr(self, call, args):
        """``getattr(obj, name)`` on a class or instance shipped by value: no
        attribute hook (a metaclass's ``__getattr__``, a descriptor) may run."""
        if len(args) < 2:
            return
        owner, attr = args[0], args[1]
        if self.is_class(owner):
            hooks = self.meta_hooks(owner, LOOKUP_HOOKS) | self.hooks(owner, frozenset(["__get__"]))
            value = self.attribute(owner, attr)
            if value is not None:
                for cls in self.instance_classes(value):
                    hooks |= self.hooks(cls, frozenset(["__get__"]))
            if hooks:
                self.refuse_hooks(owner, hooks, call.start, f"looking up {attr!r} on")
            return
        for cls in self.instance_classes(owner):
            hooks = self.hooks(cls, LOOKUP_HOOKS)
            value = self.attribute(cls, attr)
            if value is not None and self.is_computed(value) and self.kind(value) != "function":
                hooks.add(attr if isinstance(attr, str) else "?")
            if hooks:
                self.refuse_hooks(cls, hooks, call.start, f"looking up {attr!r} on an instance of")

    def attribute(self, cls, attr, seen=None):
        if not self.is_class(cls):
            return None
        seen = set() if seen is None else seen
        if id(cls) in seen:
            return None
        seen.add(id(cls))
        for key, value in reversed(self.attributes(cls)):
            if key == attr:
                return value
        for base in self.bases(cls):
            found = self.attribute(base, attr, seen)
            if found is not None:
                return found
        return None

    def check_copyreg_reconstructor(self, call, args):
        """``copyreg._reconstructor(cls, base, state)``: ``base.__new__(cls,
        state)`` and ``base.__init__``: ``base`` must be a global."""
        if len(args) != 3:
            self.refuse("copyreg", "_reconstructor", "call", call.start, "it takes 3 arguments")
            return
        cls, base, state = args
        if not isinstance(base, self.sym.Ref):
            module, name = self.label(base)
            self.refuse(module, name, "call", call.start, "copyreg._reconstructor's base class must be a global")
        if not (self.is_class(cls) or isinstance(cls, self.sym.Ref)):
            module, name = self.label(cls)
            self.refuse(module, name, "call", call.start, "copyreg._reconstructor's class is computed while loading")
        if state is not None and not self.inert(state):
            self.refuse(
                "copyreg", "_reconstructor", "call", call.start, "its state includes objects whose code would run"
            )
        hooks = self.hooks(cls, frozenset(["__del__"]))
        if hooks:
            self.refuse_hooks(cls, hooks, call.start, "creating an instance of")

    def check_getitem(self, call, args):
        """``obj[key]`` (typing's ``Generic[T]``, ``ClassVar[int]``)."""
        if len(args) != 2:
            return
        obj, key = args
        if self.is_class(obj):
            hooks = self.hooks(obj, GETITEM_HOOKS) | self.meta_hooks(obj, GETITEM_HOOKS | LOOKUP_HOOKS)
            if hooks:
                self.refuse_hooks(obj, hooks, call.start, "subscripting")
        elif not isinstance(obj, self.sym.Ref) and not self.inert(obj):
            module, name = self.label(obj)
            self.refuse(
                module, name, "call", call.start, "subscripting an object computed while loading would run its code"
            )
        keys = key if isinstance(key, tuple) else (key,)
        for item in keys:
            if not (
                self.inert(item)
                or self.is_class(item)
                or self.kind(item) is None
                and isinstance(item, self.sym.Call)
                and self.ref_key(item.func) in GETITEM
            ):
                module, name = self.label(item)
                self.refuse(module, name, "call", call.start, "a subscript is computed while loading")

    # -- BUILD, APPENDS, SETITEMS, ADDITEMS; hashing

    def check_mutation(self, op, target, state, pos):
        sym = self.sym
        if isinstance(target, sym.Ref):
            self.refuse(
                target.module,
                target.name,
                "modified",
                pos,
                f"{op} would change a global object the pickle did not make",
            )
            return
        if not isinstance(target, sym.Call):
            return
        needed = {"BUILD": BUILD_HOOKS, "APPENDS": APPEND_HOOKS, "SETITEMS": SETITEM_HOOKS, "ADDITEMS": ADD_HOOKS}[op]
        if op == "BUILD":
            self.check_build_attributes(target, state, pos)
        kind = self.kind(target)
        if kind in CLASS_KINDS:
            # On a class, the methods it ships are what getattr finds.
            hooks = self.hooks(target, needed - LOOKUP_HOOKS) | self.meta_hooks(
                target, needed | frozenset(["__setattr__", "__setitem__"])
            )
            if hooks:
                self.refuse_hooks(target, hooks, pos, "changing the class")
            return
        if kind in INERT_KINDS:
            return
        slots = STATE_AND_SLOTSTATE.get(state, "slotstate")
        if op == "BUILD" and isinstance(state, tuple) and len(state) == 2 and slots is not None:
            needed = needed | frozenset(["__setattr__"])
            if isinstance(slots, sym.SymDict):
                for cls in self.instance_classes(target):
                    for key in slots.str_keys():
                        value = self.attribute(cls, key)
                        if value is not None and self.is_computed(value) and self.kind(value) != "function":
                            self.refuse_hooks(cls, {key}, pos, "setting the state of an instance of")
        for cls in self.instance_classes(target):
            hooks = self.hooks(cls, needed)
            if hooks:
                verb = {
                    "BUILD": "setting the state of",
                    "APPENDS": "appending to",
                    "SETITEMS": "setting items of",
                    "ADDITEMS": "adding to",
                }[op]
                self.refuse_hooks(cls, hooks, pos, f"{verb} an instance of")

    def check_build_attributes(self, target, state, pos):
        """A BUILD that gives an object an attribute loading would call later
        (``__setstate__`` for the next BUILD, ``extend`` for APPENDS...)."""
        sym = self.sym
        dicts = state if isinstance(state, tuple) else (state,)
        for attributes in dicts:
            if not isinstance(attributes, sym.SymDict):
                continue
            for key, value in attributes.pairs:
                if key in CALLED_ATTRIBUTES and self.is_computed(value):
                    module, name = self.label(target)
                    self.refuse(
                        module, name, "modified", pos, f"BUILD gives it an attribute {key} that loading would call"
                    )

    def check_hashed(self, value, pos, depth=0):
        sym = self.sym
        if depth > 50:
            return
        if isinstance(value, tuple):
            for item in value:
                self.check_hashed(item, pos, depth + 1)
            return
        if isinstance(value, sym.SymSet):
            for item in value.items:
                self.check_hashed(item, pos, depth + 1)
            return
        if self.is_class(value):
            hooks = self.meta_hooks(value, HASH_HOOKS)
            if hooks:
                self.refuse_hooks(self.metaclass(value), hooks, pos, "hashing a class of")
            return
        for cls in self.instance_classes(value):
            hooks = self.hooks(cls, HASH_HOOKS)
            if hooks:
                self.refuse_hooks(cls, hooks, pos, "hashing an instance of")
