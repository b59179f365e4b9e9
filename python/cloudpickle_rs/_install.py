"""Serve cloudpickle-rs as ``cloudpickle`` and switch the engines' picklers to it.

:func:`install` makes the running interpreter use cloudpickle-rs wherever
cloudpickle would be used:

* ``import cloudpickle`` (and ``cloudpickle.cloudpickle``,
  ``cloudpickle.cloudpickle_fast``) gives a module served by cloudpickle-rs,
  shaped like upstream's package, so pickles written by upstream cloudpickle
  load without it;
* upstream cloudpickle, if already imported, and the copies vendored by
  engines (``ray.cloudpickle``, ``pyspark.cloudpickle``,
  ``joblib.externals.cloudpickle``, ``srsly.cloudpickle`` and their
  ``.cloudpickle``/``.cloudpickle_fast`` submodules) have their ``dumps``,
  ``dump``, ``Pickler``/``CloudPickler`` and registry functions replaced in
  place, now or when they are first imported; references other modules
  already took (``from cloudpickle import dumps``, ``partial(dumps, ...)``)
  are rebound;
* loky's pickler (standalone or joblib's vendored loky) is rebuilt on the
  served ``cloudpickle``: its name stays ``"cloudpickle"``, as loky documents
  and passes on to its workers, and ``set_loky_pickler()`` keeps working;
* ``multiprocessing``'s ``ForkingPickler`` (so ``Pool``, queues, ``Process``
  arguments under spawn and ``concurrent.futures.ProcessPoolExecutor``)
  pickles lambdas, nested functions and ``__main__`` classes by value.

:func:`uninstall` undoes each of those changes, in reverse order. Importing
``cloudpickle_rs`` changes nothing; a ``.pth`` file shipped with the package
calls :func:`install` at start-up when the environment variable
``CLOUDPICKLE_RS_INSTALL`` is set (to anything but ``0``/``false``/``no``/
``off``), for worker processes.
"""

import functools
import importlib
import importlib.machinery
import pickle
import sys
import threading
import types
import warnings
from collections import ChainMap

from . import _native

__all__ = ["install", "uninstall", "is_installed", "ENV_VAR"]

#: Set in a process's environment, makes every new interpreter of this
#: Python installation call :func:`install` at start-up (via the .pth file).
ENV_VAR = "CLOUDPICKLE_RS_INSTALL"

#: The ``__version__`` of the served ``cloudpickle``: the upstream release
#: whose API and pickles cloudpickle-rs follows. Libraries gate features on
#: ``cloudpickle.__version__`` (``>= 1.5``, ``>= 2.2``, ``>= 3``...) and some
#: parse it as dot-separated integers, so it is the plain upstream number.
UPSTREAM_VERSION = "3.1.2"

#: The names upstream's package exports (its ``__all__``).
UPSTREAM_ALL = [
    "__version__",
    "Pickler",
    "CloudPickler",
    "dumps",
    "loads",
    "dump",
    "load",
    "register_pickle_by_value",
    "unregister_pickle_by_value",
]

UPSTREAM_PACKAGE = "cloudpickle"
UPSTREAM_SUBMODULES = ("cloudpickle", "cloudpickle_fast")

#: cloudpickle copies that engines vendor; each also has the submodules.
VENDORED_PACKAGES = _native.VENDORED_CLOUDPICKLE

LOKY_REDUCTION_MODULES = (
    "loky.backend.reduction",
    "joblib.externals.loky.backend.reduction",
)

#: The loky pickler names install() takes over (any other is a user's choice).
LOKY_CLOUDPICKLE_NAMES = ("cloudpickle", "", None)

MULTIPROCESSING_REDUCTION = "multiprocessing.reduction"

#: The attributes of a cloudpickle copy that install() points at ours.
OUR_API = {
    "dumps": _native.dumps,
    "dump": _native.dump,
    "Pickler": _native.Pickler,
    "CloudPickler": _native.Pickler,
    "register_pickle_by_value": _native.register_pickle_by_value,
    "unregister_pickle_by_value": _native.unregister_pickle_by_value,
    "list_registry_pickle_by_value": _native.list_registry_pickle_by_value,
}

_MISSING = object()
_lock = threading.RLock()
_active = None


def install():
    """Make this interpreter use cloudpickle-rs wherever cloudpickle is used.

    Calling it again while installed does nothing.
    """
    global _active
    with _lock:
        if _active is not None:
            return
        installation = _Installation()
        try:
            installation.apply()
        except BaseException:
            installation.undo()
            raise
        _active = installation


def uninstall():
    """Undo what :func:`install` changed; does nothing when not installed.

    Modules imported while installed keep the cloudpickle-rs objects they
    took from the served ``cloudpickle``.
    """
    global _active
    with _lock:
        installation, _active = _active, None
        if installation is not None:
            installation.undo()


def is_installed():
    """Whether :func:`install` is in effect."""
    return _active is not None


class _Changes:
    """A log of attribute and item changes, undone newest first."""

    def __init__(self):
        self._undo = []

    def set_attr(self, owner, name, value):
        self.remember_attr(owner, name)
        setattr(owner, name, value)

    def remember_attr(self, owner, name):
        """Logs the current value of ``owner.name`` so undo() puts it back."""
        previous = owner.__dict__.get(name, _MISSING)
        self._undo.append(functools.partial(_restore_attr, owner, name, previous))

    def set_item(self, mapping, key, value):
        previous = mapping.get(key, _MISSING)
        mapping[key] = value
        self._undo.append(functools.partial(_restore_item, mapping, key, previous))

    def on_undo(self, action):
        self._undo.append(action)

    def undo(self):
        while self._undo:
            action = self._undo.pop()
            try:
                action()
            except Exception as exc:  # keep undoing the rest
                warnings.warn(f"cloudpickle_rs.uninstall: {exc!r}", RuntimeWarning, 2)


def _restore_attr(owner, name, previous):
    if previous is _MISSING:
        if name in owner.__dict__:
            delattr(owner, name)
    else:
        setattr(owner, name, previous)


def _restore_item(mapping, key, previous):
    if previous is _MISSING:
        mapping.pop(key, None)
    else:
        mapping[key] = previous


class _Installation:
    """What one install() changed, and the import hook it keeps while active."""

    def __init__(self):
        self.changes = _Changes()
        self.replaced = {}  # id(old object) -> (old object, our object)
        self.originals = {}  # module name -> {attribute: what switch_copy replaced}
        self.hooks = _PostImportHooks()

    def apply(self):
        originals = [sys.modules.get(name) for name in _upstream_module_names()]
        self.serve_upstream_names()
        for module in originals:
            if isinstance(module, types.ModuleType):
                self.switch_copy(module)
        for name, switch in self.switches_by_module().items():
            module = sys.modules.get(name)
            if isinstance(module, types.ModuleType):
                switch(module)
            self.hooks.watch(name, self.guarded(switch))
        self.rebind_captured_references()
        sys.meta_path.insert(0, self.hooks)
        self.changes.on_undo(functools.partial(_remove_finder, self.hooks))

    def undo(self):
        self.hooks.active = False
        self.changes.undo()

    def switches_by_module(self):
        switches = {}
        for package in VENDORED_PACKAGES:
            switches[package] = self.switch_copy
            for submodule in UPSTREAM_SUBMODULES:
                switches[f"{package}.{submodule}"] = self.switch_copy
        for name in LOKY_REDUCTION_MODULES:
            switches[name] = self.switch_loky
        switches[MULTIPROCESSING_REDUCTION] = self.switch_forking_pickler
        return switches

    def guarded(self, switch):
        """``switch`` for the import hook: a failure warns, the import goes on."""

        def run(module):
            if self.hooks.active:
                try:
                    switch(module)
                except Exception as exc:
                    warnings.warn(
                        f"cloudpickle_rs could not switch {module.__name__}: {exc!r}",
                        RuntimeWarning,
                        2,
                    )

        return run

    def serve_upstream_names(self):
        from . import cloudpickle as mirror

        importlib.import_module(f"{__package__}.cloudpickle_fast")
        package = _served_package(mirror)
        self.changes.set_item(sys.modules, UPSTREAM_PACKAGE, package)
        for submodule in UPSTREAM_SUBMODULES:
            self.changes.set_item(sys.modules, f"{UPSTREAM_PACKAGE}.{submodule}", mirror)

    def switch_copy(self, module):
        """Points a cloudpickle copy's pickling API at ours, in place."""
        namespace = module.__dict__
        self.adopt_registry(namespace.get("_PICKLE_BY_VALUE_MODULES"))
        old_pickler = namespace.get("Pickler", namespace.get("CloudPickler"))
        if isinstance(old_pickler, type) and old_pickler is not _native.Pickler:
            self.adopt_dispatch_entries(old_pickler)
        originals = self.originals.setdefault(module.__name__, {})
        for name, ours in OUR_API.items():
            old = namespace.get(name, _MISSING)
            if old is _MISSING:
                continue
            if old is ours:
                self.restore_later_as_in_submodule(module, name)
                continue
            originals[name] = old
            self.replaced[id(old)] = (old, ours)
            self.changes.set_attr(module, name, ours)

    def restore_later_as_in_submodule(self, package, name):
        """A package imported while installed took ``name`` from its switched
        submodule (``from .cloudpickle import *``): uninstall() gives it the
        submodule's original."""
        for submodule in UPSTREAM_SUBMODULES:
            original = self.originals.get(f"{package.__name__}.{submodule}", {}).get(name)
            if original is not None:
                self.changes.on_undo(functools.partial(setattr, package, name, original))
                return

    def adopt_registry(self, registered_names):
        """Registers by value with ours the modules a copy had registered."""
        if not isinstance(registered_names, (set, frozenset)):
            return
        ours = _native.list_registry_pickle_by_value()
        for name in sorted(registered_names):
            module = sys.modules.get(name)
            if name in ours or not isinstance(module, types.ModuleType):
                continue
            _native.register_pickle_by_value(module)
            self.changes.on_undo(functools.partial(_unregister_quietly, module))

    def adopt_dispatch_entries(self, old_pickler):
        """Copies reducers third parties added to a copy's class-level dispatch table.

        Ray registers its ``ObjectRef``/``ActorHandle`` reducers that way
        (``CloudPickler.dispatch[cls] = reducer``); the copy's own reducers
        (defined in its package) are left out: ours handles those types.
        """
        table = getattr(old_pickler, "dispatch", None)
        if isinstance(table, ChainMap):
            table = table.maps[0]
        if not isinstance(table, dict):
            return
        our_table = _native.Pickler.dispatch.maps[0]
        copy_package = old_pickler.__module__.rpartition(".")[0] or old_pickler.__module__
        for cls, reducer in list(table.items()):
            if cls in our_table or _defined_in(reducer, copy_package):
                continue
            self.changes.set_item(our_table, cls, reducer)

    def switch_loky(self, reduction):
        """Rebuilds loky's "cloudpickle" pickler on the served ``cloudpickle``
        unless the user chose another one."""
        if getattr(reduction, "_loky_pickler_name", None) not in LOKY_CLOUDPICKLE_NAMES:
            return
        self.changes.remember_attr(reduction, "_LokyPickler")
        self.changes.remember_attr(reduction, "_loky_pickler_name")
        # set_loky_pickler() does nothing when the name is unchanged.
        reduction._loky_pickler_name = None
        reduction.set_loky_pickler("cloudpickle")

    def switch_forking_pickler(self, reduction):
        self.changes.set_attr(reduction.ForkingPickler, "reducer_override", _forking_reducer_override)

    def rebind_captured_references(self):
        """Rebinds module globals holding a replaced object (or a partial of one)."""
        if not self.replaced:
            return
        for module in list(sys.modules.values()):
            if not isinstance(module, types.ModuleType) or _is_ours(module):
                continue
            namespace = getattr(module, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for name, value in list(namespace.items()):
                replacement = self.replacement_for(value)
                if replacement is None:
                    continue
                try:
                    self.changes.set_attr(module, name, replacement)
                except (AttributeError, TypeError):
                    pass  # a read-only module namespace keeps what it had

    def replacement_for(self, value):
        entry = self.replaced.get(id(value))
        if entry is not None and entry[0] is value:
            return entry[1]
        if type(value) is functools.partial:
            entry = self.replaced.get(id(value.func))
            if entry is not None and entry[0] is value.func:
                return functools.partial(entry[1], *value.args, **value.keywords)
        return None


def _defined_in(function, package):
    module = getattr(function, "__module__", None)
    return isinstance(module, str) and (module == package or module.startswith(package + "."))


def _upstream_module_names():
    return [UPSTREAM_PACKAGE] + [f"{UPSTREAM_PACKAGE}.{s}" for s in UPSTREAM_SUBMODULES]


def _is_ours(module):
    name = getattr(module, "__name__", "")
    return isinstance(name, str) and (name == __package__ or name.startswith(__package__ + "."))


def _unregister_quietly(module):
    if module.__name__ in _native.list_registry_pickle_by_value():
        _native.unregister_pickle_by_value(module)


def _remove_finder(finder):
    while finder in sys.meta_path:
        sys.meta_path.remove(finder)


def _served_package(mirror):
    """A module shaped like upstream's package ``cloudpickle``, over ``mirror``."""
    package = types.ModuleType(UPSTREAM_PACKAGE, mirror.__doc__)
    # Upstream's __init__ does `from .cloudpickle import *`.
    package.__dict__.update((name, value) for name, value in vars(mirror).items() if not name.startswith("_"))
    package.cloudpickle = mirror
    package.cloudpickle_fast = mirror
    package.__version__ = UPSTREAM_VERSION
    package.__all__ = list(UPSTREAM_ALL)
    package.__path__ = []
    package.__package__ = UPSTREAM_PACKAGE
    package.__spec__ = importlib.machinery.ModuleSpec(UPSTREAM_PACKAGE, None, is_package=True)
    package.__file__ = mirror.__file__
    package.__getattr__ = functools.partial(mirror._lazy_attribute, UPSTREAM_PACKAGE)
    package.__dir__ = lambda: sorted(set(vars(package)) | mirror._UPSTREAM_INCIDENTAL_NAMES)
    package.__cloudpickle_rs__ = True
    return package


def _forking_reducer_override(self, obj):
    """ForkingPickler's hook: functions and classes plain pickle cannot name
    (lambdas, nested functions, ``__main__``'s) travel as a cloudpickle-rs
    pickle inside the multiprocessing one; everything else as before."""
    if type(obj) is types.FunctionType or isinstance(obj, type):
        if not _native._should_pickle_by_reference(obj):
            return pickle.loads, (_native.dumps(obj),)
    return NotImplemented


class _HookedLoader:
    """Runs a module with its own loader, then a callback on the module."""

    def __init__(self, loader, callback):
        self._loader = loader
        self._callback = callback

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # The module keeps its own loader (resources, reload, linecache).
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._callback(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _PostImportHooks:
    """A meta path finder that calls a callback once a watched module has run."""

    def __init__(self):
        self.active = True
        self._callbacks = {}

    def watch(self, name, callback):
        self._callbacks[name] = callback

    def find_spec(self, fullname, path=None, target=None):
        callback = self._callbacks.get(fullname)
        if callback is None or not self.active:
            return None
        spec = self._find_with_other_finders(fullname, path, target)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _HookedLoader(spec.loader, callback)
        return spec

    def _find_with_other_finders(self, fullname, path, target):
        for finder in list(sys.meta_path):
            if finder is self:
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None

    def invalidate_caches(self):
        pass
