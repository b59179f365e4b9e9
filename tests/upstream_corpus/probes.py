"""What each corpus case is expected to do, measured the same way everywhere.

``generate.py`` applies :data:`PROBES` to the original objects (the expected
behaviour, written to the corpus JSON) and, in a fresh interpreter with the
same upstream cloudpickle, to the loaded ones (did upstream itself round-trip
the case?). ``tests/test_upstream_compat.py`` applies them to the objects
loaded by cloudpickle-rs alone. A probe takes the object (a list of objects
for a case pickled more than once) and returns something JSON can hold.

This file must run on CPython 3.9-3.13 and must not import cloudpickle.
"""

import dataclasses
import gzip
import json
import logging
import os
import pickle
import sys


def _error_name(call):
    try:
        call()
    except Exception as e:  # the kind of error is the behaviour being probed
        return type(e).__name__
    return None


def _annotations(obj):
    return sorted([name, repr(hint)] for name, hint in obj.__annotations__.items())


def lambda_(f):
    return [f(1), f(10)]


def global_function(f):
    return [f(2), f(2, y=5), f.__name__, f.__defaults__]


def recursive_global(f):
    return [f(10), f.__name__]


def closure_counter(bump):
    return [bump(), bump(5), bump()]


def recursive_closure(fact):
    return [fact(5), fact(1)]


def empty_cell(read):
    return [_error_name(read), len(read.__closure__)]


def generator_function(countdown):
    return list(countdown(4))


def function_attributes(f):
    return [
        f(2),
        f(2, scale=3),
        f.__doc__,
        f.__kwdefaults__,
        f.tag,
        _annotations(f),
        f.__name__,
        f.__qualname__,
        f.__module__,
    ]


def submodule(f):
    return f("<root><child/></root>")


def shared_globals(pair):
    set_value, get_value = pair
    return [get_value(), set_value(7), get_value()]


def dynamic_class(objs):
    # The class, then an instance and a bound method pickled separately: the
    # second load must reuse the class of the first.
    cls, (square, method) = objs
    return [
        cls.__name__,
        cls.__doc__,
        cls.sides,
        cls(3).perimeter(),
        cls(3).doubled,
        cls.unit().size,
        cls.describe(),
        [base.__name__ for base in cls.__mro__],
        type(square) is cls,
        square.perimeter(),
        method(),
        type(method.__self__) is cls,
    ]


def abc_registry(pair):
    plugin, external = pair
    return [
        issubclass(external, plugin),
        isinstance(external(), plugin),
        _error_name(plugin),
        external().run(),
    ]


def dataclass(cls):
    point = cls(1)
    return [
        [field.name for field in dataclasses.fields(cls)],
        dataclasses.astuple(cls(1, 2)),
        point == cls(1),
        repr(point),
    ]


def named_tuple(cls):
    pair = cls(1)
    return [list(cls._fields), pair._asdict(), list(cls(2, "x")), cls.__name__]


def enum_class(cls):
    return [
        [member.name for member in cls],
        cls(2).name,
        cls.CRIMSON is cls.RED,
        cls.RED.label(),
    ]


def enum_member(member):
    return [member.name, member.value, type(member).__name__, member.label()]


def dynamic_module(module):
    return [module.__name__, module.FACTOR, module.scale(3), module.__doc__]


def type_vars(type_vars):
    return [
        [
            tv.__name__,
            repr(tv.__bound__),
            [repr(c) for c in tv.__constraints__],
            tv.__covariant__,
            tv.__contravariant__,
        ]
        for tv in type_vars
    ]


def generic_class(cls):
    return [
        cls(3).get(),
        [p.__name__ for p in cls.__parameters__],
        repr(cls[int]),
        [repr(base) for base in cls.__orig_bases__],
    ]


def type_hints(f):
    return [f([5, 6]), f([]), _annotations(f)]


def builtin_types(classes):
    return [cls.__name__ for cls in classes]


def code_and_cell(pair):
    code, cell = pair
    return [code.co_name, list(code.co_varnames), code.co_argcount, cell.cell_contents]


def getset_descriptor(descr):
    return [type(descr).__name__, descr.__name__, descr.__objclass__.__name__]


def dict_views(views):
    return [[type(view).__name__, list(view)] for view in views]


def stdlib_objects(objs):
    proxy, logger, (cls, weak_set), text_file = objs
    return [
        type(proxy).__name__,
        dict(proxy),
        logger.name,
        logger is logging.getLogger(logger.name),
        len(weak_set),
        cls in weak_set,
        os.path.basename(text_file.name),
        text_file.read(),
    ]


#: case name -> probe
PROBES = {
    "lambda": lambda_,
    "global_function": global_function,
    "recursive_global": recursive_global,
    "closure_counter": closure_counter,
    "recursive_closure": recursive_closure,
    "empty_cell": empty_cell,
    "generator_function": generator_function,
    "function_attributes": function_attributes,
    "submodule": submodule,
    "shared_globals": shared_globals,
    "dynamic_class": dynamic_class,
    "abc_registry": abc_registry,
    "dataclass": dataclass,
    "named_tuple": named_tuple,
    "enum_class": enum_class,
    "enum_member": enum_member,
    "dynamic_module": dynamic_module,
    "type_vars": type_vars,
    "generic_class": generic_class,
    "type_hints": type_hints,
    "builtin_types": builtin_types,
    "code_and_cell": code_and_cell,
    "getset_descriptor": getset_descriptor,
    "dict_views": dict_views,
    "stdlib_objects": stdlib_objects,
}


def as_json(value):
    """``value`` as it reads back from JSON (tuples become lists, ...)."""
    return json.loads(json.dumps(value))


def probe(case, obj):
    """The JSON form of the probe's result, or ``{"error": ...}`` if it raised."""
    try:
        return as_json(PROBES[case](obj))
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


def load_case(payload):
    """A case's payload is one pickle, or a list of pickles loaded in order."""
    if isinstance(payload, list):
        return [pickle.loads(p) for p in payload]
    return pickle.loads(payload)


def load_and_probe(corpus_path):
    """``{case: probe result}`` for every case of a corpus ``.pkl.gz`` file,
    each loaded with plain ``pickle.loads`` (a load error is a result too)."""
    with gzip.open(corpus_path, "rb") as f:
        payloads = pickle.load(f)["payloads"]
    results = {}
    for case, payload in payloads.items():
        try:
            obj = load_case(payload)
        except Exception as e:
            results[case] = {"error": f"load: {type(e).__name__}: {e}"}
            continue
        results[case] = probe(case, obj)
    return results


if __name__ == "__main__":
    # python probes.py CORPUS.pkl.gz: prints the probe results as JSON.
    json.dump(load_and_probe(sys.argv[1]), sys.stdout)
