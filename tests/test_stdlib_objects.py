"""Everyday standard-library objects that neither upstream cloudpickle nor
plain pickle can ship once they belong to ``__main__``: functools' caches and
dispatchers, ``cached_property`` (its lock, before 3.12), ``typing.NewType``,
module-level ``contextvars.ContextVar`` and the weak dictionaries. Each goes
from a ``__main__`` sender into a fresh receiver that lacks its code.
"""

import sys
import textwrap

from testutils import run_sender, send_and_receive, subprocess_loads


def test_lru_cache_and_cache_functions_come_back_with_their_parameters_and_an_empty_cache():
    out = send_and_receive(
        """
        import functools

        @functools.lru_cache(maxsize=32, typed=True)
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)

        @functools.cache
        def square(x):
            "Squares."
            return x * x

        fib(10)
        fib.label = "memo"
        objs = (fib, square)
        """,
        """
        fib, square = objs
        assert fib.cache_info().currsize == 0
        assert fib.cache_parameters() == {"maxsize": 32, "typed": True}
        assert square.cache_parameters() == {"maxsize": None, "typed": False}
        assert fib(30) == 832040 and fib.cache_info().hits > 0
        # The recursion goes through the loaded wrapper itself.
        assert fib.__wrapped__.__globals__["fib"] is fib
        assert fib.label == "memo" and fib.__name__ == "fib" and fib.__module__ == "__main__"
        assert square(4) == 16 and square.__doc__ == "Squares."
        print(fib.cache_info().maxsize)
        """,
    )
    assert out.split() == ["32"]


def test_lru_cache_function_of_an_importable_module_goes_by_reference(tmp_path):
    (tmp_path / "cprs_cached_mod.py").write_text(
        "import functools\n\n@functools.lru_cache\ndef double(x):\n    return 2 * x\n"
    )
    payload = run_sender("import cprs_cached_mod\nobjs = cprs_cached_mod.double", sys_path=[str(tmp_path)])
    assert b"make_lru_cache" not in payload
    out = subprocess_loads(
        payload,
        "import cprs_cached_mod\nprint(objs is cprs_cached_mod.double, objs(4))",
        sys_path=[str(tmp_path)],
    )
    assert out.split() == ["True", "8"]


def test_singledispatch_functions_keep_their_registered_implementations():
    out = send_and_receive(
        """
        import functools

        @functools.singledispatch
        def describe(x):
            return "thing"

        @describe.register
        def _(x: int):
            return "int " + describe(str(x))

        @describe.register(list)
        def _(x):
            return "list of " + ",".join(describe(i) for i in x)

        describe.register(float, lambda x: "float")
        objs = describe
        """,
        """
        describe = objs
        print(describe(None), "|", describe(3), "|", describe([1.5, "a"]))
        print([c.__name__ for c in describe.registry])
        """,
    )
    assert out.splitlines() == [
        "thing | int thing | list of float,thing",
        "['object', 'int', 'list', 'float']",
    ]


def test_singledispatchmethod_and_cached_property_in_a_main_class():
    out = send_and_receive(
        """
        import functools

        class Report:
            def __init__(self, rows):
                self.rows = rows
                self.computed = 0

            @functools.cached_property
            def total(self):
                "The sum."
                self.computed += 1
                return sum(self.rows)

            @functools.singledispatchmethod
            def show(self, value):
                return "value"

            @show.register
            def _(self, value: int):
                return f"int {value + self.total}"

        objs = (Report, Report([1, 2]))
        """,
        """
        Report, report = objs
        fresh = Report([4])
        print(fresh.total, fresh.total, fresh.computed, report.total, report.computed)
        print(report.show("x"), report.show(1), Report.total.attrname, Report.total.__doc__)
        """,
    )
    assert out.splitlines() == ["4 4 1 3 1", "value int 4 total The sum."]


def test_new_type_of_main():
    out = send_and_receive(
        """
        import typing

        UserId = typing.NewType("UserId", int)

        def lookup(uid: UserId) -> UserId:
            return UserId(uid + 1)

        objs = (UserId, lookup)
        """,
        """
        UserId, lookup = objs
        assert lookup.__annotations__["uid"] is UserId
        print(UserId(5), UserId.__name__, UserId.__supertype__.__name__, UserId.__module__, lookup(1))
        """,
    )
    # Before 3.10 NewType makes a function of the typing module.
    module = "__main__" if sys.version_info >= (3, 10) else "typing"
    assert out.split() == ["5", "UserId", "int", module, "2"]


CONTEXT_VARS = """
    import contextvars

    request_id = contextvars.ContextVar("request_id", default="none")
    user = contextvars.ContextVar("user")

    def current():
        return request_id.get(), user.get("anonymous")

    class Handler:
        def handle(self):
            return request_id.get()

    request_id.set("sender's value")
    objs = (current, Handler)
"""


def test_module_level_context_vars_travel_by_value_with_their_default():
    out = send_and_receive(
        CONTEXT_VARS,
        """
        current, Handler = objs
        print(current(), Handler().handle())
        var = current.__globals__["request_id"]
        assert var is Handler.handle.__globals__["request_id"]
        var.set("r-7")
        print(current(), Handler().handle())
        """,
    )
    assert out.splitlines() == ["('none', 'anonymous') none", "('r-7', 'anonymous') r-7"]


def test_a_context_var_loaded_from_two_pickles_is_one_variable():
    payload = run_sender(textwrap.dedent(CONTEXT_VARS))
    out = subprocess_loads(
        payload,
        """
        first, _ = objs
        second, _ = pickle.loads(data)
        first.__globals__["request_id"].set("shared")
        print(second()[0], second.__globals__["user"] is first.__globals__["user"])
        """,
    )
    assert out.split() == ["shared", "True"]


def test_a_context_var_of_an_importable_module_goes_by_reference(tmp_path):
    (tmp_path / "cprs_ctx_mod.py").write_text(
        "import contextvars\ntenant = contextvars.ContextVar('tenant', default='t0')\n"
    )
    out = send_and_receive(
        """
        from cprs_ctx_mod import tenant

        def which():
            return tenant.get()

        objs = which
        """,
        """
        import cprs_ctx_mod
        assert objs.__globals__["tenant"] is cprs_ctx_mod.tenant
        cprs_ctx_mod.tenant.set("t1")
        print(objs())
        """,
        sender_sys_path=[str(tmp_path)],
        receiver_sys_path=[str(tmp_path)],
    )
    assert out.split() == ["t1"]


def test_weak_dictionaries_keep_the_entries_whose_objects_travel_along():
    out = send_and_receive(
        """
        import weakref

        class Node:
            def __init__(self, name):
                self.name = name

        a, b, c = Node("a"), Node("b"), Node("c")
        by_name = weakref.WeakValueDictionary({"a": a, "b": b, "c": c})
        tags = weakref.WeakKeyDictionary({a: 1, b: 2, c: 3})
        objs = (by_name, tags, [a, c])
        """,
        """
        import gc
        by_name, tags, kept = objs
        gc.collect()
        print(sorted(by_name), sorted(n.name for n in tags), by_name["a"] is kept[0])
        print(type(by_name).__name__, type(tags).__name__, tags[kept[1]])
        """,
    )
    assert out.splitlines() == [
        "['a', 'c'] ['a', 'c'] True",
        "WeakValueDictionary WeakKeyDictionary 3",
    ]


def test_exceptions_keep_cause_context_notes_and_the_senders_traceback(tmp_path):
    # The sender's script stays on disk (sender_main.py in tmp_path), so the
    # receiver's traceback shows its source lines; the receiver runs none of
    # its code and cannot import it.
    payload = run_sender(
        """
        class JobError(Exception):
            def __init__(self, job, code):
                super().__init__(f"job {job} failed")
                self.code = code

        def parse(text):
            return int(text)

        def run(text):
            try:
                parse(text)
            except ValueError as exc:
                raise JobError("parse", 3) from exc

        def catch():
            try:
                run("x")
            except JobError as exc:
                if hasattr(exc, "add_note"):
                    exc.add_note("while running a task")
                return exc

        try:
            try:
                {}["key"]
            except KeyError:
                raise RuntimeError("outer")
        except RuntimeError as exc:
            contexted = exc
        objs = (catch(), contexted)
        """,
        script_dir=tmp_path,
    )
    out = subprocess_loads(
        payload,
        """
        import traceback
        err, contexted = objs
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        print(type(err).__name__, err.code, err.args, type(err.__cause__).__name__,
              err.__suppress_context__, getattr(err, "__notes__", ["while running a task"]))
        for name in ("catch", "run", "parse"):
            assert f", in {name}\\n" in text, text
        assert "sender_main.py" in text and 'raise JobError("parse", 3) from exc' in text, text
        assert "return int(text)" in text and "invalid literal" in text, text
        assert "The above exception was the direct cause" in text, text
        assert type(contexted.__context__) is KeyError and contexted.__cause__ is None
        assert "During handling of the above exception" in "".join(
            traceback.format_exception(type(contexted), contexted, contexted.__traceback__))
        """,
    )
    assert out.splitlines() == ["JobError 3 ('job parse failed',) ValueError True ['while running a task']"]


def test_traceback_reconstructor_rejects_malformed_frames():
    import pytest

    from cloudpickle_rs import _native

    for frames in [(("f.py", "f"),), (("f.py", "f", -1),), ((1, "f", 1),), ("x",)]:
        with pytest.raises(TypeError):
            _native.make_traceback(frames)
    tb = _native.make_traceback((("a.py", "outer", 3), ("b.py", "inner", 0)))
    assert tb.tb_frame.f_code.co_name == "outer" and tb.tb_next.tb_lineno == 0


def test_copyreg_registrations_for_exceptions_come_first():
    # tblib registers its reducers for exception classes this way.
    from testutils import run_script

    out = run_script(
        """
        import copyreg, pickle, cloudpickle_rs

        class JobError(Exception):
            pass

        copyreg.pickle(JobError, lambda e: (str, ("via copyreg",)))
        copyreg.pickle(KeyError, lambda e: (str, ("key via copyreg",)))
        try:
            raise JobError("x") from KeyError("k")
        except JobError as exc:
            err = exc
        print(pickle.loads(cloudpickle_rs.dumps(err)), "|", pickle.loads(cloudpickle_rs.dumps(err.__cause__)))
        """
    )
    assert out.strip() == "via copyreg | key via copyreg"
