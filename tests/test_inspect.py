"""``python -m cloudpickle_rs inspect``: what a pickle imports and ships by
value, told without loading it.

Our pickles come from fresh ``__main__`` senders (so names, files and line
numbers are those a user would see); upstream cloudpickle's are made here;
hostile pickles are written by hand and must be reported, never executed.
"""

import glob
import gzip
import json
import math
import os
import pickle
import random
import shlex
import sys
import textwrap
import types

import pytest

from testutils import TESTS_DIR, run_python, run_sender

cloudpickle = pytest.importorskip("cloudpickle")


def inspect_cli(payload, *args, tmp_path=None, env=None, sys_path=()):
    """Runs the inspector on ``payload`` given on stdin; returns the CompletedProcess."""
    return run_python(
        ["-m", "cloudpickle_rs", "inspect", "-", *args],
        input=payload,
        env=env,
        sys_path=sys_path,
        cwd=str(tmp_path) if tmp_path else None,
    )


def inspect_json(payload, *args, **kwargs):
    result = inspect_cli(payload, "--json", *args, **kwargs)
    assert result.returncode in (0, 1), result.stderr.decode()
    return json.loads(result.stdout)


def line_of(source, marker):
    """The 1-based line number of the first line of ``source`` holding ``marker``."""
    lines = textwrap.dedent(source).splitlines()
    return next(i for i, line in enumerate(lines, 1) if marker in line)


def shipped(report, kind, qualname):
    found = [s for s in report["shipped"] if s["kind"] == kind and s["qualname"] == qualname]
    assert len(found) == 1, report["shipped"]
    return found[0]


def referenced(report):
    """{"module.name" or "module": how} for every reference in the report."""
    return {
        (r["module"] if r["name"] is None else f"{r['module']}.{r['name']}"): r["how"] for r in report["references"]
    }


# ---------------------------------------------------------------------------
# Our pickles, from a fresh __main__.

LAMBDA_SENDER = """
square = lambda x: x * x  # the lambda
objs = square
"""


def test_lambda_from_main_is_shipped_with_its_file_and_line():
    payload = run_sender(LAMBDA_SENDER)
    report = inspect_json(payload)
    fn = shipped(report, "function", "<lambda>")
    assert fn["module"] == "__main__"
    assert os.path.basename(fn["filename"]) == "sender_main.py"
    assert fn["firstlineno"] == line_of(LAMBDA_SENDER, "the lambda")
    assert report["result"] == "function __main__.<lambda>"
    assert report["size"] == len(payload)
    # The lambda is nearly all of the pickle.
    assert 0.8 * len(payload) <= fn["bytes"] <= len(payload)
    assert fn["own_bytes"] == fn["bytes"]


CLOSURE_SENDER = """
import math

OFFSET = 100

def make_adder(n):
    def add(x):  # the closure
        return math.floor(x) + n + OFFSET
    return add

objs = make_adder(5)
"""


def test_closure_over_globals_lists_them_and_the_modules_it_imports():
    payload = run_sender(CLOSURE_SENDER)
    report = inspect_json(payload)
    fn = shipped(report, "function", "make_adder.<locals>.add")
    assert fn["name"] == "add"
    assert fn["firstlineno"] == line_of(CLOSURE_SENDER, "the closure")
    assert set(fn["globals"]) == {"math", "OFFSET"}
    # Loading imports math (the global the closure reads) by name.
    assert referenced(report)["math"] == "import"


def test_allow_covers_the_modules_a_closure_imports():
    payload = run_sender(CLOSURE_SENDER)
    allowed = inspect_cli(payload, "--allow", "math")
    assert allowed.returncode == 0, allowed.stdout.decode() + allowed.stderr.decode()
    refused = inspect_cli(payload, "--allow", "builtins")
    assert refused.returncode == 1
    out = refused.stdout.decode()
    violations = out[out.index("NOT ALLOWED") :]
    assert "math" in violations
    assert "cloudpickle_rs._native" not in violations


CLASS_SENDER = """
class Point:  # the class
    dims = 2

    def __init__(self, x, y):  # init
        self.x, self.y = x, y

    def norm(self):  # norm
        return abs(self.x) + abs(self.y)

    @classmethod  # origin (a decorated function's code starts at its decorator)
    def origin(cls):
        return cls(0, 0)

objs = Point
"""


def test_main_class_and_its_methods_are_shipped_with_their_lines():
    payload = run_sender(CLASS_SENDER)
    report = inspect_json(payload)
    cls = shipped(report, "class", "Point")
    assert cls["module"] == "__main__"
    assert os.path.basename(cls["filename"]) == "sender_main.py"
    assert "dims" in cls["members"] and "norm" in cls["members"]
    if sys.version_info >= (3, 13):  # classes know their line from 3.13
        assert cls["firstlineno"] == line_of(CLASS_SENDER, "the class")
    methods = {}
    for marker, qualname in (("init", "__init__"), ("norm", "norm"), ("origin", "origin")):
        method = shipped(report, "function", f"Point.{qualname}")
        assert method["firstlineno"] == line_of(CLASS_SENDER, f"# {marker}")
        assert method["inside"] == "__main__.Point"
        methods[qualname] = method
    # The class's bytes include its methods'; its own bytes exclude them.
    assert cls["bytes"] >= sum(m["bytes"] for m in methods.values()) + cls["own_bytes"]
    assert report["result"] == "class __main__.Point"


def test_sizes_follow_what_each_function_carries():
    src = """
    BIG = "x" * 5000
    def make():
        big = lambda: "%s"  # big
        small = lambda: 1  # small
        return big, small
    objs = make()
    """ % ("y" * 5000)
    report = inspect_json(run_sender(src))
    big = [s for s in report["shipped"] if s["firstlineno"] == line_of(src, "# big")]
    small = [s for s in report["shipped"] if s["firstlineno"] == line_of(src, "# small")]
    assert big[0]["bytes"] > 5000
    assert small[0]["bytes"] < 1000
    assert sum(s["own_bytes"] for s in report["shipped"]) <= report["size"]


DYNAMIC_MODULE_SENDER = """
import types
dyn = types.ModuleType("dynmod")
source = "RATE = 3\\n\\ndef scale(x):\\n    return x * RATE\\n"
exec(compile(source, "<dynmod source>", "exec"), dyn.__dict__)
objs = dyn
"""


def test_dynamic_module_is_shipped_with_its_functions():
    report = inspect_json(run_sender(DYNAMIC_MODULE_SENDER))
    module = shipped(report, "module", "dynmod")
    assert {"RATE", "scale"} <= set(module["members"])
    fn = shipped(report, "function", "scale")
    assert (fn["module"], fn["filename"], fn["firstlineno"]) == ("dynmod", "<dynmod source>", 3)
    assert fn["inside"] == "dynmod"
    assert report["result"] == "module dynmod"


def test_text_report_names_what_is_shipped():
    payload = run_sender(CLASS_SENDER)
    result = inspect_cli(payload)
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "__main__.Point.norm" in out
    assert f"sender_main.py:{line_of(CLASS_SENDER, '# norm')}" in out
    assert "cloudpickle_rs.rebuild_v2" in out
    assert "cloudpickle-rs reconstructors used: " in out and "make_function" in out


def test_reading_from_a_file(tmp_path):
    path = tmp_path / "payload.pkl"
    path.write_bytes(run_sender(LAMBDA_SENDER))
    result = run_python(["-m", "cloudpickle_rs", "inspect", "--json", str(path)])
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["result"] == "function __main__.<lambda>"


# ---------------------------------------------------------------------------
# Upstream cloudpickle's pickles.


def test_upstream_function_closure_and_code_are_recognised():
    offset = 7

    def scaled(x):
        return math.floor(x) * offset

    report = inspect_json(cloudpickle.dumps(scaled))
    fn = shipped(report, "function", scaled.__qualname__)
    assert fn["name"] == "scaled"
    assert fn["filename"] == scaled.__code__.co_filename
    assert fn["firstlineno"] == scaled.__code__.co_firstlineno
    assert fn["globals"] == ["math"]
    refs = referenced(report)
    assert refs["cloudpickle.cloudpickle._make_function"] == "STACK_GLOBAL"
    assert refs["math"] == "import"


def test_upstream_class_enum_and_dynamic_module():
    import enum

    class Shape:
        def area(self):
            return 0

    class Color(enum.Enum):
        RED = 1
        BLUE = 2

    dyn = types.ModuleType("updyn")
    exec(compile("def twice(x):\n    return 2 * x\n", "<updyn>", "exec"), dyn.__dict__)
    report = inspect_json(cloudpickle.dumps((Shape, Color, dyn)))
    cls = shipped(report, "class", "Shape")
    assert cls["module"] == __name__
    area = shipped(report, "function", Shape.area.__qualname__)
    assert area["firstlineno"] == Shape.area.__code__.co_firstlineno
    assert area["inside"] == f"{__name__}.Shape"
    assert cls["filename"] == Shape.area.__code__.co_filename
    color = shipped(report, "enum", Color.__qualname__)
    assert set(color["members"]) == {"RED", "BLUE"}
    module = shipped(report, "module", "updyn")
    assert "twice" in module["members"]
    assert shipped(report, "function", "twice")["filename"] == "<updyn>"


def corpus_payloads(path):
    """(case, bytes) of a stored corpus file of upstream pickles (see upstream_corpus/)."""
    with gzip.open(path) as f:
        payloads = pickle.load(f)["payloads"]
    for case, value in payloads.items():
        for payload in value if isinstance(value, list) else [value]:
            yield case, payload


def test_every_upstream_version_in_the_corpus_is_understood():
    """Pickles written by cloudpickle 1.6 to 3.1.3 (1.x called
    types.FunctionType, as _builtin_type("LambdaType"), not _make_function)."""
    from cloudpickle_rs._inspect import inspect_bytes

    corpus = os.path.join(TESTS_DIR, "upstream_corpus", "%d.%d" % sys.version_info[:2])
    paths = sorted(glob.glob(os.path.join(corpus, "cloudpickle-*.pkl.gz")))
    assert paths, f"no upstream corpus in {corpus}"
    for path in paths:
        kinds = set()
        upstream = tuple(int(part) for part in os.path.basename(path).split("-")[1].split(".")[:3])
        # From 3.1.3 upstream writes every dynamic code object's file name so.
        filename = "<dynamic-code>" if upstream >= (3, 1, 3) else "generate.py"
        for case, payload in corpus_payloads(path):
            report = inspect_bytes(payload)
            kinds.update(s["kind"] for s in report["shipped"])
            if case == "lambda":
                fn = shipped(report, "function", "cases.<locals>.<lambda>")
                assert (fn["name"], fn["module"]) == ("<lambda>", "__main__"), path
                assert os.path.basename(fn["filename"]) == filename, path
                assert isinstance(fn["firstlineno"], int), path
        assert {"function", "class", "enum", "module"} <= kinds, path


def test_upstream_pickle_needs_cloudpickle_allowed():
    payload = cloudpickle.dumps(lambda: 1)
    assert inspect_cli(payload, "--allow", "cloudpickle").returncode == 0
    refused = inspect_cli(payload, "--allow", "builtins")
    assert refused.returncode == 1
    assert "cloudpickle.cloudpickle._make_function" in refused.stdout.decode()


# ---------------------------------------------------------------------------
# Hostile pickles: reported, never executed.


def system_call_pickles(command):
    """``os.system(command)`` by GLOBAL (protocol 0) and by STACK_GLOBAL (protocol 4)."""
    quoted = command.replace("\\", "\\\\").replace("'", "\\'")
    by_global = b"cos\nsystem\n(S'" + quoted.encode() + b"'\ntR."

    def short_str(s):
        data = s.encode()
        return b"\x8c" + bytes([len(data)]) + data + b"\x94"

    by_stack_global = (
        b"\x80\x04"
        + short_str("os")
        + short_str("system")
        + b"\x93\x94"
        + b"\x8c"
        + bytes([len(command)])
        + command.encode()
        + b"\x94\x85\x94R\x94."
    )
    return {"GLOBAL": by_global, "STACK_GLOBAL": by_stack_global}


@pytest.mark.parametrize("how", ["GLOBAL", "STACK_GLOBAL"])
def test_os_system_is_reported_and_not_executed(tmp_path, how):
    marker = tmp_path / "executed"
    payload = system_call_pickles("touch " + shlex.quote(str(marker)))[how]

    report = inspect_json(payload, tmp_path=tmp_path)
    assert not marker.exists()
    refs = [r for r in report["references"] if (r["module"], r["name"]) == ("os", "system")]
    assert refs and refs[0]["how"] == how and refs[0]["calls"] == 1
    assert report["result"] == "the result of calling os.system"

    refused = inspect_cli(payload, "--allow", "builtins", tmp_path=tmp_path)
    assert refused.returncode == 1
    assert "os.system" in refused.stdout.decode().split("NOT ALLOWED")[1]
    assert not marker.exists()

    # The payload is live: loading it does run the command.
    loaded = run_python(["-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"], input=payload)
    assert loaded.returncode == 0, loaded.stderr.decode()
    assert marker.exists()


def test_referenced_module_is_not_imported(tmp_path):
    marker = tmp_path / "imported"
    package = tmp_path / "lib"
    package.mkdir()
    (package / "trap.py").write_text(f"open({str(marker)!r}, 'w').close()\nvalue = 1\n")
    payload = b"ctrap\nvalue\n."

    report = inspect_json(payload, sys_path=[package])
    assert referenced(report)["trap.value"] == "GLOBAL"
    assert not marker.exists()

    loaded = run_python(
        ["-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"], input=payload, sys_path=[package]
    )
    assert loaded.returncode == 0, loaded.stderr.decode()
    assert marker.exists()


def test_import_through_builtins_is_not_covered_by_allowing_builtins():
    # getattr(__import__("os"), "system")("true"), all globals in builtins.
    payload = b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'true'\ntR."
    report = inspect_json(payload)
    refs = referenced(report)
    assert refs["os"] == "import"
    assert refs["os.system"] == "getattr"
    refused = inspect_cli(payload, "--allow", "builtins")
    assert refused.returncode == 1
    violations = refused.stdout.decode().split("NOT ALLOWED")[1]
    assert "os.system" in violations and "builtins" not in violations


def test_import_of_a_computed_name_is_never_allowed():
    # importlib.import_module(str(...)): a name only known at load time.
    payload = b"cimportlib\nimport_module\n(cbuiltins\nstr\n(I1\ntRtR."
    refused = inspect_cli(payload, "--allow", "builtins", "--allow", "importlib")
    assert refused.returncode == 1
    assert "?" in refused.stdout.decode().split("NOT ALLOWED")[1]


@pytest.mark.parametrize(
    "payload, allowed, ok",
    [
        (b"cos.path\njoin\n.", ["os"], True),  # a module allows its submodules
        (b"cos\nsep\n.", ["os.path"], False),  # but not its parent
        (b"cosx\nthing\n.", ["os"], False),  # nor a module merely starting alike
        (b"cos\nsep\n.", ["json", "os"], True),  # --allow repeats
    ],
)
def test_allow_semantics(payload, allowed, ok):
    args = [a for module in allowed for a in ("--allow", module)]
    assert inspect_cli(payload, *args).returncode == (0 if ok else 1)


# ---------------------------------------------------------------------------
# Malformed input: a message and exit code 2, never a traceback.


def assert_clean_failure(result, *words):
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "Traceback" not in err and err.strip(), err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, err


def test_truncated_pickle():
    payload = run_sender(CLASS_SENDER)
    for cut in (len(payload) // 2, len(payload) - 1, 1):
        assert_clean_failure(inspect_cli(payload[:cut]), "truncated")


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not a pickle at all",
        bytes(random.Random(1234).randrange(256) for _ in range(2000)),
        b"R.",  # REDUCE on an empty stack
        b"\x80\x04h\x05.",  # a memo key never stored
        b"\x80\x04K\x01K\x02\x93.",  # STACK_GLOBAL of two ints
        b"\x80\x04K\x01u.",  # SETITEMS without a MARK
    ],
)
def test_garbage_input(payload):
    assert_clean_failure(inspect_cli(payload), "not a valid pickle")


def test_missing_file(tmp_path):
    result = run_python(["-m", "cloudpickle_rs", "inspect", str(tmp_path / "absent.pkl")])
    assert_clean_failure(result, "cannot read")


def test_plain_pickle_ships_nothing():
    payload = pickle.dumps({"a": [1, 2.5, "x"], "b": (None, True)}, protocol=2)
    result = inspect_cli(payload, "--allow", "builtins")
    assert result.returncode == 0
    report = inspect_json(payload)
    assert report["shipped"] == [] and report["references"] == []
    assert report["result"] == "a dict of 2 items"
