"""``python -m cloudpickle_rs inspect FILE``: what a pickle would do, without loading it.

The pickle is never loaded: its opcodes (``pickletools.genops``) drive a
symbolic stack machine in which globals are names, calls are records of
callee and arguments, and containers hold those symbols. Nothing named by
the pickle is imported, looked up or called. From the result it reports

* every global that loading would look up (GLOBAL, STACK_GLOBAL, INST, EXT*),
  and the modules and attributes it would reach through calls whose
  arguments are constants (``subimport("numpy")``, ``getattr(mod, "name")``,
  ``importlib.import_module(...)``, our ``reconstructor("make_code")``);
* the functions, classes, enums, modules and code objects shipped by value,
  in cloudpickle-rs's format (``cloudpickle_rs._native.make_function`` and
  the rest) and in upstream cloudpickle's (``_make_function``,
  ``types.CodeType``, ``_make_skeleton_class``, ``dynamic_subimport``...),
  with their names, source files and first line numbers;
* how many bytes of the pickle each of those takes: the opcodes between the
  first push of its reconstructor and the call that sets its state, with
  "own" bytes excluding what nested shipped objects take.

``--allow MODULE`` (repeatable) makes the exit code 1 when loading would
break the rules of ``_trust.py``, which ``cloudpickle_rs.loads(data,
allow=...)`` enforces: anything outside the allowed modules (and their
submodules) looked up or imported, or code the pickle ships by value run
while loading; cloudpickle-rs's own reconstructors are always allowed.
Malformed or truncated input exits with code 2 and a one-line message.
"""

import argparse
import collections
import copyreg
import json
import pickletools
import sys

from . import _trust
from ._native import FORMAT

FUNCTION_STATE = FORMAT["function_state"]
from ._trust import DIRECT_HOWS, EXEMPT_HOWS, NATIVE, UPSTREAM_MODULES  # noqa: F401


class InspectError(Exception):
    """The input is not a pickle that could be loaded (malformed, truncated)."""


# ---------------------------------------------------------------------------
# Symbolic values.


class Ref:
    """A name loading would look up: ``module.name`` (name None: the module itself).
    ``key`` is ``(module, name)`` as the unpickler resolves it (a Python 2
    name of a protocol 0 to 2 pickle mapped to its Python 3 one)."""

    __slots__ = ("module", "name", "how", "offset", "key")

    def __init__(self, module, name, how, offset, key=None):
        self.module, self.name, self.how, self.offset = module, name, how, offset
        self.key = key or (module, name)

    def is_(self, module, *names):
        return self.key[0] == module and self.key[1] in names

    def is_upstream(self, *names):
        return self.key[0] in UPSTREAM_MODULES and self.key[1] in names

    @property
    def dotted(self):
        return self.module if self.name is None else f"{self.module}.{self.name}"


class Call:
    """``func(*args, **kwargs)`` as loading would call it (``op``: the opcode
    that calls it); ``states`` are what BUILD or a state setter later applies
    to the result."""

    __slots__ = ("func", "args", "kwargs", "start", "end", "states", "spans", "op")

    def __init__(self, func, args, start, end, kwargs=None, op="REDUCE"):
        self.func, self.args, self.kwargs = func, args, kwargs
        self.start, self.end = start, end
        self.states = []
        self.spans = [(start, end)]
        self.op = op


class SymList:
    __slots__ = ("items",)

    def __init__(self, items=()):
        self.items = list(items)


class SymDict:
    """A dict whose keys may be unhashable symbols: a list of pairs."""

    __slots__ = ("pairs",)

    def __init__(self, pairs=()):
        self.pairs = list(pairs)

    def get(self, key, default=None):
        for k, v in reversed(self.pairs):
            if type(k) is str and k == key:
                return v
        return default

    def str_keys(self):
        return [k for k, _ in self.pairs if type(k) is str]


class SymSet:
    __slots__ = ("items", "frozen")

    def __init__(self, items=(), frozen=False):
        self.items, self.frozen = list(items), frozen


class Opaque:
    """Something the pickle makes that has no meaning here (a buffer, a persistent id)."""

    __slots__ = ("what",)

    def __init__(self, what):
        self.what = what


# ---------------------------------------------------------------------------
# The stack machine.


class Machine:
    """Runs the opcodes of one pickle symbolically.

    ``memo``: the memo a previous pickle of the same stream left (an
    unpickler keeps its memo from one ``load`` to the next). ``ascii_strings``:
    Python 2 strings (STRING, BINSTRING) that are not ASCII become opaque, as
    the unpickler may decode them otherwise than as latin-1. ``sizes``: keep
    the offset and length of every opcode, which sizes need."""

    def __init__(self, memo=None, ascii_strings=False, sizes=True):
        self.stack = []  # (value, start offset) pairs
        self.marks = []  # (stack length, offset) of each open MARK
        self.memo = dict(memo) if memo else {}
        self.protocol = 0
        self.protocols = []  # (offset, protocol) of each PROTO opcode
        self.refs = []
        self.call_counts = collections.Counter()
        self.calls = []
        # (opcode, target, state or items, offset) of each BUILD, APPEND(S),
        # SETITEM(S) and ADDITEMS on something else than a plain container.
        self.mutations = []
        self.hashed = []  # (value, offset): dict keys, set and frozenset items
        self.persistent_ids = 0
        self.opcode_spans = []  # (offset, length) of every opcode
        self.end = 0
        self.result = None
        self.ascii_strings = ascii_strings
        self.sizes = sizes  # False: no opcode_spans (what the report's sizes need)

    # -- stack helpers

    def push(self, value, start):
        self.stack.append((value, start))

    def pop(self, pos):
        floor = self.marks[-1][0] if self.marks else 0
        if len(self.stack) <= floor:
            raise InspectError(f"stack underflow at offset {pos}")
        return self.stack.pop()

    def top(self, pos):
        floor = self.marks[-1][0] if self.marks else 0
        if len(self.stack) <= floor:
            raise InspectError(f"empty stack at offset {pos}")
        return self.stack[-1]

    def pop_mark(self, pos):
        if not self.marks:
            raise InspectError(f"no MARK for the opcode at offset {pos}")
        length, mark_pos = self.marks.pop()
        items = [value for value, _ in self.stack[length:]]
        del self.stack[length:]
        return items, mark_pos

    def memo_get(self, key, pos):
        try:
            return self.memo[key]
        except KeyError:
            raise InspectError(f"memo key {key} not found at offset {pos}") from None

    # -- references and calls

    def reference(self, module, name, how, pos):
        if not isinstance(module, str) or not isinstance(name, str):
            raise InspectError(f"{how} at offset {pos} needs two strings")
        key = _trust.modernise(module, name) if self.protocol < 3 else None
        ref = Ref(module, name, how, pos, key)
        self.refs.append(ref)
        return ref

    def call(self, func, args, start, pos, kwargs=None, op="REDUCE"):
        """The value of ``func(*args)``: a resolved reference when the call only
        names something (our reconstructor lookup, getattr, an import), else a Call."""
        end = pos + 1
        if isinstance(func, Ref):
            self.call_counts[func.dotted] += 1
            resolved = self.resolve(func, args, pos) if op in ("REDUCE", "INST", "OBJ") else None
            if resolved is not None:
                self.refs.append(resolved)
                return resolved
        call = Call(func, args, start, end, kwargs, op)
        self.calls.append(call)
        self.apply_state_setter(call)
        return call

    def resolve(self, func, args, pos):
        args = args if isinstance(args, tuple) else ()
        first = args[0] if args else None
        if func.is_(NATIVE, "reconstructor") and isinstance(first, str):
            return Ref(NATIVE, first, "reconstructor", pos)
        if (func.is_(NATIVE, "builtin_type") or func.is_upstream("_builtin_type")) and isinstance(
            first, str
        ):
            if first == "ClassType":
                return Ref("builtins", "type", "builtin_type", pos)
            return Ref("types", first, "builtin_type", pos)
        if is_import_function(func):
            name = first if isinstance(first, str) else "?"
            if func.is_("builtins", "__import__"):
                name = self.imported_by_dunder_import(name, args, pos)
            return Ref(name, None, "import", pos)
        if func.is_("builtins", "getattr") and len(args) == 2 and isinstance(args[0], Ref):
            owner, attr = args[0], args[1] if isinstance(args[1], str) else "?"
            module, owner_name = owner.key
            name = attr if owner_name is None else f"{owner_name}.{attr}"
            return Ref(module, name, "getattr", pos)
        return None

    def imported_by_dunder_import(self, name, args, pos):
        """``__import__(name)`` imports ``name`` but gives its top-level package
        (unless a fromlist is given); a relative import (level > 0) is "?"."""
        level = args[4] if len(args) > 4 else 0
        if level != 0 or name == "?":
            return "?"
        fromlist = args[3] if len(args) > 3 else None
        if "." in name and not (isinstance(fromlist, (tuple, SymList)) and fromlist):
            self.refs.append(Ref(name, None, "import", pos))
            return name.partition(".")[0]
        return name

    def apply_state_setter(self, call):
        """``setter(obj, state)`` as the C pickler writes a reduce's state setter."""
        func, args = call.func, call.args
        if not (isinstance(func, Ref) and is_state_setter(func)):
            return
        if func.is_(NATIVE, "cell_set"):
            return
        if isinstance(args, tuple) and len(args) == 2 and isinstance(args[0], Call):
            args[0].states.append(args[1])
            args[0].spans.append((call.start, call.end))

    # -- the opcodes

    def run(self, data):
        opcodes = pickletools.genops(data)
        spans = self.opcode_spans
        sizes = self.sizes
        handlers = {}
        while True:
            opcode, arg, pos = next_opcode(opcodes)
            if sizes:
                if spans:
                    last_pos = spans[-1][0]
                    spans[-1] = (last_pos, pos - last_pos)
                spans.append((pos, 1))
            name = opcode.name
            handler = handlers.get(name)
            if handler is None:
                handler = handlers[name] = self.handler(name)
            handler(arg, pos)
            if name == "STOP":
                self.end = pos + 1
                return

    def step(self, name, arg, pos):
        self.handler(name)(arg, pos)

    def handler(self, name):
        """The method that runs the opcode ``name`` (``handler(arg, pos)``)."""
        handler = getattr(self, "op_" + name, None)
        if handler is not None:
            return handler
        if name in PY2_STRING_OPCODES and self.ascii_strings:
            return self.push_py2_string
        if name in CONSTANT_OPCODES:
            return self.push

        def unsupported(arg, pos):
            raise InspectError(f"unsupported opcode {name} at offset {pos}")

        return unsupported

    def push_py2_string(self, arg, pos):
        self.push(arg if arg.isascii() else Opaque("non-ASCII Python 2 string"), pos)

    def op_PROTO(self, arg, pos):
        self.protocol = arg
        self.protocols.append((pos, arg))

    def op_FRAME(self, arg, pos):
        pass

    def op_STOP(self, arg, pos):
        self.result, _ = self.pop(pos)

    def op_MARK(self, arg, pos):
        self.marks.append((len(self.stack), pos))

    def op_POP(self, arg, pos):
        floor = self.marks[-1][0] if self.marks else 0
        if len(self.stack) > floor:
            self.stack.pop()
        else:
            self.pop_mark(pos)

    def op_POP_MARK(self, arg, pos):
        self.pop_mark(pos)

    def op_DUP(self, arg, pos):
        value, _ = self.top(pos)
        self.push(value, pos)

    def op_NONE(self, arg, pos):
        self.push(None, pos)

    def op_NEWTRUE(self, arg, pos):
        self.push(True, pos)

    def op_NEWFALSE(self, arg, pos):
        self.push(False, pos)

    def op_EMPTY_TUPLE(self, arg, pos):
        self.push((), pos)

    def op_EMPTY_LIST(self, arg, pos):
        self.push(SymList(), pos)

    def op_EMPTY_DICT(self, arg, pos):
        self.push(SymDict(), pos)

    def op_EMPTY_SET(self, arg, pos):
        self.push(SymSet(), pos)

    def op_TUPLE(self, arg, pos):
        items, mark_pos = self.pop_mark(pos)
        self.push(tuple(items), mark_pos)

    def pop_n(self, n, pos):
        entries = [self.pop(pos) for _ in range(n)][::-1]
        start = entries[0][1] if entries else pos
        return [value for value, _ in entries], start

    def op_TUPLE1(self, arg, pos):
        items, start = self.pop_n(1, pos)
        self.push(tuple(items), start)

    def op_TUPLE2(self, arg, pos):
        items, start = self.pop_n(2, pos)
        self.push(tuple(items), start)

    def op_TUPLE3(self, arg, pos):
        items, start = self.pop_n(3, pos)
        self.push(tuple(items), start)

    def op_LIST(self, arg, pos):
        items, mark_pos = self.pop_mark(pos)
        self.push(SymList(items), mark_pos)

    def op_DICT(self, arg, pos):
        items, mark_pos = self.pop_mark(pos)
        pairs = pairs_of(items, pos)
        self.hashed.extend((key, pos) for key, _ in pairs)
        self.push(SymDict(pairs), mark_pos)

    def op_FROZENSET(self, arg, pos):
        items, mark_pos = self.pop_mark(pos)
        self.hashed.extend((item, pos) for item in items)
        self.push(SymSet(items, frozen=True), mark_pos)

    def op_APPEND(self, arg, pos):
        value, _ = self.pop(pos)
        self.extend_target([value], pos)

    def op_APPENDS(self, arg, pos):
        items, _ = self.pop_mark(pos)
        self.extend_target(items, pos)

    def extend_target(self, items, pos):
        target, _ = self.top(pos)
        if isinstance(target, SymList):
            target.items.extend(items)
            return
        self.mutations.append(("APPENDS", target, items, pos))
        if isinstance(target, Call):
            target.states.append(SymList(items))

    def op_SETITEM(self, arg, pos):
        (key, value), _ = self.pop_n(2, pos)
        self.set_items([(key, value)], pos)

    def op_SETITEMS(self, arg, pos):
        items, _ = self.pop_mark(pos)
        self.set_items(pairs_of(items, pos), pos)

    def set_items(self, pairs, pos):
        target, _ = self.top(pos)
        self.hashed.extend((key, pos) for key, _ in pairs)
        if isinstance(target, SymDict):
            target.pairs.extend(pairs)
            return
        self.mutations.append(("SETITEMS", target, pairs, pos))
        if isinstance(target, Call):
            target.states.append(SymDict(pairs))

    def op_ADDITEMS(self, arg, pos):
        items, _ = self.pop_mark(pos)
        target, _ = self.top(pos)
        self.hashed.extend((item, pos) for item in items)
        if isinstance(target, SymSet):
            target.items.extend(items)
        else:
            self.mutations.append(("ADDITEMS", target, items, pos))

    def op_PUT(self, arg, pos):
        self.memo[arg] = self.top(pos)[0]

    op_BINPUT = op_LONG_BINPUT = op_PUT

    def op_MEMOIZE(self, arg, pos):
        self.memo[len(self.memo)] = self.top(pos)[0]

    def op_GET(self, arg, pos):
        self.push(self.memo_get(arg, pos), pos)

    op_BINGET = op_LONG_BINGET = op_GET

    def op_GLOBAL(self, arg, pos):
        module, _, name = arg.partition(" ")
        self.push(self.reference(module, name, "GLOBAL", pos), pos)

    def op_STACK_GLOBAL(self, arg, pos):
        (module, name), start = self.pop_n(2, pos)
        self.push(self.reference(module, name, "STACK_GLOBAL", pos), start)

    def op_INST(self, arg, pos):
        args, mark_pos = self.pop_mark(pos)
        module, _, name = arg.partition(" ")
        cls = self.reference(module, name, "INST", pos)
        self.push(self.call(cls, tuple(args), mark_pos, pos, op="INST"), mark_pos)

    def op_OBJ(self, arg, pos):
        items, mark_pos = self.pop_mark(pos)
        if not items:
            raise InspectError(f"OBJ at offset {pos} has no class")
        self.push(self.call(items[0], tuple(items[1:]), mark_pos, pos, op="OBJ"), mark_pos)

    def op_REDUCE(self, arg, pos):
        (func, args), start = self.pop_n(2, pos)
        self.push(self.call(func, args, start, pos), start)

    def op_NEWOBJ(self, arg, pos):
        (cls, args), start = self.pop_n(2, pos)
        self.push(self.call(cls, args, start, pos, op="NEWOBJ"), start)

    def op_NEWOBJ_EX(self, arg, pos):
        (cls, args, kwargs), start = self.pop_n(3, pos)
        self.push(self.call(cls, args, start, pos, kwargs, op="NEWOBJ_EX"), start)

    def op_BUILD(self, arg, pos):
        state, state_start = self.pop(pos)
        target, _ = self.top(pos)
        self.mutations.append(("BUILD", target, state, pos))
        if isinstance(target, Call):
            target.states.append(state)
            target.spans.append((state_start, pos + 1))

    def op_EXT1(self, arg, pos):
        found = copyreg._inverted_registry.get(arg)
        module, name = found if found else ("?", f"<extension code {arg}>")
        self.push(self.reference(module, name, "EXT", pos), pos)

    op_EXT2 = op_EXT4 = op_EXT1

    def op_PERSID(self, arg, pos):
        self.persistent_ids += 1
        self.push(Opaque("persistent id"), pos)

    def op_BINPERSID(self, arg, pos):
        _, start = self.pop(pos)
        self.persistent_ids += 1
        self.push(Opaque("persistent id"), start)

    def op_NEXT_BUFFER(self, arg, pos):
        self.push(Opaque("out-of-band buffer"), pos)

    def op_READONLY_BUFFER(self, arg, pos):
        self.top(pos)


TRUNCATED = "truncated: the data ends before the STOP opcode"
# What pickletools' argument readers say when the data ends inside an argument.
DATA_ENDED = ("remain", "not enough data", "no newline found")

PY2_STRING_OPCODES = frozenset(["STRING", "BINSTRING", "SHORT_BINSTRING"])
CONSTANT_OPCODES = frozenset(
    """INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT STRING BINSTRING
    SHORT_BINSTRING BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8 UNICODE
    BINUNICODE SHORT_BINUNICODE BINUNICODE8""".split()
)


def next_opcode(opcodes):
    """The next ``(opcode, arg, pos)`` from ``genops``, whose errors (an unknown
    opcode, an argument cut short) become InspectError."""
    try:
        return next(opcodes)
    except StopIteration:
        raise InspectError(TRUNCATED) from None
    except Exception as e:
        message = str(e) or type(e).__name__
        if "exhausted before seeing STOP" in message:
            raise InspectError(TRUNCATED) from None
        if any(sign in message for sign in DATA_ENDED):
            raise InspectError(f"truncated: {message}") from None
        raise InspectError(message) from None


def pairs_of(items, pos):
    if len(items) % 2:
        raise InspectError(f"odd number of items for a dict at offset {pos}")
    return list(zip(items[::2], items[1::2]))


def is_import_function(ref):
    return _trust.is_importer(*ref.key)


def is_state_setter(ref):
    return _trust.is_state_setter(*ref.key)


# ---------------------------------------------------------------------------
# What the calls make: shipped functions, classes, enums, modules, code.


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


def arg(args, index):
    return args[index] if isinstance(args, tuple) and len(args) > index else None


def callee(call):
    return call.func if isinstance(call.func, Ref) else None


def code_fields(code_args):
    """(name, qualname, filename, firstlineno, consts) from ``types.CodeType``'s
    arguments: 16 of them up to 3.10, 18 (with co_qualname) from 3.11."""
    if not isinstance(code_args, tuple) or len(code_args) < 14:
        return None
    name, filename = text(code_args[11]), text(code_args[10])
    if len(code_args) >= 18:
        qualname, line = text(code_args[12]), code_args[13]
    else:
        qualname, line = name, code_args[12]
    line = line if type(line) is int else None
    return name, qualname, filename, line, code_args[7]


def code_args_of(call):
    """The CodeType arguments when ``call`` makes a code object, else None."""
    func = callee(call)
    if func is None:
        return None
    if func.is_(NATIVE, "make_code"):
        return arg(call.args, 1)
    if func.is_("types", "CodeType"):
        return call.args
    return None


def shipped_code(call):
    fields = code_fields(code_args_of(call))
    if fields is None:
        return None
    name, qualname, filename, line, _ = fields
    item = Shipped("code", call, name, qualname)
    item.filename, item.firstlineno = filename, line
    return item


def nested_codes(call):
    fields = code_fields(code_args_of(call))
    consts = fields[4] if fields else None
    if not isinstance(consts, tuple):
        return []
    return [c for c in consts if isinstance(c, Call)]


def last_state(call):
    return call.states[-1] if call.states else None


def dict_keys(value):
    return value.str_keys() if isinstance(value, SymDict) else []


def module_names(value):
    items = value.items if isinstance(value, SymList) else value
    if not isinstance(items, tuple) and not isinstance(items, list):
        return []
    return [item.module for item in items if isinstance(item, Ref) and item.name is None]


def function_names(args):
    """(name, qualname) from make_function's arguments ``(code, globals,
    closure, state, name, qualname)``; trailing ones are left out when they
    are what the code gives."""
    return text(arg(args, 4)), text(arg(args, 5))


def shipped_function(call, codes):
    func = callee(call)
    ours = func.is_(NATIVE, "make_function")
    # cloudpickle before 2.1 called types.FunctionType, as _builtin_type("LambdaType").
    upstream = func.is_upstream("_make_function") or func.is_("types", "FunctionType", "LambdaType")
    if not (ours or upstream):
        return None
    code = codes.get(id(arg(call.args, 0)))
    code_name = code.name if code else None
    code_qualname = code.qualname if code else None
    globals_ = arg(call.args, 1)
    module = text(globals_.get("__name__")) if isinstance(globals_, SymDict) else None
    state = last_state(call)
    if ours:
        # A function whose state is plain values gets it as an argument.
        if state is None:
            state = arg(call.args, 3)
        name, qualname = function_names(call.args)
        name, qualname = name or code_name, qualname or code_qualname
        if isinstance(state, tuple) and len(state) == len(FUNCTION_STATE):
            module = text(state[FUNCTION_STATE.index("module")]) or module
        shipped_globals = dict_keys(arg(state, FUNCTION_STATE.index("globals")))
        submodules = module_names(arg(state, FUNCTION_STATE.index("submodules")))
    else:
        slots = arg(state, 1)
        slots = slots if isinstance(slots, SymDict) else SymDict()
        name = text(slots.get("__name__")) or text(arg(call.args, 2)) or code_name
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


def shipped_class(call):
    func = callee(call)
    args = call.args
    attributes = arg(last_state(call), 0)
    attributes = attributes if isinstance(attributes, SymDict) else SymDict()
    if func.is_(NATIVE, "make_class"):
        namespace = arg(args, 3)
        namespace = namespace if isinstance(namespace, SymDict) else SymDict()
        name = text(arg(args, 1))
        qualname = text(namespace.get("__qualname__"))
        module = text(namespace.get("__module__"))
    elif func.is_upstream("_make_skeleton_class"):
        type_kwargs = arg(args, 3)
        type_kwargs = type_kwargs if isinstance(type_kwargs, SymDict) else SymDict()
        name = text(arg(args, 1))
        qualname = text(attributes.get("__qualname__"))
        module = text(type_kwargs.get("__module__"))
    else:
        return None
    item = Shipped("class", call, name or "?", qualname or name, module)
    line = attributes.get("__firstlineno__")
    item.firstlineno = line if type(line) is int else None
    item.members = [k for k in attributes.str_keys() if not k.startswith("__")]
    return item


def shipped_enum(call):
    func = callee(call)
    if not (func.is_(NATIVE, "make_enum") or func.is_upstream("_make_skeleton_enum")):
        return None
    args = call.args
    item = Shipped("enum", call, text(arg(args, 1)) or "?", text(arg(args, 2)), text(arg(args, 4)))
    item.members = dict_keys(arg(args, 3))
    attributes = arg(last_state(call), 0)
    line = attributes.get("__firstlineno__") if isinstance(attributes, SymDict) else None
    item.firstlineno = line if type(line) is int else None
    return item


def shipped_module(call):
    func = callee(call)
    if func.is_(NATIVE, "make_module"):
        namespace = last_state(call)
    elif func.is_upstream("dynamic_subimport"):
        namespace = arg(call.args, 1)
    else:
        return None
    item = Shipped("module", call, text(arg(call.args, 0)) or "?")
    if isinstance(namespace, SymDict):
        item.filename = text(namespace.get("__file__"))
        item.members = [k for k in namespace.str_keys() if not k.startswith("__")]
    return item


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
        item
        for item in items
        if item.kind != "code" or (id(item) not in used_codes and id(item.call) not in nested)
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
    for start, end, other in reversed(open_spans):
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


# ---------------------------------------------------------------------------
# The report.


def inspect_bytes(data):
    """The report (a dict of plain data) on the first pickle in ``data``."""
    return analyse(data)[1]


def analyse(data, **machine_options):
    """``(machine, report)`` for the first pickle in ``data``."""
    machine = Machine(**machine_options)
    machine.run(data)
    return machine, report_of(machine, data)


def report_of(machine, data):
    items = classify(machine.calls)
    attribute_sizes(items, machine.opcode_spans)
    fill_class_files(items)
    return {
        "size": machine.end,
        "trailing_bytes": len(data) - machine.end if isinstance(data, (bytes, bytearray)) else 0,
        "protocol": machine.protocol,
        "result": describe(machine.result, items),
        "references": reference_rows(machine),
        "shipped": [shipped_row(item) for item in items],
        "shipped_bytes": sum(item.own_size for item in items),
        "persistent_ids": machine.persistent_ids,
    }


def reference_rows(machine):
    rows = {}
    for ref in machine.refs:
        key = (ref.module, ref.name, ref.how)
        if key not in rows:
            rows[key] = {
                "module": ref.module,
                "name": ref.name,
                "how": ref.how,
                "direct": ref.how in DIRECT_HOWS,
                "offset": ref.offset,
                "count": 0,
                "calls": machine.call_counts.get(ref.dotted, 0),
            }
        rows[key]["count"] += 1
    return list(rows.values())


def shipped_row(item):
    row = {
        "kind": item.kind,
        "name": item.name,
        "qualname": item.qualname,
        "module": item.module,
        "filename": item.filename,
        "firstlineno": item.firstlineno,
        "offset": item.call.start,
        "bytes": item.size,
        "own_bytes": item.own_size,
        "inside": item.owner.display_name if item.owner is not None else None,
    }
    if item.kind == "function":
        row["globals"] = item.globals
        row["submodules"] = item.submodules
    if item.kind in ("class", "enum", "module"):
        row["members"] = item.members
    return row


def describe(value, items):
    for item in items:
        if item.call is value:
            return f"{item.kind} {item.display_name}"
    if isinstance(value, Call):
        for item in items:
            if item.call is value.func and item.kind in ("class", "enum"):
                return f"an instance of {item.display_name}"
        func = value.func
        return f"the result of calling {func.dotted}" if isinstance(func, Ref) else "a call result"
    if isinstance(value, Ref):
        return f"module {value.module}" if value.name is None else f"the global {value.dotted}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)} items"
    if isinstance(value, SymList):
        return f"a list of {len(value.items)} items"
    if isinstance(value, SymDict):
        return f"a dict of {len(value.pairs)} items"
    if isinstance(value, SymSet):
        return f"a {'frozenset' if value.frozen else 'set'} of {len(value.items)} items"
    if isinstance(value, Opaque):
        return f"a {value.what}"
    return f"a {type(value).__name__}"


def is_allowed(module, allowed):
    """Whether ``module`` is allowed (``_trust.Policy.allows_module``; our
    ``_native`` module is, for its reconstructors)."""
    return module == NATIVE or _trust.Policy(allowed).allows_module(module)


def violations(report, allowed):
    """The references of a report that the rules refuse (each row with the
    reason as "reason"); :func:`refusal_rows` also checks the calls."""
    policy = _trust.Policy(allowed)
    found = []
    for row in report["references"]:
        reason = policy.reference_refusal(row["module"], row["name"], row["how"], report["protocol"])
        if reason is not None:
            found.append(dict(row, reason=reason))
    return found


def refusal_rows(machine, report, allowed):
    """Everything loading this pickle under ``allowed`` would be refused for,
    as rows: the reference rows with a "reason", then the calls and changes
    the rules refuse (how "call", "modified", "class shipped by value"...)."""
    rows = {(r["module"], r["name"], r["how"]): r for r in report["references"]}
    found = []
    for refusal in _trust.Policy(allowed).refusals(machine):
        row = rows.get((refusal.module, refusal.name, refusal.how))
        if row is None:
            row = {"module": refusal.module, "name": refusal.name, "how": refusal.how,
                   "direct": False, "offset": refusal.offset, "count": 1, "calls": 0}
        found.append(dict(row, reason=refusal.reason))
    return found


# ---------------------------------------------------------------------------
# Text output.


def format_reference(row):
    target = row["module"] if row["name"] is None else f"{row['module']}.{row['name']}"
    how = {"import": "imported", "getattr": "via getattr"}.get(row["how"], row["how"])
    extra = f", called {row['calls']}x" if row["calls"] else ""
    reason = f": {row['reason']}" if row.get("reason") else ""
    return f"{target}  ({how} at offset {row['offset']}{extra}){reason}"


def format_source(row):
    if not row["filename"]:
        return "-"
    return f"{row['filename']}:{row['firstlineno']}" if row["firstlineno"] else row["filename"]


def format_report(report, source, allowed=None, found=()):
    lines = [f"{source}: {report['size']} bytes, protocol {report['protocol']}"]
    lines.append(f"  top-level object: {report['result']}")
    if report["trailing_bytes"]:
        lines.append(f"  ({report['trailing_bytes']} bytes after the STOP opcode not inspected)")
    if report["persistent_ids"]:
        lines.append(
            f"  {report['persistent_ids']} persistent ids (loading needs a persistent_load)"
        )
    direct = [r for r in report["references"] if r["how"] in DIRECT_HOWS]
    ours = [r["name"] for r in report["references"] if r["how"] == "reconstructor"]
    derived = [
        r for r in report["references"] if r["how"] not in DIRECT_HOWS + ("reconstructor",)
    ]
    lines.append("")
    lines.append(f"globals loading looks up ({len(direct)}):")
    lines.extend("  " + format_reference(row) for row in direct or [])
    if not direct:
        lines.append("  none")
    if ours:
        lines.append(f"  cloudpickle-rs reconstructors used: {', '.join(ours)}")
    if derived:
        lines.append("")
        lines.append(f"imported or looked up by calls while loading ({len(derived)}):")
        lines.extend("  " + format_reference(row) for row in derived)
    lines.append("")
    shipped = report["shipped"]
    lines.append(f"shipped by value ({len(shipped)}):")
    if shipped:
        lines.extend(format_shipped_table(shipped))
        lines.append(
            f"  {report['shipped_bytes']} of {report['size']} bytes ship these by value"
        )
    else:
        lines.append("  none")
    if allowed is not None:
        lines.append("")
        lines.append(
            "allowed modules: " + (", ".join(allowed) or "none")
            + f" (and the reconstructors of {NATIVE})"
        )
        if found:
            lines.append(f"NOT ALLOWED ({len(found)}):")
            lines.extend("  " + format_reference(row) for row in found)
        else:
            lines.append("every reference is allowed")
    return "\n".join(lines) + "\n"


def format_shipped_table(shipped):
    header = ("kind", "name", "source", "bytes", "own")
    rows = [
        (r["kind"], shipped_label(r), format_source(r), str(r["bytes"]), str(r["own_bytes"]))
        for r in shipped
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(5)]
    out = []
    for row in [header, *rows]:
        cells = [row[i].ljust(widths[i]) for i in range(3)]
        cells += [row[i].rjust(widths[i]) for i in range(3, 5)]
        out.append("  " + "  ".join(cells))
    return out


def shipped_label(row):
    if row["kind"] == "module":
        label = row["name"]
    else:
        label = (f"{row['module']}." if row["module"] else "") + str(row["qualname"])
    if row.get("globals"):
        label += " [globals: " + ", ".join(row["globals"]) + "]"
    return label


# ---------------------------------------------------------------------------
# Command line.


def read_input(path):
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


#: What ``inspect`` does, for its ``--help`` and ``python -m cloudpickle_rs --help``.
DESCRIPTION = (
    "Tell what loading a pickle would import and which code it ships by value, "
    "without loading it. Exits 0, 1 when --allow is broken, 2 on malformed input."
)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m cloudpickle_rs inspect", description=DESCRIPTION)
    add_arguments(parser)
    return parser.parse_args(argv)


def add_arguments(parser):
    """The arguments of ``inspect``, on its own parser or the CLI's subparser."""
    parser.add_argument("file", help="the pickle file, or - for stdin")
    parser.add_argument(
        "--allow",
        action="append",
        metavar="MODULE",
        help="exit with code 1 if loading would reach anything outside these "
        "modules and their submodules, or run code the pickle ships by value "
        "(repeatable; the rules of cloudpickle_rs.loads(data, allow=[...]); "
        "cloudpickle-rs's reconstructors are always allowed)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON report")


def main(argv=None):
    return run(parse_args(sys.argv[1:] if argv is None else argv))


def run(args):
    """Inspects ``args.file`` as parsed by :func:`add_arguments`; returns the exit code."""
    try:
        data = read_input(args.file)
    except OSError as e:
        print(f"inspect: cannot read {args.file}: {e.strerror or e}", file=sys.stderr)
        return 2
    source = "<stdin>" if args.file == "-" else args.file
    try:
        machine, report = analyse(data)
    except InspectError as e:
        print(f"inspect: {source} is not a valid pickle: {e}", file=sys.stderr)
        return 2
    try:
        found = refusal_rows(machine, report, args.allow) if args.allow is not None else []
    except (TypeError, ValueError) as e:
        print(f"inspect: --allow: {e}", file=sys.stderr)
        return 2
    if args.json:
        if args.allow is not None:
            report["allowed"] = [NATIVE, *args.allow]
            report["violations"] = found
        output = json.dumps(report, indent=2) + "\n"
    else:
        output = format_report(report, source, args.allow, found)
    try:
        sys.stdout.write(output)
        sys.stdout.flush()
    except BrokenPipeError:  # piped into head: not an error of ours
        sys.stdout = None
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
