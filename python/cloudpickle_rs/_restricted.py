"""Loading without trusting: ``loads(data, allow=[...])``, ``load(file,
allow=[...])`` and :class:`RestrictedUnpickler`.

Before the unpickler sees a byte, the whole pickle runs through the
inspector's symbolic machine and the rules of ``_trust.py`` (the ones
``python -m cloudpickle_rs inspect --allow`` reports on): if anything is
refused, nothing is imported, looked up or called. Then the standard C
unpickler loads it, with ``find_class`` checking every global again and the
objects its name leads to (the symbolic machine cannot see that
``dataclasses.builtins`` is a module), and ``builtins.getattr`` replaced by
one that checks the same way.
"""

import io
import pickle
import re
import sys
import types

__all__ = ["RestrictedUnpickler", "loads", "load"]

_pickle_load = pickle.load
_pickle_loads = pickle.loads
_MAX_LISTED = 5
_NO_FILE = io.BytesIO()  # loads() gives the bytes to _load_bytes instead


def loads(data, /, *, allow=None, **pickle_kwargs):
    """``pickle.loads(data, **pickle_kwargs)``; with ``allow`` (module
    names), refuses with ``pickle.UnpicklingError``, before anything runs, a
    pickle that would reach anything outside those modules (and their
    submodules) or run code it ships by value while loading."""
    if allow is None:
        try:
            return _pickle_loads(data, **pickle_kwargs)
        except AttributeError as e:
            _raise_if_other_format(e)
            raise
    return RestrictedUnpickler(_NO_FILE, allow=allow, **pickle_kwargs)._load_bytes(data)


def load(file, *, allow=None, **pickle_kwargs):
    """``pickle.load(file, **pickle_kwargs)``; with ``allow``, as :func:`loads`
    (reads one pickle from ``file``, no further)."""
    if allow is None:
        try:
            return _pickle_load(file, **pickle_kwargs)
        except AttributeError as e:
            _raise_if_other_format(e)
            raise
    return RestrictedUnpickler(file, allow=allow, **pickle_kwargs).load()


def _raise_if_other_format(error):
    """A pickle of another format names its own global, ``cloudpickle_rs.rebuild_v<N>``:
    the unpickler's "Can't get attribute" becomes the error that says so."""
    from . import _native

    found = re.search(r"'rebuild_v(\d+)'", str(error))
    if found is not None and int(found[1]) != _native.FORMAT["version"]:
        raise pickle.UnpicklingError(
            f"this pickle was written in cloudpickle-rs's format {found[1]}; cloudpickle-rs "
            f"{_native.__version__} reads format {_native.FORMAT['version']}: load it with the "
            "cloudpickle-rs release that wrote it"
        ) from error


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that loads only what the modules in ``allow``
    (and cloudpickle-rs's reconstructors) provide.

    ``RestrictedUnpickler(file, allow=["numpy", "mypkg"]).load()``. Each
    ``load()`` reads one pickle from ``file``, checks it whole (the rules of
    ``cloudpickle_rs._trust``, which ``python -m cloudpickle_rs inspect
    --allow`` reports on) and raises ``pickle.UnpicklingError`` naming what
    it refuses before anything is imported or called; otherwise it loads it
    as ``pickle.Unpickler`` would. Subclasses may override ``find_class``
    (call ``super().find_class`` to keep its checks) and ``persistent_load``.
    """

    def __init__(self, file, *, allow, **pickle_kwargs):
        from . import _trust

        if not (hasattr(file, "read") and hasattr(file, "readline")):
            raise TypeError("file must have 'read' and 'readline' attributes")
        self._policy = _trust.Policy(allow)
        self._source = file
        self._feed = _Feed()
        self._fix_imports = pickle_kwargs.get("fix_imports", True)
        self._symbolic_memo = {}  # kept from one load to the next, as the real memo
        self._protocol = 0
        self._getattr = _checked_getattr(self._policy)
        self._tracked = _KeepTracked()
        super().__init__(self._feed, **pickle_kwargs)

    @property
    def allow(self):
        """The allowed modules (a tuple)."""
        return self._policy.allowed

    # -- loading

    def load(self):
        """Reads the next pickle from the file, checks it, loads it."""
        recorder = _Recorder(self._source)
        self._check(recorder, recorder)
        return self._load_checked(recorder.getvalue())

    def _load_bytes(self, data):
        """Checks and loads the first pickle in ``data`` (as ``pickle.loads``,
        what follows its STOP opcode is ignored)."""
        if not isinstance(data, bytes):
            data = bytes(memoryview(data))
        machine = self._check(data, None)
        return self._load_checked(data if machine.end == len(data) else data[: machine.end])

    def _check(self, source, recorder):
        """Runs the symbolic machine over the pickle in ``source``; raises
        UnpicklingError for what the rules refuse."""
        from . import _inspect

        machine = _inspect.Machine(memo=self._symbolic_memo, ascii_strings=True, sizes=False)
        try:
            machine.run(source)
        except _inspect.InspectError as e:
            if recorder is not None and recorder.error is not None:
                raise recorder.error from None
            if (recorder.size if recorder is not None else len(source)) == 0:
                raise EOFError("Ran out of input") from None
            raise pickle.UnpicklingError(f"cannot check this pickle: {e}") from None
        refusals = self._policy.refusals(machine)
        if refusals:
            raise pickle.UnpicklingError(self._refusal_message(refusals))
        self._symbolic_memo = machine.memo
        self._protocol = machine.protocol
        return machine

    def _load_checked(self, data):
        self._feed.serve(data)
        try:
            return super().load()
        finally:
            self._feed.serve(b"")

    def _refusal_message(self, refusals):
        allowed = ", ".join(self._policy.allowed) or "none"
        listed = "; ".join(str(r) for r in refusals[:_MAX_LISTED])
        more = len(refusals) - _MAX_LISTED
        if more > 0:
            listed += f"; and {more} more"
        return f"refused to load this pickle (allowed modules: {allowed}): {listed}"

    # -- globals

    def find_class(self, module, name):
        """The global ``module.name``, if the rules allow it and every object
        its dotted name passes through; else ``pickle.UnpicklingError``."""
        from . import _trust

        checked = (module, name)
        if self._protocol < 3 and self._fix_imports:
            checked = _trust.modernise(module, name)
        reason = self._policy.global_refusal(*checked)
        if reason is None and checked == ("builtins", "getattr") and not self._policy.builtins_allowed:
            return self._getattr
        if reason is None:
            reason = self._path_refusal(*checked)
        if reason is not None:
            raise pickle.UnpicklingError(
                f"refused to load the global {module}.{name} "
                f"(allowed modules: {', '.join(self._policy.allowed) or 'none'}): {reason}"
            )
        return self._tracked.guard(checked, super().find_class(module, name))

    def _path_refusal(self, module, name):
        """Why an object on the way from the (allowed) module to ``name`` is
        refused; resolution errors are left to ``pickle.Unpickler.find_class``."""
        try:
            __import__(module, level=0)
            value = sys.modules[module]
        except (ImportError, KeyError):
            return None
        for part in name.split("."):
            try:
                found = getattr(value, part)
            except AttributeError:
                return None
            reason = self._policy.step_refusal(value, part, found)
            if reason is not None:
                return reason
            value = found
        return None


class _KeepTracked:
    """A class id names one class across pickles: a pickle whose class id is
    one this process already tracks gets that class, as with plain loading,
    but here its state (its methods and attributes) is not set again, so
    that a pickle cannot change a class it did not make."""

    #: Makers that return the class already known under a tracker id: where
    #: the id is among their arguments.
    MAKERS = {"make_class": -1, "make_enum": -1}
    UPSTREAM_MAKERS = {"_make_skeleton_class": 4, "_make_skeleton_enum": 5, "_lookup_class_or_track": 0}
    SETTERS = frozenset(["class_setstate"])
    UPSTREAM_SETTERS = frozenset(["_class_setstate"])

    def __init__(self):
        self._kept = {}  # id -> class: held, so that ids stay unique

    def guard(self, key, found):
        """``found`` (the global ``key``), wrapped when it makes or fills classes."""
        from . import _trust

        module, name = key
        if module == _trust.NATIVE and name == "reconstructor":
            return self._reconstructor(found)
        if key == _trust.REBUILD:
            return self._rebuild(found)
        if module in _trust.UPSTREAM_MODULES:
            # Upstream's own reconstructors track in that module (ours, served
            # as cloudpickle after install(), in ours).
            upstream = getattr(sys.modules.get(module), "_DYNAMIC_CLASS_TRACKER_BY_ID", None)
            return self._wrapped(name, found, self.UPSTREAM_MAKERS, self.UPSTREAM_SETTERS, upstream)
        return found

    def _reconstructor(self, reconstructor):
        def guarded_reconstructor(name, format=None):
            return self._wrapped(name, reconstructor(name, format), self.MAKERS, self.SETTERS, None)

        return guarded_reconstructor

    def _rebuild(self, rebuild):
        from ._native import RECONSTRUCTORS

        def guarded_rebuild(*args):
            first = args[0] if args else None
            if type(first) is int and 0 <= first < len(RECONSTRUCTORS):
                name = RECONSTRUCTORS[first]
                if name in self.MAKERS or name in self.SETTERS:
                    return self._wrapped(name, rebuild(name), self.MAKERS, self.SETTERS, None)(*args[1:])
            elif type(first) is str and len(args) == 1:
                return self._wrapped(first, rebuild(first), self.MAKERS, self.SETTERS, None)
            return rebuild(*args)

        return guarded_rebuild

    def _wrapped(self, name, func, makers, setters, tracker):
        if name in makers:
            return self._maker(func, makers[name], tracker)
        if name in setters:
            return self._setter(func)
        return func

    def _maker(self, make, id_at, tracker):
        from ._native import _tracked

        def make_unless_known(*args):
            known = None
            if -len(args) <= id_at < len(args) and isinstance(args[id_at], str):
                known = tracker.get(args[id_at]) if tracker is not None else _tracked(args[id_at])
            cls = make(*args)
            if known is not None and cls is known:
                self._kept[id(cls)] = cls
            return cls

        return make_unless_known

    def _setter(self, setstate):
        def set_state_of_what_was_made(obj, state):
            if self._kept.get(id(obj)) is obj:
                return obj
            return setstate(obj, state)

        return set_state_of_what_was_made


def _checked_getattr(policy):
    """``getattr(obj, name)`` for pickles that may not call ``builtins``'s:
    refuses what ``find_class`` refuses (a blocked attribute, another module,
    a name a module outside ``allow`` holds)."""
    from . import _trust

    def getattr_(obj, name):
        if not isinstance(name, str):
            raise pickle.UnpicklingError("getattr: attribute names must be strings")
        if name in _trust.BLOCKED_ATTRIBUTES:
            raise pickle.UnpicklingError(f"refused getattr(..., {name!r}): the name is blocked")
        module_name = getattr(obj, "__name__", None) if isinstance(obj, types.ModuleType) else None
        if module_name is not None and sys.modules.get(module_name) is obj:
            reason = None if policy.module_object_allowed(obj) else policy.global_refusal(module_name, name)
            if reason is not None:
                raise pickle.UnpicklingError(f"refused to load {module_name}.{name}: {reason}")
        value = getattr(obj, name)
        reason = policy.step_refusal(obj, name, value)
        if reason is not None:
            raise pickle.UnpicklingError(f"refused getattr(..., {name!r}): {reason}")
        return value

    getattr_.__name__ = getattr_.__qualname__ = "getattr"
    return getattr_


class _Feed:
    """The file the C unpickler reads: the checked bytes of one pickle."""

    def __init__(self):
        self._data = b""
        self._pos = 0

    def serve(self, data):
        self._data, self._pos = data, 0

    def read(self, n=-1):
        start = self._pos
        end = len(self._data) if n is None or n < 0 else min(len(self._data), start + n)
        self._pos = end
        return self._data[start:end]

    def readinto(self, buffer):
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def readline(self):
        found = self._data.find(b"\n", self._pos)
        return self.read(-1 if found < 0 else found + 1 - self._pos)


class _Recorder:
    """Reads from the user's file for the symbolic machine, keeping the bytes."""

    def __init__(self, source):
        self._source = source
        self._chunks = []
        self.size = 0
        self.error = None

    def _keep(self, data):
        if not isinstance(data, (bytes, bytearray)):
            self.error = TypeError(f"file.read() must return bytes, not {type(data).__name__}")
            raise self.error
        self._chunks.append(bytes(data))
        self.size += len(data)
        return data

    def read(self, n=-1):
        try:
            data = self._source.read(n)
        except Exception as e:
            self.error = e
            raise
        return self._keep(data)

    def readline(self):
        try:
            data = self._source.readline()
        except Exception as e:
            self.error = e
            raise
        return self._keep(data)

    def tell(self):
        return self.size

    def getvalue(self):
        return b"".join(self._chunks)
