"""The symbolic stack machine: a pickle's opcodes run over symbols.

Globals are names (:class:`Ref`), calls are records of callee and arguments
(:class:`Call`), containers hold those symbols; nothing the pickle names is
imported, looked up or called.
"""

import collections
import copyreg
import pickletools

from .. import _native, _trust
from .._layouts import SETTER_CALL
from .._trust import NATIVE, REBUILD, UPSTREAM_MODULES


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
            if func.is_(*REBUILD) and op == "REDUCE" and isinstance(args, tuple) and args and type(args[0]) is int:
                # rebuild_v2(number, *fields) is reconstructor `number`(*fields).
                number = args[0]
                name = _native.RECONSTRUCTORS[number] if 0 <= number < len(_native.RECONSTRUCTORS) else f"#{number}"
                func, args = Ref(NATIVE, name, "reconstructor", pos), args[1:]
                self.refs.append(func)
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
        if func.is_(*REBUILD) and len(args) == 1 and isinstance(first, str):
            return Ref(NATIVE, first, "reconstructor", pos)
        if (func.is_(NATIVE, "builtin_type") or func.is_upstream("_builtin_type")) and isinstance(first, str):
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
        target = SETTER_CALL.get(args, "obj")
        if isinstance(args, tuple) and len(args) == len(SETTER_CALL) and isinstance(target, Call):
            target.states.append(SETTER_CALL.get(args, "state"))
            target.spans.append((call.start, call.end))

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
