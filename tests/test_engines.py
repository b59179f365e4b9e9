"""The real engines, on loopback, switched to cloudpickle-rs by install().

Each test runs a driver script as ``__main__`` in a fresh interpreter that
starts the engine's workers itself. Every test proves that cloudpickle-rs did
the pickling, not the engine's vendored or upstream cloudpickle: the task
calls two closures that share one cell (``put`` stores, ``get`` reads).
cloudpickle-rs keeps the cell shared, so ``get`` returns what ``put`` stored;
upstream cloudpickle gives each function its own cell, so ``get`` would
return ``"unset"``.

Dask and joblib are quick; PySpark and Ray start a JVM or a Ray node and are
marked slow. Each test skips only when its engine is not installed
(``pip install ".[engines]"``).
"""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from testutils import MAKE_PAIR, subprocess_env, subprocess_loads

ENGINE_TIMEOUT = 240

SHARED_CELL = (
    MAKE_PAIR
    + """
put, get = make_pair()
"""
)

LOOPBACK_ENV = {
    "SPARK_LOCAL_IP": "127.0.0.1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYSPARK_PYTHON": sys.executable,
    "PYSPARK_DRIVER_PYTHON": sys.executable,
}


def run_driver(tmp_path, source, *args):
    """Runs ``source`` as the ``__main__`` script of a fresh interpreter in its
    own process group (killed afterwards, with any worker it left); returns
    its stdout lines. Fails with the script's output if it exits non-zero."""
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(source))
    env = subprocess_env(LOOPBACK_ENV)
    env.pop("CLOUDPICKLE_RS_INSTALL", None)
    process = subprocess.Popen(
        [sys.executable, str(script), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=ENGINE_TIMEOUT)
    finally:
        kill_group(process.pid)
    assert process.returncode == 0, (
        f"driver exited with {process.returncode}\n--- stdout:\n{stdout.decode()}"
        f"\n--- stderr:\n{stderr.decode()[-6000:]}"
    )
    return stdout.decode().splitlines()


def kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def by_value_package(tmp_path):
    """A package that only the driver can import (its directory is put on the
    driver's sys.path after the workers have started). Its function calls two
    module-level closures sharing one cell."""
    root = tmp_path / "client_only"
    package = root / "cprs_client_only_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        MAKE_PAIR
        + textwrap.dedent(
            """
            put, get = make_pair()

            def store_and_read(x):
                put(x * 2)
                return get()
            """
        )
    )
    return root


DASK_DRIVER = (
    """
import importlib.util
import sys
import cloudpickle_rs
"""
    + SHARED_CELL
    + """
class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

def results(futures):
    return [future.result(timeout=120) for future in futures]

if __name__ == "__main__":
    cloudpickle_rs.install()
    from dask.distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1,
        host="127.0.0.1", dashboard_address=None,
    ) as cluster, Client(cluster) as client:
        points = [Point(i, 10) for i in range(4)]
        print(results(client.map(lambda p: (put(p.x + p.y), get())[1], points)))
        # Workers send results with upstream cloudpickle (no install() there).
        echoed = results(client.map(lambda i: Point(i, -i), range(3)))
        print([type(p) is Point for p in echoed], [p.y for p in echoed])

        sys.path.insert(0, sys.argv[1])
        import cloudpickle
        import cprs_client_only_pkg
        from cprs_client_only_pkg import store_and_read
        cloudpickle.register_pickle_by_value(cprs_client_only_pkg)
        lacks = client.run(lambda: importlib.util.find_spec("cprs_client_only_pkg") is None)
        print(sorted(set(lacks.values())), len(lacks))
        print(results(client.map(lambda x: store_and_read(x), range(4))))
"""
)


def test_dask_distributed_local_cluster(tmp_path):
    pytest.importorskip("distributed")
    lines = run_driver(tmp_path, DASK_DRIVER, by_value_package(tmp_path))
    assert lines[-4:] == [
        "[10, 11, 12, 13]",
        "[True, True, True] [0, -1, -2]",
        "[True] 2",
        "[0, 2, 4, 6]",
    ]


JOBLIB_DRIVER = (
    """
import sys
import cloudpickle_rs
"""
    + SHARED_CELL
    + """
class Point:
    def __init__(self, x):
        self.x = x

def make_adder(n):
    return lambda x: x + n

if __name__ == "__main__":
    import_first = sys.argv[1] == "import-first"
    if import_first:
        from joblib import Parallel, delayed
    cloudpickle_rs.install()
    from joblib import Parallel, delayed
    from joblib.externals.loky.backend import reduction

    print(reduction.get_loky_pickler_name())
    print(issubclass(reduction.get_loky_pickler(), cloudpickle_rs.Pickler))
    offset = 100
    with Parallel(n_jobs=2, backend="loky", timeout=120) as parallel:
        print(parallel(delayed(lambda x: x + offset)(i) for i in range(4)))
        print(parallel(delayed(make_adder(5))(i) for i in range(4)))
        print(parallel(delayed(lambda x: (put(x), get())[1])(i) for i in range(4)))
        # The workers send results with their own "cloudpickle" pickler.
        echoed = parallel(delayed(Point)(i) for i in range(3))
        print([type(p) is Point for p in echoed], [p.x for p in echoed])
    cloudpickle_rs.uninstall()
    print(reduction.get_loky_pickler_name())
"""
)


SRSLY_DRIVER = (
    """
import sys
import cloudpickle_rs
"""
    + SHARED_CELL
    + """
if __name__ == "__main__":
    if sys.argv[1] == "import-first":
        import srsly
    cloudpickle_rs.install()
    import srsly
    print(srsly.cloudpickle.dumps is cloudpickle_rs.dumps)
    print(srsly.pickle_dumps(lambda x: (put(x), get())[1]).hex())
    cloudpickle_rs.uninstall()
    print(srsly.cloudpickle.dumps is cloudpickle_rs.dumps)
"""
)


@pytest.mark.parametrize("order", ["import-first", "install-first"])
def test_srsly_pickles_with_cloudpickle_rs(tmp_path, order):
    # srsly (spaCy's serialization library) vendors cloudpickle as srsly.cloudpickle.
    pytest.importorskip("srsly")
    switched, payload, restored = run_driver(tmp_path, SRSLY_DRIVER, order)
    assert (switched, restored) == ("True", "False")
    out = subprocess_loads(bytes.fromhex(payload), "import srsly\nprint(srsly.pickle_loads(data)(5))")
    assert out.split() == ["5"]


@pytest.mark.parametrize("order", ["import-first", "install-first"])
def test_joblib_loky(tmp_path, order):
    pytest.importorskip("joblib")
    lines = run_driver(tmp_path, JOBLIB_DRIVER, order)
    assert lines == [
        "cloudpickle",
        "True",
        "[100, 101, 102, 103]",
        "[5, 6, 7, 8]",
        "[0, 1, 2, 3]",
        "[True, True, True] [0, 1, 2]",
        "cloudpickle",
    ]


LOKY_SWITCH_DRIVER = """
import cloudpickle_rs
cloudpickle_rs.install()
from joblib.externals.loky import set_loky_pickler
from joblib.externals.loky.backend import reduction

def show(label):
    pickler = reduction.get_loky_pickler()
    print(label, reduction.get_loky_pickler_name(),
          issubclass(pickler, cloudpickle_rs.Pickler))

show("installed")
for name in ["pickle", None, "pickle", "", "pickle", "cloudpickle"]:
    set_loky_pickler(name)
    show(repr(name))
"""


def test_set_loky_pickler_behaves_as_loky_documents_after_install(tmp_path):
    # loky: None and "" mean its default, "cloudpickle" (here ours); "pickle"
    # is the standard library's.
    pytest.importorskip("joblib")
    lines = run_driver(tmp_path, LOKY_SWITCH_DRIVER)
    assert lines == [
        "installed cloudpickle True",
        "'pickle' pickle False",
        "None cloudpickle True",
        "'pickle' pickle False",
        "'' cloudpickle True",
        "'pickle' pickle False",
        "'cloudpickle' cloudpickle True",
    ]


SPARK_DRIVER = (
    """
import cloudpickle_rs
from pyspark import SparkConf, SparkContext
import pyspark.cloudpickle
import pyspark.serializers
"""
    + SHARED_CELL
    + """
if __name__ == "__main__":
    cloudpickle_rs.install()
    print(pyspark.serializers.cloudpickle.dumps is cloudpickle_rs.dumps)
    conf = (
        SparkConf().setMaster("local[2]").setAppName("cloudpickle-rs")
        .set("spark.ui.enabled", "false")
        .set("spark.driver.host", "127.0.0.1")
        .set("spark.driver.bindAddress", "127.0.0.1")
    )
    sc = SparkContext(conf=conf)
    sc.setLogLevel("ERROR")
    try:
        factor = 3
        print(sc.parallelize(range(6), 2).map(lambda x: x * factor).collect())
        print(sc.parallelize(range(6), 2).map(lambda x: (put(x), get())[1]).collect())
    finally:
        sc.stop()
"""
)


@pytest.mark.slow
def test_pyspark_local(tmp_path):
    pytest.importorskip("pyspark")
    lines = run_driver(tmp_path, SPARK_DRIVER)
    assert lines[-3:] == ["True", "[0, 3, 6, 9, 12, 15]", "[0, 1, 2, 3, 4, 5]"]


RAY_DRIVER = (
    """
import sys
import cloudpickle_rs
"""
    + SHARED_CELL
    + """
if __name__ == "__main__":
    install_first = sys.argv[1] == "install-first"
    if install_first:
        cloudpickle_rs.install()
    import ray
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    if not install_first:
        cloudpickle_rs.install()
    try:
        print(ray.cloudpickle.dumps is cloudpickle_rs.dumps)
        factor = 3
        ref = ray.put(10)

        @ray.remote
        def scaled_plus_ref(x):
            return x * factor + ray.get(ref)

        @ray.remote
        def store_and_read(x):
            put(x)
            return get()

        print(ray.get([scaled_plus_ref.remote(i) for i in range(4)], timeout=120))
        print(ray.get([store_and_read.remote(i) for i in range(4)], timeout=120))
    finally:
        ray.shutdown()
"""
)


@pytest.mark.slow
@pytest.mark.parametrize("order", ["install-first", "init-first"])
def test_ray_local(tmp_path, order):
    pytest.importorskip("ray")
    lines = run_driver(tmp_path, RAY_DRIVER, order)
    assert lines[-3:] == ["True", "[10, 13, 16, 19]", "[0, 1, 2, 3]"]
