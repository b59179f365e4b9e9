"""cloudpickle_rs.install()/uninstall(): serving ``import cloudpickle``,
switching vendored copies and multiprocessing, and the start-up ``.pth``.

Every test runs its interpreter-wide changes in a fresh subprocess, so this
process is never altered.
"""

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import textwrap

import pytest
from test_upstream_compat import HIDE_UPSTREAM

from testutils import MAKE_PAIR, TIMEOUT, run_python, run_script, subprocess_env

ENV_VAR = "CLOUDPICKLE_RS_INSTALL"

SHARED_CELL_HELPERS = (
    MAKE_PAIR
    + """
import pickle

def keeps_shared_cell(payload):
    put, get = pickle.loads(payload)
    put("set")
    return get() == "set"
"""
)


def upstream_package_dir():
    spec = importlib.util.find_spec("cloudpickle")
    assert spec is not None, "the test extra installs upstream cloudpickle"
    return spec.submodule_search_locations[0]


@pytest.fixture
def fake_srsly(tmp_path):
    """A package named like an engine that vendors cloudpickle: ``srsly`` with
    upstream's real sources as ``srsly.cloudpickle`` and a consumer module
    (``srsly.api``) that pickles through it. Returns the directory to put on
    ``sys.path``."""
    root = tmp_path / "vendoring"
    package = root / "srsly"
    shutil.copytree(
        upstream_package_dir(),
        package / "cloudpickle",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (package / "__init__.py").write_text("")
    (package / "api.py").write_text(
        "from . import cloudpickle\n"
        "from .cloudpickle import dumps as captured_dumps\n\n"
        "def pickle_dumps(obj):\n"
        "    return cloudpickle.dumps(obj)\n"
    )
    return root


def script(*parts):
    return "\n".join(textwrap.dedent(part) for part in parts)


def test_importing_cloudpickle_rs_changes_nothing():
    run_script(
        """
        import sys
        import cloudpickle as upstream
        import multiprocessing.reduction as reduction
        modules = dict(sys.modules)
        meta_path = list(sys.meta_path)
        forking = dict(reduction.ForkingPickler.__dict__)

        import cloudpickle_rs

        assert sys.meta_path == meta_path
        assert dict(reduction.ForkingPickler.__dict__) == forking
        assert all(sys.modules[name] is module for name, module in modules.items())
        assert sys.modules["cloudpickle"] is upstream
        assert upstream.dumps is not cloudpickle_rs.dumps
        """
    )


def test_import_cloudpickle_after_install_gives_ours():
    run_script(
        """
        import importlib
        import importlib.util
        import sys
        import cloudpickle as upstream
        upstream_version = upstream.__version__
        upstream_all = list(upstream.__all__)
        del sys.modules["cloudpickle"]

        import cloudpickle_rs
        from cloudpickle_rs import cloudpickle as mirror
        cloudpickle_rs.install()

        import cloudpickle
        import cloudpickle.cloudpickle
        import cloudpickle.cloudpickle_fast
        from cloudpickle import cloudpickle_fast

        assert cloudpickle is not upstream
        assert cloudpickle.dumps is cloudpickle_rs.dumps
        assert cloudpickle.dump is cloudpickle_rs.dump
        assert cloudpickle.Pickler is cloudpickle.CloudPickler is cloudpickle_rs.Pickler
        assert cloudpickle.register_pickle_by_value is cloudpickle_rs.register_pickle_by_value
        assert cloudpickle.cloudpickle is mirror
        assert sys.modules["cloudpickle.cloudpickle"] is mirror
        assert sys.modules["cloudpickle.cloudpickle_fast"] is mirror
        assert cloudpickle_fast is mirror
        assert importlib.import_module("cloudpickle.cloudpickle_fast") is mirror
        # shaped like upstream's package
        assert cloudpickle.__version__ == upstream_version
        assert sorted(cloudpickle.__all__) == sorted(upstream_all)
        assert all(hasattr(cloudpickle, name) for name in upstream_all)
        assert importlib.util.find_spec("cloudpickle").name == "cloudpickle"
        try:
            import cloudpickle.no_such_submodule
        except ModuleNotFoundError:
            pass
        else:
            raise AssertionError("an unknown submodule imported")
        y = 4
        assert cloudpickle.loads(cloudpickle.dumps(lambda x: x + y))(1) == 5
        """
    )


def test_install_twice_then_uninstall_restores(fake_srsly):
    run_script(
        script(
            """
            import sys
            import cloudpickle as upstream
            import srsly.api
            import cloudpickle_rs
            from cloudpickle_rs import _install

            cloudpickle_rs.uninstall()  # not installed: does nothing
            modules = dict(sys.modules)
            meta_path = list(sys.meta_path)
            cloudpickle_rs.install()
            cloudpickle_rs.install()
            assert _install.is_installed()
            assert sum(isinstance(f, _install._PostImportHooks) for f in sys.meta_path) == 1
            assert srsly.cloudpickle.dumps is cloudpickle_rs.dumps
            cloudpickle_rs.uninstall()
            assert not _install.is_installed()
            assert sys.meta_path == meta_path
            assert sys.modules["cloudpickle"] is upstream
            assert srsly.cloudpickle.dumps is not cloudpickle_rs.dumps
            cloudpickle_rs.uninstall()
            assert sys.meta_path == meta_path
            assert all(sys.modules.get(name) is module for name, module in modules.items())
            """
        ),
        sys_path=[fake_srsly],
    )


def test_round_trip_restores_every_change(fake_srsly):
    run_script(
        script(
            SHARED_CELL_HELPERS,
            """
            import copyreg
            import functools
            import sys
            import types
            import multiprocessing.reduction as reduction
            import cloudpickle as upstream
            import cloudpickle.cloudpickle as upstream_module
            import srsly.api
            import srsly.cloudpickle.cloudpickle as vendored_module
            import cloudpickle_rs

            # a module that took upstream's functions before install()
            captured = types.ModuleType("captured")
            captured.dumps = upstream.dumps
            captured.dumps_v4 = functools.partial(upstream.dumps, protocol=4)
            sys.modules["captured"] = captured
            # state only upstream knew: a by-value module, a third-party reducer
            by_value = types.ModuleType("by_value_module")
            sys.modules["by_value_module"] = by_value
            upstream.register_pickle_by_value(by_value)
            class Token:
                pass
            def reduce_token(token):
                return str, ("token",)
            upstream.CloudPickler.dispatch[Token] = reduce_token

            watched = [upstream, upstream_module, srsly.cloudpickle, vendored_module,
                       srsly.api, captured, reduction.ForkingPickler]
            namespaces = [dict(vars(owner)) for owner in watched]
            modules = dict(sys.modules)
            meta_path = list(sys.meta_path)
            our_table = dict(cloudpickle_rs.Pickler.dispatch.maps[0])
            our_registry = cloudpickle_rs.list_registry_pickle_by_value()

            cloudpickle_rs.install()
            assert sys.modules["cloudpickle"] is not upstream
            for copy in (upstream, upstream_module, srsly.cloudpickle, vendored_module):
                assert copy.dumps is cloudpickle_rs.dumps
                assert copy.CloudPickler is cloudpickle_rs.Pickler
            assert captured.dumps is cloudpickle_rs.dumps
            assert captured.dumps_v4.func is cloudpickle_rs.dumps
            assert captured.dumps_v4.keywords == {"protocol": 4}
            assert srsly.api.captured_dumps is cloudpickle_rs.dumps
            assert "by_value_module" in cloudpickle_rs.list_registry_pickle_by_value()
            assert pickle.loads(cloudpickle_rs.dumps(Token())) == "token"
            assert keeps_shared_cell(srsly.api.pickle_dumps(make_pair()))
            assert keeps_shared_cell(captured.dumps_v4(make_pair()))
            assert "reducer_override" in vars(reduction.ForkingPickler)

            cloudpickle_rs.uninstall()
            for owner, namespace in zip(watched, namespaces):
                now = dict(vars(owner))
                assert now.keys() == namespace.keys(), owner
                changed = [k for k in now if now[k] is not namespace[k]]
                assert not changed, (owner, changed)
            assert sys.meta_path == meta_path
            assert all(sys.modules.get(name) is module for name, module in modules.items())
            assert all(name.startswith("cloudpickle_rs") for name in set(sys.modules) - set(modules))
            assert dict(cloudpickle_rs.Pickler.dispatch.maps[0]) == our_table
            assert cloudpickle_rs.list_registry_pickle_by_value() == our_registry
            assert not keeps_shared_cell(srsly.api.pickle_dumps(make_pair()))
            """,
        ),
        sys_path=[fake_srsly],
    )


def test_vendored_copy_imported_after_install_is_switched(fake_srsly):
    run_script(
        script(
            SHARED_CELL_HELPERS,
            """
            import sys
            import cloudpickle_rs
            assert "srsly" not in sys.modules
            cloudpickle_rs.install()

            import srsly.api
            import srsly.cloudpickle.cloudpickle as vendored_module
            from srsly.cloudpickle import dumps
            assert srsly.cloudpickle.dumps is dumps is cloudpickle_rs.dumps
            assert srsly.api.captured_dumps is cloudpickle_rs.dumps
            assert vendored_module.Pickler is cloudpickle_rs.Pickler
            assert keeps_shared_cell(srsly.api.pickle_dumps(make_pair()))
            # the vendored package's other parts are its own
            assert srsly.cloudpickle.__file__.startswith(sys.path[0])
            assert vendored_module._make_function is not cloudpickle_rs.cloudpickle._make_function

            cloudpickle_rs.uninstall()
            assert srsly.cloudpickle.dumps is not cloudpickle_rs.dumps
            assert vendored_module.Pickler is not cloudpickle_rs.Pickler
            assert not keeps_shared_cell(srsly.api.pickle_dumps(make_pair()))
            """,
        ),
        sys_path=[fake_srsly],
    )


UPSTREAM_WRITER = """
import dataclasses
import enum
import sys
import cloudpickle

OFFSET = 10

def add_offset(x):
    return x + OFFSET

def make_counter():
    count = 0
    def bump():
        nonlocal count
        count += 1
        return count
    return bump

def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)

class Shape:
    sides = 0
    def __init__(self, size):
        self.size = size
    def perimeter(self):
        return self.sides * self.size
    @classmethod
    def unit(cls):
        return cls(1)
    @staticmethod
    def kind():
        return "shape"
    @property
    def double(self):
        return 2 * self.size

class Square(Shape):
    sides = 4

class Color(enum.Enum):
    RED = 1
    GREEN = 2

@dataclasses.dataclass
class Pair:
    a: int
    b: int = 2

scale = 3
objs = {
    "lambda": lambda x: x * scale,
    "global": add_offset,
    "counter": make_counter(),
    "fact": fact,
    "square": Square(5),
    "Square": Square,
    "color": Color.GREEN,
    "pair": Pair(1),
    "keys": {"a": 1}.keys(),
}
payload = cloudpickle.dumps(objs, protocol=int(sys.argv[2]))
if sys.argv[3] == "fast":
    # older upstream releases named the module cloudpickle_fast
    payload = payload.replace(b"cloudpickle.cloudpickle\\n", b"cloudpickle.cloudpickle_fast\\n")
    assert b"cloudpickle.cloudpickle_fast\\n" in payload
with open(sys.argv[1], "wb") as f:
    f.write(payload)
"""

UPSTREAM_CHECKS = """
objs = pickle.loads(payload)
assert objs["lambda"](2) == 6
assert objs["global"](1) == 11
counter = objs["counter"]
counter()
assert counter() == 2
assert objs["fact"](5) == 120
square = objs["square"]
assert type(square) is objs["Square"]
assert square.perimeter() == 20 and square.double == 10
assert objs["Square"].unit().perimeter() == 4 and objs["Square"].kind() == "shape"
color = objs["color"]
assert type(color)["GREEN"] is color and color.value == 2
assert objs["pair"].b == 2 and objs["pair"] == type(objs["pair"])(1, 2)
assert list(objs["keys"]) == ["a"]
upstream_dir = os.path.join(sys.argv[2], "")
assert not [
    name for name, module in sys.modules.items()
    if (getattr(module, "__file__", None) or "").startswith(upstream_dir)
]
"""


def write_upstream_pickle(tmp_path, protocol, flavour):
    writer = tmp_path / "writer.py"
    writer.write_text(UPSTREAM_WRITER)
    out = tmp_path / f"upstream_{protocol}_{flavour}.pkl"
    result = run_python([str(writer), str(out), str(protocol), flavour])
    assert result.returncode == 0, result.stderr.decode()
    return out


def load_without_upstream(tmp_path, pickle_path, *, install):
    loader = tmp_path / "loader.py"
    loader.write_text(
        script(
            HIDE_UPSTREAM,
            "import cloudpickle_rs",
            "cloudpickle_rs.install()" if install else "",
            "import os, pickle",
            "payload = open(sys.argv[1], 'rb').read()",
            UPSTREAM_CHECKS,
        )
    )
    return run_python([str(loader), str(pickle_path), upstream_package_dir()])


@pytest.mark.parametrize("protocol, flavour", [(5, "cloudpickle"), (4, "cloudpickle"), (2, "fast")])
def test_upstream_pickles_load_through_ours_without_upstream(tmp_path, protocol, flavour):
    pickle_path = write_upstream_pickle(tmp_path, protocol, flavour)
    result = load_without_upstream(tmp_path, pickle_path, install=True)
    assert result.returncode == 0, result.stderr.decode()


def test_upstream_pickles_need_install_when_upstream_is_absent(tmp_path):
    pickle_path = write_upstream_pickle(tmp_path, 5, "cloudpickle")
    result = load_without_upstream(tmp_path, pickle_path, install=False)
    assert result.returncode != 0
    assert b"No module named 'cloudpickle'" in result.stderr


MULTIPROCESSING_SCRIPT = """
import concurrent.futures
import multiprocessing
import pickle
import cloudpickle_rs

class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y
    def norm1(self):
        return abs(self.x) + abs(self.y)

def run_pool(ctx):
    factor = 7
    with ctx.Pool(2) as pool:
        return pool.map(lambda v: v * factor, range(6))

def run_executor(ctx):
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        lam = executor.submit(lambda p: p.norm1() * 10, Point(2, -3)).result()
        mapped = list(executor.map(Point.norm1, [Point(1, 1), Point(-4, 0)]))
        return lam, mapped

ctx = multiprocessing.get_context("spawn")
cloudpickle_rs.install()
assert run_pool(ctx) == [0, 7, 14, 21, 28, 35]
assert run_executor(ctx) == (50, [2, 4])
cloudpickle_rs.uninstall()
try:
    run_pool(ctx)
except (pickle.PicklingError, AttributeError, TypeError):
    pass
else:
    raise AssertionError("a lambda went through multiprocessing without install()")
"""


def test_multiprocessing_spawn_pool_and_process_pool_executor():
    # `python -c`: the spawned children have none of __main__'s code.
    run_script(MULTIPROCESSING_SCRIPT)


PTH_NAME = "cloudpickle_rs_autoinstall.pth"


def test_pth_is_installed_in_site_packages():
    site_dirs = site.getsitepackages() + [site.getusersitepackages()]
    assert any(os.path.isfile(os.path.join(d, PTH_NAME)) for d in site_dirs), (
        f"{PTH_NAME} is not in {site_dirs}: reinstall the package (maturin develop / pip install .) to get it"
    )


def test_env_var_installs_at_startup_through_the_pth():
    out = run_script(
        """
        import sys
        assert "cloudpickle_rs" in sys.modules, "the .pth did not run install()"
        import cloudpickle
        import cloudpickle_rs
        from cloudpickle_rs import _install
        assert _install.is_installed()
        assert cloudpickle.dumps is cloudpickle_rs.dumps
        print("installed")
        """,
        env={ENV_VAR: "1"},
    )
    assert out.split() == ["installed"]


@pytest.mark.parametrize("value", [None, "", "0", "false"])
def test_pth_does_nothing_without_the_env_var(value):
    env = subprocess_env()
    env.pop(ENV_VAR, None)
    if value is not None:
        env[ENV_VAR] = value
    result = subprocess.run(
        [sys.executable, "-c", "import sys; print([m for m in sys.modules if 'cloudpickle' in m])"],
        capture_output=True,
        env=env,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == "[]"


def test_env_var_reaches_spawned_workers():
    # Workers started with the variable can send back what only cloudpickle
    # pickles (a lambda made in the worker).
    run_script(
        """
        import concurrent.futures
        import multiprocessing
        import os

        def make_adder(n):
            return lambda x: x + n

        if __name__ == "__main__":
            os.environ["CLOUDPICKLE_RS_INSTALL"] = "1"
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as executor:
                adder = executor.submit(make_adder, 5).result()
            assert adder(1) == 6
        """,
        env={ENV_VAR: "1"},
    )
