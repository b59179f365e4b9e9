"""The public API: the same names, signatures and defaults as cloudpickle 3.1."""

import inspect
import io
import pickle

import pytest

import cloudpickle_rs
from testutils import run_python, run_script, run_sender, subprocess_loads


def test_loading_side_is_the_standard_library():
    assert cloudpickle_rs.Unpickler is pickle.Unpickler
    assert cloudpickle_rs.pickle is pickle
    assert issubclass(cloudpickle_rs.RestrictedUnpickler, pickle.Unpickler)
    # Without allow=, loads and load are pickle's, keyword arguments and all.
    payload = pickle.dumps(["caf\xe9", b"raw"], protocol=2)
    assert cloudpickle_rs.loads(payload) == ["caf\xe9", b"raw"]
    py2_string = b"\x80\x02U\x04caf\xe9."  # SHORT_BINSTRING, as Python 2 wrote str
    assert cloudpickle_rs.loads(py2_string, encoding="latin1") == "caf\xe9"
    assert cloudpickle_rs.loads(py2_string, encoding="bytes") == b"caf\xe9"
    with pytest.raises(UnicodeDecodeError):
        cloudpickle_rs.loads(py2_string)
    assert cloudpickle_rs.load(io.BytesIO(payload)) == ["caf\xe9", b"raw"]
    with pytest.raises(EOFError):
        cloudpickle_rs.load(io.BytesIO())


def test_loads_and_load_take_pickles_arguments_and_allow():
    for ours, stdlib in ((cloudpickle_rs.loads, pickle.loads), (cloudpickle_rs.load, pickle.load)):
        theirs = inspect.signature(stdlib).parameters
        params = inspect.signature(ours).parameters
        assert list(params)[0] == list(theirs)[0]
        assert params["allow"].kind is inspect.Parameter.KEYWORD_ONLY
        assert params["allow"].default is None
        with pytest.raises(TypeError):
            ours(io.BytesIO() if ours is cloudpickle_rs.load else b"", no_such_option=1)


def test_default_protocol_and_version():
    assert cloudpickle_rs.DEFAULT_PROTOCOL == pickle.HIGHEST_PROTOCOL
    assert isinstance(cloudpickle_rs.__version__, str)
    assert cloudpickle_rs.__version__


def test_dumps_default_protocol_is_5():
    payload = cloudpickle_rs.dumps(lambda: 1)
    assert payload[0] == pickle.PROTO[0]
    assert payload[1] == 5


def test_dumps_positional_protocol():
    offset = 3
    payload = cloudpickle_rs.dumps(lambda x: x + offset, 2)
    assert payload[1] == 2
    assert pickle.loads(payload)(1) == 4


def test_dump_writes_to_a_file(tmp_path):
    scale = 4
    path = tmp_path / "f.pkl"
    with open(path, "wb") as f:
        cloudpickle_rs.dump(lambda x: x * scale, f)
        cloudpickle_rs.dump({"second": 2}, f, 3)
    with open(path, "rb") as f:
        first = cloudpickle_rs.load(f)
        second = cloudpickle_rs.load(f)
    assert first(5) == 20
    assert second == {"second": 2}
    data = path.read_bytes()
    assert data[1] == cloudpickle_rs.DEFAULT_PROTOCOL


def test_dump_with_buffer_callback():
    buffers = []
    out = io.BytesIO()
    blob = pickle.PickleBuffer(bytearray(b"z" * 4096))
    cloudpickle_rs.dump(blob, out, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 1
    assert b"z" * 64 not in out.getvalue()
    loaded = pickle.loads(out.getvalue(), buffers=buffers)
    assert bytes(loaded) == b"z" * 4096


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_buffer_callback_needs_protocol_5(protocol):
    with pytest.raises(ValueError):
        pickle.dumps(1, protocol=protocol, buffer_callback=list().append)
    with pytest.raises(ValueError):
        cloudpickle_rs.dumps(1, protocol=protocol, buffer_callback=list().append)
    with pytest.raises(ValueError):
        cloudpickle_rs.dump(1, io.BytesIO(), protocol=protocol, buffer_callback=list().append)


@pytest.mark.parametrize("name", ["dumps", "dump"])
def test_signatures_match_upstream(name):
    import cloudpickle

    ours = inspect.signature(getattr(cloudpickle_rs, name))
    theirs = inspect.signature(getattr(cloudpickle, name))
    # Ours may add keyword-only options (compat) after upstream's parameters.
    extra = list(ours.parameters)[len(theirs.parameters) :]
    assert list(ours.parameters)[: len(theirs.parameters)] == list(theirs.parameters)
    assert all(ours.parameters[p].kind is inspect.Parameter.KEYWORD_ONLY for p in extra)
    for param_name, theirs_param in theirs.parameters.items():
        ours_param = ours.parameters[param_name]
        assert ours_param.default == theirs_param.default, param_name
        assert ours_param.kind == theirs_param.kind, param_name


def test_keyword_arguments_by_upstream_names():
    out = io.BytesIO()
    cloudpickle_rs.dump(obj=[1], file=out, protocol=4, buffer_callback=None)
    assert pickle.loads(out.getvalue()) == [1]
    payload = cloudpickle_rs.dumps(obj=[2], protocol=3, buffer_callback=None)
    assert payload[1] == 3 and pickle.loads(payload) == [2]


def test_list_registry_pickle_by_value_returns_a_set():
    registry = cloudpickle_rs.list_registry_pickle_by_value()
    assert isinstance(registry, set)


def test_demo_command_runs():
    # Relies on the real package (its __main__): fails against a shim.
    result = run_python(["-m", "cloudpickle_rs", "demo"])
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    assert result.stdout.strip()


def test_closures_of_one_factory_share_their_globals_yet_each_dump_reads_them_afresh():
    payload = run_sender(
        """
import math
import pickle
import cloudpickle_rs

SCALE = 2

def make(i):
    def scaled(x):
        return math.floor(x * SCALE) + i
    return scaled

fs = [make(i) for i in range(50)]
before = cloudpickle_rs.dumps(fs)
SCALE = 3
after = cloudpickle_rs.dumps(fs)
alone = len(cloudpickle_rs.dumps(fs[0]))
# The referenced globals (SCALE, math) travel once, not once per closure:
# each closure more adds its cell and references (25 bytes; 37 with a
# dict of globals each).
assert (len(after) - alone) / 49 < 32, (len(after), alone)
objs = (before, after)
"""
    )
    subprocess_loads(
        payload,
        """
before, after = (pickle.loads(p) for p in objs)
assert [f(1) for f in before] == [2 + i for i in range(50)]
assert [f(1) for f in after] == [3 + i for i in range(50)]
""",
    )


def test_a_global_a_pickled_function_read_is_freed_once_the_program_drops_it():
    result = run_python(
        [
            "-c",
            """
import gc, weakref
import cloudpickle_rs

class Big:
    pass

BIG = Big()
alive = weakref.ref(BIG)
cloudpickle_rs.dumps(lambda: BIG)
del BIG
gc.collect()
assert alive() is None, "the pickler still holds a global of a function it pickled"
""",
        ]
    )
    assert result.returncode == 0, result.stderr.decode()


def test_a_large_dumps_keeps_nothing_once_done():
    # dumps keeps its pickler for the next call, but not after an output of
    # more than 256 KiB (its memo table grew for that many objects), nor,
    # below protocol 4 (no frames: its buffer holds the whole output), after
    # more than 64 KiB.
    out = run_script(
        """
import tracemalloc
import cloudpickle_rs

def kept_after(payload, **options):
    cloudpickle_rs.dumps([1], **options)
    before = tracemalloc.get_traced_memory()[0]
    size = len(cloudpickle_rs.dumps(payload, **options))
    return size, tracemalloc.get_traced_memory()[0] - before

tracemalloc.start()
large = [f"w{i}" for i in range(60_000)]
size, kept = kept_after(large)
assert size > 256 * 1024 and kept < 16 * 1024, (size, kept)
size, kept = kept_after(large[:12_000], protocol=3)
assert 64 * 1024 < size < 256 * 1024 and kept < 16 * 1024, (size, kept)
print("ok")
"""
    )
    assert out.strip() == "ok"


def test_what_pickler_dump_reached_is_freed_with_its_last_reference():
    # Nothing of one Pickler.dump outlives it: a global the pickled function
    # read dies as soon as the module lets it go, not at some later call.
    out = run_script(
        """
import gc, io, weakref
import cloudpickle_rs

class Big:
    pass

big = Big()

def uses_big():
    return big

cloudpickle_rs.Pickler(io.BytesIO()).dump(uses_big)
ref = weakref.ref(big)
del big
gc.collect()
print("freed" if ref() is None else "alive")
"""
    )
    assert out.strip() == "freed"


def test_dumps_of_many_instances_of_a_main_class_keeps_no_copy_of_their_states():
    # Each instance's state is written from a copy with canonical names; the
    # pickler's memo holds every copy until the dump ends, so once written a
    # copy is emptied. Peak memory per instance, against stdlib pickle
    # writing the same instances (their class by reference): a 2-item copy
    # costs about 180 bytes, its empty shell about 60.
    out = run_script(
        """
import pickle, tracemalloc
import cloudpickle_rs

class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

points = [Point(i, -i) for i in range(20_000)]

def peak(dumps):
    dumps(points)
    tracemalloc.start()
    dumps(points)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak

extra = (peak(cloudpickle_rs.dumps) - peak(pickle.dumps)) / len(points)
assert extra < 100, extra
loaded = pickle.loads(cloudpickle_rs.dumps(points))
assert [(p.x, p.y) for p in loaded] == [(p.x, p.y) for p in points]
print("ok")
"""
    )
    assert out.strip() == "ok"


def test_what_pickling_derives_from_code_objects_dies_with_them():
    # Each code object carries what pickling it derived (its encoding, its
    # canonical copy); the tables of code by content are bounded. Pickling
    # ever new functions must not grow memory without bound.
    out = run_script(
        """
import gc, tracemalloc
import cloudpickle_rs

def pickle_a_new_function(i):
    namespace = {}
    exec(f"def f(x):\\n    return x + {i} + len('{'y' * 200}')", namespace)
    cloudpickle_rs.dumps(namespace["f"])

def grown(start, stop):
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(start, stop):
        pickle_a_new_function(i)
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before

tracemalloc.start()
grown(0, 15_000)
later = grown(15_000, 30_000)
print("grown", later)
assert later < 1_000_000, later
"""
    )
    assert out.startswith("grown")


def test_a_small_dumps_after_a_large_one_frees_what_the_large_one_grew():
    # dumps reuses its pickler between calls, and the C pickler's memo table
    # never shrinks: after a pickle of many objects, a small dumps must not
    # keep that table (it held hundreds of kB, and every later small dumps
    # walked and zeroed all of it).
    out = run_script(
        """
import tracemalloc
import cloudpickle_rs

words = [f"w{i}" for i in range(3000)]
cloudpickle_rs.dumps([1])
tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
assert 1024 < len(cloudpickle_rs.dumps(words)) < 64 * 1024
cloudpickle_rs.dumps([1])
kept = tracemalloc.get_traced_memory()[0] - before
print("kept", kept)
assert kept < 32 * 1024, kept
"""
    )
    assert out.startswith("kept")
