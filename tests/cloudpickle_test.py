"""Functions by value (and what travels with them), as cloudpickle 3.1 does it.

Objects whose point is that the receiver lacks the sender's code are loaded
in a fresh subprocess (see testutils); local functions of this module can
only go by value, so loading them back in this process is a fair check of
their behaviour.
"""

import asyncio
import fractions
import inspect
import json.decoder
import os
import os.path
import pickle
import sys
import textwrap
import types

import pytest

import cloudpickle_rs
from testutils import (
    TESTS_DIR,
    run_script,
    run_sender,
    send_and_receive,
    subprocess_loads,
)

PY312 = sys.version_info >= (3, 12)

# Module-level globals read by nested functions below.
_SCALE = 7
_GREETING_SUFFIX = "?"

# The attributes a function keeps across a round trip.
FUNCTION_ATTRIBUTES = (
    "__name__",
    "__qualname__",
    "__module__",
    "__doc__",
    "__defaults__",
    "__kwdefaults__",
    "__annotations__",
    "__dict__",
)


def roundtrip(obj, protocol=None):
    return pickle.loads(cloudpickle_rs.dumps(obj, protocol=protocol))


# --------------------------------------------------------------------------
# What goes by value, what goes by reference
# --------------------------------------------------------------------------


def test_lambda_goes_by_value_to_a_fresh_receiver():
    offset = 10
    square_plus = lambda x, k=2: x**k + offset  # noqa: E731

    out = subprocess_loads(
        cloudpickle_rs.dumps(square_plus),
        """
        f = objs
        assert f.__name__ == "<lambda>", f.__name__
        print(f(3), f(2, 3))
        """,
    )
    assert out.split() == ["19", "18"]


def test_nested_function_goes_by_value_to_a_fresh_receiver():
    def make_greeter(greeting):
        punctuation = "!"

        def greet(name):
            return f"{greeting}, {name}{punctuation}{_GREETING_SUFFIX}{_SCALE}"

        return greet

    out = subprocess_loads(
        cloudpickle_rs.dumps(make_greeter("Hello")),
        """
        print(objs("Ada"))
        print(objs.__qualname__)
        """,
    )
    assert out.splitlines() == [
        "Hello, Ada!?7",
        "test_nested_function_goes_by_value_to_a_fresh_receiver.<locals>.make_greeter.<locals>.greet",
    ]


def test_main_function_goes_by_value_to_a_fresh_receiver():
    out = send_and_receive(
        """
        OFFSET = 100

        def add_offset(x):
            return x + OFFSET

        objs = add_offset
        """,
        """
        main_names = set(vars(sys.modules["__main__"]))
        assert "add_offset" not in main_names and "OFFSET" not in main_names
        f = objs
        print(f.__module__, f.__name__, f(1))
        """,
    )
    assert out.split() == ["__main__", "add_offset", "101"]


def test_function_of_dynamic_module_goes_by_value():
    mod = types.ModuleType("cprs_dynamic_functions")
    exec(
        textwrap.dedent(
            """
            FACTOR = 6

            def scaled(x):
                return x * FACTOR
            """
        ),
        mod.__dict__,
    )
    assert "cprs_dynamic_functions" not in sys.modules

    out = subprocess_loads(
        cloudpickle_rs.dumps(mod.scaled),
        """
        print(objs(7), objs.__module__)
        assert "cprs_dynamic_functions" not in sys.modules
        """,
    )
    assert out.split() == ["42", "cprs_dynamic_functions"]


def test_importable_module_level_function_goes_by_reference():
    payload = cloudpickle_rs.dumps(os.path.join)
    assert pickle.loads(payload) is os.path.join
    assert os.path.join.__module__.encode() in payload
    assert len(payload) < 100

    import mock_local_folder.mod as mod

    payload = cloudpickle_rs.dumps(mod.local_function)
    assert pickle.loads(payload) is mod.local_function
    assert b"mock_local_folder.mod" in payload
    assert b"local_function" in payload
    # by reference: neither the code nor the globals it reads are shipped
    assert mod.GREETING.encode() not in payload
    assert len(payload) < 120


def test_function_without_module_found_in_an_imported_module_by_reference():
    import mock_local_folder.mod as mod

    func = mod.function_without_module
    assert func.__module__ is None
    payload = cloudpickle_rs.dumps(func)
    assert pickle.loads(payload) is func
    assert b"mock_local_folder.mod" in payload
    assert len(payload) < 120


def test_function_without_module_found_nowhere_goes_by_value():
    namespace = {}
    exec("def cprs_unfindable_tripler(v):\n    return v * 3\n", namespace)
    func = namespace["cprs_unfindable_tripler"]
    func.__module__ = None

    out = subprocess_loads(
        cloudpickle_rs.dumps(func),
        """
        print(objs(5), objs.__module__, objs.__name__)
        """,
    )
    assert out.split() == ["15", "None", "cprs_unfindable_tripler"]


# --------------------------------------------------------------------------
# Globals
# --------------------------------------------------------------------------


def test_unreferenced_main_global_is_not_shipped():
    payload = run_sender(
        """
        BIG_UNUSED = "u" * 200000
        USED = "used-global-marker"

        def f():
            return USED

        objs = f
        """
    )
    assert b"uuuuuuuuuuuuuuuu" not in payload
    assert b"BIG_UNUSED" not in payload
    assert len(payload) < 5000
    assert b"used-global-marker" in payload


def test_global_read_only_by_an_inner_function_is_shipped():
    payload = run_sender(
        """
        USED_DIRECTLY = "direct-marker"
        USED_BY_INNER = "inner-marker"

        def outer():
            def inner():
                return USED_BY_INNER
            return USED_DIRECTLY + "/" + inner()

        objs = outer
        """
    )
    assert b"inner-marker" in payload
    out = subprocess_loads(payload, "print(objs())")
    assert out.strip() == "direct-marker/inner-marker"


def test_functions_pickled_together_share_their_globals():
    out = send_and_receive(
        """
        counter = 0

        def bump():
            global counter
            counter += 1
            return counter

        def read():
            return counter

        objs = [bump, read]
        """,
        """
        bump, read = objs
        assert bump.__globals__ is read.__globals__
        bump()
        bump()
        assert "counter" not in vars(sys.modules["__main__"])
        print(read())
        """,
    )
    assert out.strip() == "2"


def test_functions_of_two_namespaces_pickled_in_turn_keep_their_own_globals():
    out = send_and_receive(
        """
        first, second = {"__name__": "__main__"}, {"__name__": "__main__"}
        for namespace, value in ((first, 1), (second, 2)):
            exec(f"VALUE = {value}\\ndef get():\\n    return VALUE\\ndef get_too():\\n    return VALUE", namespace)
        objs = [first["get"], second["get"], first["get_too"], second["get_too"]]
        """,
        """
        a, b, a_too, b_too = objs
        assert a.__globals__ is a_too.__globals__ and b.__globals__ is b_too.__globals__
        assert a.__globals__ is not b.__globals__
        print(a(), b(), a_too(), b_too())
        """,
    )
    assert out.split() == ["1", "2", "1", "2"]


def test_builtins_are_not_shipped_and_still_work():
    def summarize(items):
        return len(items), sum(items), sorted(items)[0], isinstance(items, list)

    payload = cloudpickle_rs.dumps(summarize)
    assert b"__builtins__" not in payload
    # a shipped builtins dict would carry its keys, e.g. __import__
    assert b"__import__" not in payload
    assert len(payload) < 2000

    out = subprocess_loads(payload, "print(objs([3, 1, 2]))")
    assert out.strip() == "(3, 6, 1, True)"


def test_module_attributes_kept_in_globals_so_relative_import_works():
    # The function goes by value (its package is registered), to a receiver
    # that could import the package but has not: __package__ in the loaded
    # function's globals is what resolves its `from . import subfolder`.
    out = send_and_receive(
        """
        import cloudpickle_rs
        import mock_local_folder
        import mock_local_folder.mod

        cloudpickle_rs.register_pickle_by_value(mock_local_folder)
        objs = mock_local_folder.mod.call_submodule_with_relative_import
        """,
        """
        import os
        assert "mock_local_folder" not in sys.modules
        g = objs.__globals__
        print(g["__name__"], g["__package__"], os.path.basename(g["__file__"]))
        # loading did not import the package: the function came by value
        assert "mock_local_folder" not in sys.modules
        print(objs())
        """,
        sender_sys_path=[TESTS_DIR],
        receiver_sys_path=[TESTS_DIR],
    )
    assert out.splitlines() == [
        "mock_local_folder.mod mock_local_folder mod.py",
        "('mock_local_folder.subfolder', 'submod says 42')",
    ]


# --------------------------------------------------------------------------
# Closures
# --------------------------------------------------------------------------


def test_closure_with_filled_cells():
    def make(a, b):
        items = [a, b]
        label = "sum"

        def f(c):
            return label, items + [c]

        return f

    f = roundtrip(make(1, 2))
    assert f(3) == ("sum", [1, 2, 3])
    assert len(f.__closure__) == 2

    def no_closure():
        return 1

    assert roundtrip(no_closure).__closure__ is None


def test_empty_cells_stay_empty():
    def outer():
        def read_later():
            return later

        payload = cloudpickle_rs.dumps(read_later)  # `later` unbound yet
        later = "now bound"
        return read_later, payload

    original, payload = outer()
    assert original() == "now bound"
    loaded = pickle.loads(payload)
    with pytest.raises(NameError):
        loaded()

    def never_assigned():
        if False:  # pragma: no cover
            never = 1

        def read_never():
            return never

        return read_never

    func = never_assigned()
    with pytest.raises(NameError):
        func()
    with pytest.raises(NameError):
        roundtrip(func)()


def test_self_recursive_closure():
    def make_factorial():
        def factorial(n):
            return 1 if n <= 1 else n * factorial(n - 1)

        return factorial

    factorial = roundtrip(make_factorial())
    assert factorial(10) == 3628800
    assert factorial.__closure__[0].cell_contents is factorial


def test_mutually_recursive_nested_functions():
    def make():
        def is_even(n):
            return True if n == 0 else is_odd(n - 1)

        def is_odd(n):
            return False if n == 0 else is_even(n - 1)

        return is_even

    is_even = roundtrip(make())
    assert is_even(10) is True
    assert is_even(7) is False


# --------------------------------------------------------------------------
# Attributes and kinds of functions
# --------------------------------------------------------------------------


def test_function_attributes_are_preserved():
    def make():
        def documented(a, b=2, *args, c: int = 3, d="dee", **kwargs) -> str:
            """Docstring of documented."""
            return f"{a}-{b}-{c}-{d}"

        documented.custom_tag = {"k": [1, 2]}
        documented.version = 3
        return documented

    original = make()
    loaded = roundtrip(original)
    for attr in FUNCTION_ATTRIBUTES:
        assert getattr(loaded, attr) == getattr(original, attr), attr
    assert loaded.__qualname__.endswith("make.<locals>.documented")
    assert loaded.__annotations__ == {"c": int, "return": str}
    assert loaded.custom_tag == {"k": [1, 2]}
    assert loaded(1) == "1-2-3-dee"
    assert loaded(1, 5, c=6, d="x") == "1-5-6-x"


def test_generator_function():
    def make(k):
        def gen(n):
            for i in range(n):
                yield i * k

        return gen

    gen = roundtrip(make(3))
    assert inspect.isgeneratorfunction(gen)
    assert list(gen(4)) == [0, 3, 6, 9]


def test_coroutine_function():
    def make(k):
        async def add_later(x):
            await asyncio.sleep(0)
            return x + k

        return add_later

    add_later = roundtrip(make(5))
    assert inspect.iscoroutinefunction(add_later)
    assert asyncio.run(add_later(1)) == 6


def test_async_generator_function():
    def make(k):
        async def ticks(n):
            for i in range(n):
                await asyncio.sleep(0)
                yield i + k

        return ticks

    ticks = roundtrip(make(10))
    assert inspect.isasyncgenfunction(ticks)

    async def collect():
        return [x async for x in ticks(3)]

    assert asyncio.run(collect()) == [10, 11, 12]


def test_submodule_imported_by_main_is_imported_by_receiver():
    out = send_and_receive(
        """
        import xml.dom.minidom

        def root_tag(text):
            return xml.dom.minidom.parseString(text).documentElement.tagName

        objs = root_tag
        """,
        """
        assert "xml.dom.minidom" not in sys.modules
        root_tag = pickle.loads(data)
        print(root_tag("<root><child/></root>"))
        """,
        autoload=False,
    )
    assert out.strip() == "root"


# --------------------------------------------------------------------------
# Other function-related objects
# --------------------------------------------------------------------------


def test_code_object_round_trip():
    def make():
        base = 4

        def target(x, *, y=1):
            total = x + y + base
            return [total * i for i in range(3)]

        return target

    code = make().__code__
    loaded = roundtrip(code)
    assert isinstance(loaded, types.CodeType)
    assert loaded == code
    for attr in (
        "co_argcount",
        "co_posonlyargcount",
        "co_kwonlyargcount",
        "co_nlocals",
        "co_flags",
        "co_code",
        "co_consts",
        "co_names",
        "co_varnames",
        "co_freevars",
        "co_cellvars",
        "co_filename",
        "co_name",
        "co_firstlineno",
    ):
        assert getattr(loaded, attr) == getattr(code, attr), attr

    module_code = compile("RESULT = sum(range(5)) * FACTOR", "<cprs-test>", "exec")
    namespace = {"FACTOR": 3}
    exec(roundtrip(module_code), namespace)
    assert namespace["RESULT"] == 30

    func_code = (lambda v, w=1: v * w + 1).__code__
    rebuilt = types.FunctionType(roundtrip(func_code), {}, "rebuilt", (1,))
    assert rebuilt(3) == 4
    assert rebuilt(3, 2) == 7


def test_cells_round_trip():
    filled, empty = roundtrip((types.CellType(["payload"]), types.CellType()))
    assert isinstance(filled, types.CellType)
    assert isinstance(empty, types.CellType)
    assert filled.cell_contents == ["payload"]
    with pytest.raises(ValueError):
        empty.cell_contents  # noqa: B018 (reading it is the test)


def test_bound_method_of_importable_class():
    method = fractions.Fraction(22, 7).limit_denominator
    loaded = roundtrip(method)
    assert loaded(3) == method(3)
    assert loaded.__self__ == fractions.Fraction(22, 7)
    assert loaded.__func__ is fractions.Fraction.limit_denominator


def test_bound_method_whose_func_is_a_lambda():
    method = types.MethodType(lambda self, y: self.base + y, types.SimpleNamespace(base=10))
    loaded = roundtrip(method)
    assert isinstance(loaded, types.MethodType)
    assert loaded(5) == 15
    assert loaded.__self__.base == 10


def test_staticmethod_and_classmethod_objects():
    sm = staticmethod(lambda x: x * 2)
    cm = classmethod(lambda cls, x: (cls.__name__, x))
    sm2, cm2 = roundtrip((sm, cm))
    assert type(sm2) is staticmethod
    assert type(cm2) is classmethod
    assert sm2.__func__(4) == 8
    assert cm2.__func__(int, 1) == ("int", 1)

    Host = type("Host", (), {"s": sm2, "c": cm2})
    assert Host.s(5) == 10
    assert Host().c(2) == ("Host", 2)


@pytest.mark.parametrize("obj", [len, print, str.upper, dict.get], ids=lambda o: o.__qualname__)
def test_builtins_and_method_descriptors_by_reference(obj):
    payload = cloudpickle_rs.dumps(obj)
    assert pickle.loads(payload) is obj
    assert len(payload) < 100


def test_importable_modules_by_reference():
    for module in (os, os.path, json.decoder):
        payload = cloudpickle_rs.dumps(module)
        assert pickle.loads(payload) is module
        assert module.__name__.encode() in payload
        assert len(payload) < 100


def test_dynamic_module_by_value():
    mod = types.ModuleType("cprs_dynamic_module", "A module made at run time.")
    exec(
        textwrap.dedent(
            """
            FACTOR = 6
            NAMES = ["a", "b"]

            def scaled(x):
                return x * FACTOR
            """
        ),
        mod.__dict__,
    )
    assert "cprs_dynamic_module" not in sys.modules

    loaded = roundtrip(mod)
    assert isinstance(loaded, types.ModuleType)
    assert loaded is not mod
    assert loaded.__name__ == "cprs_dynamic_module"
    assert loaded.__doc__ == "A module made at run time."
    assert loaded.FACTOR == 6
    assert loaded.NAMES == ["a", "b"]
    assert loaded.scaled(2) == 12
    assert "cprs_dynamic_module" not in sys.modules


# --------------------------------------------------------------------------
# Protocols and out-of-band buffers
# --------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_closure_round_trip_with_protocol(protocol):
    def make(n):
        data = {"n": n, "items": (1, 2)}

        def f(x):
            return x * data["n"] + sum(data["items"]) + _SCALE

        return f

    payload = cloudpickle_rs.dumps(make(4), protocol=protocol)
    assert payload[0] == pickle.PROTO[0]
    assert payload[1] == protocol
    assert pickle.loads(payload)(2) == 18


def test_protocol_5_buffer_callback_keeps_buffers_out_of_band():
    blob = bytearray(b"\x07" * 100_000)
    held = pickle.PickleBuffer(blob)

    def make():
        def measure():
            data = memoryview(held).tobytes()
            return len(data), data[:2]

        return measure

    collected = []
    payload = cloudpickle_rs.dumps(make(), protocol=5, buffer_callback=collected.append)
    assert len(collected) == 1
    assert all(isinstance(b, pickle.PickleBuffer) for b in collected)
    assert b"\x07" * 64 not in payload
    assert len(payload) < 5000

    loaded = pickle.loads(payload, buffers=collected)
    assert loaded() == (100_000, b"\x07\x07")

    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(payload)


# --------------------------------------------------------------------------
# register_pickle_by_value
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registered_and_unregistered_payloads():
    """(by_value, by_reference) pickles of a function of mock_local_folder.mod
    and one of mock_local_folder.subfolder.submod, made by a sender that can
    import the package, before and after unregistering it."""
    payload = run_sender(
        """
        import cloudpickle_rs
        import mock_local_folder
        import mock_local_folder.mod as mod
        import mock_local_folder.subfolder.submod as submod

        cloudpickle_rs.register_pickle_by_value(mock_local_folder)
        assert cloudpickle_rs.list_registry_pickle_by_value() == {"mock_local_folder"}
        by_value = cloudpickle_rs.dumps((mod.local_function, submod.submod_function))
        cloudpickle_rs.unregister_pickle_by_value(mock_local_folder)
        assert cloudpickle_rs.list_registry_pickle_by_value() == set()
        by_reference = cloudpickle_rs.dumps((mod.local_function, submod.submod_function))
        objs = (by_value, by_reference)
        """,
        sys_path=[TESTS_DIR],
    )
    by_value, by_reference = pickle.loads(payload)
    return by_value, by_reference


def test_registered_package_functions_go_by_value(
    registered_and_unregistered_payloads,
):
    by_value, _ = registered_and_unregistered_payloads
    assert b"hello from mock_local_folder.mod" in by_value
    out = subprocess_loads(
        by_value,
        """
        try:
            import mock_local_folder
        except ModuleNotFoundError:
            print("package not importable")
        local_function, submod_function = objs
        print(local_function())
        print(submod_function())
        """,
    )
    assert out.splitlines() == [
        "package not importable",
        "hello from mock_local_folder.mod!",
        "submod says 42",
    ]


def test_unregistered_package_functions_go_by_reference(
    registered_and_unregistered_payloads,
):
    _, by_reference = registered_and_unregistered_payloads
    assert b"mock_local_folder.mod" in by_reference
    assert b"hello from mock_local_folder.mod" not in by_reference
    out = subprocess_loads(
        by_reference,
        """
        try:
            pickle.loads(data)
        except ModuleNotFoundError as e:
            print("ModuleNotFoundError", e.name)
        """,
        autoload=False,
    )
    assert out.split() == ["ModuleNotFoundError", "mock_local_folder"]


def test_register_subpackage_only():
    import mock_local_folder.mod as mod
    import mock_local_folder.subfolder as subfolder
    import mock_local_folder.subfolder.submod as submod

    cloudpickle_rs.register_pickle_by_value(subfolder)
    try:
        loaded_sub = roundtrip(submod.submod_function)
        assert loaded_sub is not submod.submod_function
        assert loaded_sub() == "submod says 42"
        assert roundtrip(mod.local_function) is mod.local_function
    finally:
        cloudpickle_rs.unregister_pickle_by_value(subfolder)
    assert roundtrip(submod.submod_function) is submod.submod_function


def test_register_pickle_by_value_errors():
    not_imported = types.ModuleType("cprs_never_imported")
    with pytest.raises(ValueError):
        cloudpickle_rs.register_pickle_by_value(not_imported)
    with pytest.raises(ValueError):
        cloudpickle_rs.register_pickle_by_value("os")
    assert "cprs_never_imported" not in cloudpickle_rs.list_registry_pickle_by_value()

    import json

    assert "json" not in cloudpickle_rs.list_registry_pickle_by_value()
    with pytest.raises(ValueError):
        cloudpickle_rs.unregister_pickle_by_value(json)
    with pytest.raises(ValueError):
        cloudpickle_rs.unregister_pickle_by_value("json")


def test_list_registry_pickle_by_value_returns_a_copy():
    import mock_local_folder

    cloudpickle_rs.register_pickle_by_value(mock_local_folder)
    try:
        registry = cloudpickle_rs.list_registry_pickle_by_value()
        assert isinstance(registry, set)
        assert "mock_local_folder" in registry
        registry.add("cprs_bogus_module")
        registry.discard("mock_local_folder")
        again = cloudpickle_rs.list_registry_pickle_by_value()
        assert "mock_local_folder" in again
        assert "cprs_bogus_module" not in again
    finally:
        cloudpickle_rs.unregister_pickle_by_value(mock_local_folder)
    assert "mock_local_folder" not in cloudpickle_rs.list_registry_pickle_by_value()


# --------------------------------------------------------------------------
# Excessive recursion
# --------------------------------------------------------------------------


def test_excessive_recursion_raises_pickling_error():
    out = run_script(
        """
        import pickle
        import cloudpickle_rs

        nested = []
        for _ in range(100000):
            nested = [nested]
        try:
            cloudpickle_rs.dumps(nested)
        except pickle.PicklingError as e:
            print("PicklingError:", e)
        else:
            print("no error")
        # the process is still fine afterwards
        print(pickle.loads(cloudpickle_rs.dumps(lambda: "still alive"))())
        """
    )
    assert out.splitlines() == [
        "PicklingError: Could not pickle object as excessively deep recursion required.",
        "still alive",
    ]


# --------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------

_DETERMINISM_SENDER = """
import cloudpickle_rs

TABLE = {"alpha": 1, "beta": 2, "gamma": 3}
SCALE = 10

def use_globals_and_defaults(key, bonus=3, *, options={"mode": "fast", "level": 2}):
    return TABLE.get(key, 0) * SCALE + bonus, options

def make_closure(n):
    names = ("x", "y")
    def closure(v):
        return v + n + SCALE, names
    return closure

square = lambda x, power=2: x ** power + SCALE

def is_listed(word):
    return word in {"a", "b", "c", "red", "green", "blue"}

objs = {
    "hash probe": hash("a string whose hash depends on PYTHONHASHSEED"),
    "function with globals, defaults and kwdefaults": cloudpickle_rs.dumps(
        use_globals_and_defaults
    ),
    "closure": cloudpickle_rs.dumps(make_closure(4)),
    "lambda": cloudpickle_rs.dumps(square),
    "set constant": cloudpickle_rs.dumps(is_listed),
}
"""


@pytest.fixture(scope="module")
def pickles_under_two_hash_seeds(tmp_path_factory):
    # Same script path in both runs: __file__ and co_filename are pickled.
    script_dir = str(tmp_path_factory.mktemp("determinism"))
    runs = [
        pickle.loads(
            run_sender(
                _DETERMINISM_SENDER,
                env={"PYTHONHASHSEED": seed},
                script_dir=script_dir,
            )
        )
        for seed in ("1", "2")
    ]
    # the seeds really differ in effect
    assert runs[0]["hash probe"] != runs[1]["hash probe"]
    return runs


@pytest.mark.parametrize("name", ["function with globals, defaults and kwdefaults", "closure", "lambda"])
def test_same_bytes_under_different_hash_seeds(pickles_under_two_hash_seeds, name):
    first, second = pickles_under_two_hash_seeds
    assert first[name] == second[name]


def test_set_constant_in_code_pickles_deterministically(pickles_under_two_hash_seeds):
    first, second = pickles_under_two_hash_seeds
    assert first["set constant"] == second["set constant"]
    # and it still works
    is_listed = pickle.loads(first["set constant"])
    assert is_listed("green") and not is_listed("purple")


def _chain_lambda():
    return lambda x, k=3: x + _SCALE + k


def _chain_closure_over_globals():
    n = 2

    def inner(x):
        return x + n + _SCALE

    return inner


def _chain_recursive():
    def fib(k):
        return k if k < 2 else fib(k - 1) + fib(k - 2)

    return fib


@pytest.mark.parametrize("factory", [_chain_lambda, _chain_closure_over_globals, _chain_recursive])
def test_pickling_a_loaded_function_gives_the_same_bytes(factory):
    func = factory()
    payload = cloudpickle_rs.dumps(func)
    assert cloudpickle_rs.dumps(pickle.loads(payload)) == payload


# --------------------------------------------------------------------------
# Beyond cloudpickle (cloudpickle 3.1.2 does not do these)
# --------------------------------------------------------------------------


def test_closures_sharing_a_cell_still_share_it():
    def make_counter():
        n = 0

        def inc():
            nonlocal n
            n += 1

        def get():
            return n

        return inc, get

    inc, get = roundtrip(make_counter())
    inc()
    inc()
    assert get() == 2


@pytest.mark.skipif(not PY312, reason="PEP 695 syntax needs Python 3.12+")
def test_generic_function_keeps_type_params():
    out = send_and_receive(
        """
        def identity[T](x: T) -> T:
            return x

        objs = identity
        """,
        """
        import typing
        f = objs
        params = f.__type_params__
        assert type(params) is tuple and len(params) == 1, params
        (T,) = params
        assert isinstance(T, typing.TypeVar)
        assert f.__annotations__["x"] is T
        print(T.__name__, f(5))
        """,
    )
    assert out.split() == ["T", "5"]


# --------------------------------------------------------------------------
# Side by side with upstream cloudpickle
# --------------------------------------------------------------------------


def _side_lambda_with_defaults():
    return lambda x, y=4, *, z=5: (x, y, z, _SCALE)


def _side_closure():
    prefix = "item-"
    seen = ["a"]

    def label(i):
        return prefix + str(i) + seen[0]

    return label


def _side_recursive():
    def power_set(items):
        if not items:
            return [[]]
        rest = power_set(items[1:])
        return rest + [[items[0]] + r for r in rest]

    return power_set


def _side_generator():
    step = 2

    def evens(n):
        yield from range(0, n, step)

    return evens


def _side_rich_attributes():
    def rich(a: int, *, b: str = "bee", c=None) -> tuple:
        """Rich docstring."""
        return a, b, c

    rich.marker = "m"
    rich.options = {"retries": 3}
    return rich


_SIDE_BY_SIDE = {
    "lambda with defaults": (_side_lambda_with_defaults, [((1,), {}), ((1, 2), {"z": 9})]),
    "closure": (_side_closure, [((3,), {})]),
    "recursive function": (_side_recursive, [(([1, 2, 3],), {})]),
    "generator function": (_side_generator, [((9,), {})]),
    "kwdefaults, annotations and __dict__": (
        _side_rich_attributes,
        [((1,), {}), ((2,), {"b": "x", "c": [1]})],
    ),
}


@pytest.mark.parametrize("name", list(_SIDE_BY_SIDE))
def test_behaves_like_upstream_cloudpickle(name):
    import cloudpickle

    factory, calls = _SIDE_BY_SIDE[name]
    original = factory()
    ours = pickle.loads(cloudpickle_rs.dumps(original))
    theirs = cloudpickle.loads(cloudpickle.dumps(original))

    def call(f, args, kwargs):
        result = f(*args, **kwargs)
        return list(result) if inspect.isgenerator(result) else result

    for args, kwargs in calls:
        expected = call(original, args, kwargs)
        assert call(theirs, args, kwargs) == expected
        assert call(ours, args, kwargs) == expected

    for attr in FUNCTION_ATTRIBUTES:
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert inspect.signature(ours) == inspect.signature(theirs)
    assert inspect.isgeneratorfunction(ours) == inspect.isgeneratorfunction(theirs)
    assert (ours.__closure__ is None) == (theirs.__closure__ is None)


def test_attributes_changed_after_definition_survive():
    # The pickle leaves out what making the function gives it anyway (its
    # code's names, its globals' __name__, its docstring): a function whose
    # attributes were changed since must still get the changed values.
    def make():
        def documented():
            """The docstring."""
            return 1

        def plain():
            return 2

        return documented, plain

    documented, plain = make()
    documented.__doc__ = None
    documented.__module__ = None
    plain.__name__ = "renamed"
    plain.__qualname__ = "Somewhere.renamed"
    plain.__doc__ = "added later"
    loaded_documented, loaded_plain = roundtrip((documented, plain))
    assert loaded_documented.__doc__ is None and loaded_documented.__module__ is None
    assert loaded_plain.__name__ == "renamed"
    assert loaded_plain.__qualname__ == "Somewhere.renamed"
    assert loaded_plain.__doc__ == "added later"
    assert loaded_plain.__module__ == plain.__module__
    untouched = make()[0]
    loaded = roundtrip(untouched)
    assert loaded.__doc__ == "The docstring." and loaded.__module__ == untouched.__module__
