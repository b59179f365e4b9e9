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

from .cli import DESCRIPTION, add_arguments, main, run
from .machine import Call, InspectError, Machine, Opaque, Ref, SymDict, SymList, SymSet
from .report import analyse, inspect_bytes, report_of

__all__ = [
    "DESCRIPTION",
    "Call",
    "InspectError",
    "Machine",
    "Opaque",
    "Ref",
    "SymDict",
    "SymList",
    "SymSet",
    "add_arguments",
    "analyse",
    "inspect_bytes",
    "main",
    "report_of",
    "run",
]
