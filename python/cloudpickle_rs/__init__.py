"""cloudpickle, natively: pickle lambdas, closures, and the functions of
``__main__`` or of modules registered by value, for another process.

The API is cloudpickle's (3.1): ``dumps``, ``dump``, ``loads``, ``load``,
``Pickler``/``CloudPickler``, ``register_pickle_by_value``,
``unregister_pickle_by_value``, ``list_registry_pickle_by_value``,
``DEFAULT_PROTOCOL``. Loading needs only the standard ``pickle`` (and this
package installed, for the native reconstructors that pickles refer to).

``loads(data, allow=[...])``, ``load(file, allow=[...])`` and
``RestrictedUnpickler`` load a pickle only if it reaches nothing outside the
allowed modules and runs none of the code it ships by value while loading
(``_restricted.py``); without ``allow``, ``loads`` and ``load`` are
``pickle.loads`` and ``pickle.load``.
"""

import pickle
from pickle import Unpickler

from ._install import install, uninstall
from ._native import (
    Pickler,
    __version__,
    dump,
    dumps,
    list_registry_pickle_by_value,
    rebuild_v2,  # noqa: F401  the one global our pickles name, here for a shorter import
    register_pickle_by_value,
    unregister_pickle_by_value,
)
from ._restricted import RestrictedUnpickler, load, loads

#: The protocol ``dumps``/``dump``/``Pickler`` use when none is given.
DEFAULT_PROTOCOL = pickle.HIGHEST_PROTOCOL

#: Backward-compatible alias, as in cloudpickle.
CloudPickler = Pickler


def __getattr__(name):
    # CompatPickler (what Pickler(..., compat=True) makes) is imported on first use.
    if name == "CompatPickler":
        from ._compat_writer import CompatPickler

        return CompatPickler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "__version__",
    "Pickler",
    "CloudPickler",
    "CompatPickler",
    "Unpickler",
    "RestrictedUnpickler",
    "dumps",
    "loads",
    "dump",
    "load",
    "pickle",
    "register_pickle_by_value",
    "unregister_pickle_by_value",
    "list_registry_pickle_by_value",
    "DEFAULT_PROTOCOL",
    "install",
    "uninstall",
]
