"""Side-by-side benchmark: cloudpickle_rs, upstream cloudpickle and stdlib pickle.

    python benches/run.py [--repeat N] [--quick] [--only NAME ...] [--instructions]

Run it as a script: it defines its dynamic payloads in ``__main__``, where
cloudpickle and cloudpickle_rs pickle them by value. For each payload and
pickler it reports the best dumps and loads time of N runs (gc disabled while
timing), the pickle size, and the peak memory of one dumps (tracemalloc), then
the ratios against cloudpickle_rs. Needs cloudpickle (and numpy for the array
payload, dill for sizes where installed): ``pip install ".[bench]"``.

``--instructions`` also counts instructions per operation with ``valgrind
--tool=callgrind``, in the same table: for each payload (smaller ones, see
``PAYLOADS``), pickler and operation, a run of this script doing the
operation R times minus a run doing everything else but the operation,
divided by R (PYTHONHASHSEED=0). Counts repeat exactly for the same build
and inputs whatever else the machine does; wall-clock ratios on a shared
machine move by tens of percent between runs.
"""

import argparse
import functools
import gc
import math
import os
import pickle
import re
import subprocess
import sys
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from payloads import Point, SlotPoint  # noqa: E402

import cloudpickle_rs  # noqa: E402

try:
    import cloudpickle
except ImportError:  # pragma: no cover - the suite is meant to run with it
    cloudpickle = None
try:
    import dill
except ImportError:
    dill = None
try:
    import numpy
except ImportError:
    numpy = None

THRESHOLD = 0.5  # a global the closures read


class MainPoint:
    """A class of __main__: pickled by value, once, then its instances by reference to it."""

    def __init__(self, x, y):
        self.x = x
        self.y = y


def scale(value, factor=2):
    return value * factor


def make_lambdas(n):
    """Lambdas with a default, reading a global."""
    return [eval(f"lambda x, k={i}: x + k + THRESHOLD") for i in range(n)]


def make_closures(n):
    def make(i):
        offset = i * 2

        def closure(x):
            return math.floor(x * offset) if x > THRESHOLD else offset

        return closure

    return [make(i) for i in range(n)]


def make_classes(n, methods):
    classes = []
    for c in range(n):
        namespace = {"__name__": __name__}  # methods of __main__, as a class body makes them
        for m in range(methods):
            exec(f"def method_{m}(self, x):\n    return x + {m} + {c}", namespace)
        body = {k: v for k, v in namespace.items() if k.startswith("method_")}
        classes.append(type(f"Dynamic{c}", (), body))
    return classes


def small_closure():
    k = 3

    def task(x, y=2):
        return x + y + k + THRESHOLD

    return task


#: label template, builder, count for timing, count for instruction counts,
#: out of band (protocol 5 with a buffer_callback).
PAYLOADS = [
    ("{n} importable instances", lambda n: [Point(i, -i) for i in range(n)], 200_000, 2000, False),
    ("{n} __slots__ instances", lambda n: [SlotPoint(i, -i) for i in range(n)], 200_000, 2000, False),
    ("{n} partials", lambda n: [functools.partial(scale, i) for i in range(n)], 50_000, 1000, False),
    (
        "{n} plain records",
        lambda n: [{"id": i, "name": f"r{i}", "tags": ["a", "b"], "pos": (i, i * 0.5)} for i in range(n)],
        200_000,
        1000,
        False,
    ),
    ("{n} __main__ instances", lambda n: [MainPoint(i, -i) for i in range(n)], 100_000, 1000, False),
    ("{n} lambdas", make_lambdas, 5000, 1000, False),
    ("{n} closures", make_closures, 2000, 500, False),
    ("{n} classes x 60 methods", lambda n: make_classes(n, 60), 200, 20, False),
]
#: One small closure, pickled and loaded on its own: the cost of shipping a task.
SMALL_CLOSURE = "1 small closure"


def build_payloads(quick, instructions=False):
    """{label: (payload, out_of_band)}; out_of_band payloads use protocol 5 with a buffer_callback."""
    scale_down = 10 if quick else 1
    payloads = {}
    for template, build, timed_count, counted_count, out_of_band in PAYLOADS:
        n = counted_count if instructions else max(timed_count // scale_down, 1)
        payloads[template.format(n=n)] = (build(n), out_of_band)
    if numpy is not None and not instructions:
        payloads["100 MB array, protocol 5"] = (numpy.arange(100_000_000 // 8 // scale_down, dtype="float64"), True)
    return payloads


def picklers():
    found = [("cloudpickle_rs", cloudpickle_rs.dumps)]
    if cloudpickle is not None:
        found.append(("cloudpickle", cloudpickle.dumps))
    found.append(("pickle", lambda obj, **kw: pickle.dumps(obj, **{"protocol": pickle.HIGHEST_PROTOCOL, **kw})))
    return found


# -- instruction counts (valgrind --tool=callgrind)

#: Operations per counted run: enough to dwarf the noise of one, few enough
#: for valgrind's ~50x slowdown.
COUNT_REPEAT = {SMALL_CLOSURE: 200}
DEFAULT_COUNT_REPEAT = 3


def count_child(label, pickler_name, op, repeat):
    """The counted process: builds the payload, pickles it once (every run
    does the same work but the operations), then runs `op` `repeat` times."""
    if label == SMALL_CLOSURE:
        payload = small_closure()
    else:
        payload, _ = build_payloads(False, instructions=True)[label]
    dumps = dict(picklers())[pickler_name]
    data = dumps(payload)
    calls = {"dumps": lambda: dumps(payload), "loads": lambda: pickle.loads(data), "none": None}
    call = calls[op]
    gc.collect()
    gc.disable()
    for _ in range(repeat if call is not None else 0):
        call()


def callgrind_total(args):
    """Instructions a run of this script with `args` executes (callgrind's total)."""
    env = dict(os.environ, PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1")
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__, *args],
        capture_output=True,
        text=True,
        env=env,
    )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run {args} failed:\n{result.stderr[-2000:]}")
    return int(found.group(1))


def instructions_per_op(label, pickler_name):
    """(dumps, loads) instructions per operation, by difference of runs."""
    repeat = COUNT_REPEAT.get(label, DEFAULT_COUNT_REPEAT)
    runs = [("none", 0), ("dumps", repeat), ("loads", repeat)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        totals = list(
            pool.map(lambda run: callgrind_total(["--count", label, pickler_name, run[0], str(run[1])]), runs)
        )
    base = totals[0]
    return tuple(round((total - base) / repeat) for total in totals[1:])


def can_pickle(label, pickler_name):
    payload = small_closure() if label == SMALL_CLOSURE else build_payloads(False, instructions=True)[label][0]
    try:
        dict(picklers())[pickler_name](payload)
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True


def count_all(only):
    """{label: {pickler: (dumps Ir, loads Ir)}} for the instruction payloads."""
    labels = [*build_payloads(False, instructions=True), SMALL_CLOSURE]
    counts = {}
    for label in labels:
        if only and not any(word in label for word in only):
            continue
        counts[label] = {}
        for name, _ in picklers():
            if can_pickle(label, name):
                counts[label][name] = instructions_per_op(label, name)
                print(f"  counted {label}, {name}: {counts[label][name]}", file=sys.stderr, flush=True)
    return counts


def timed(func):
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def best_interleaved(calls, repeat):
    """{name: (best dumps s, best loads s)} for {name: (dump_call, load_call)}.

    Each round runs every pickler once, so that the machine's drift (other
    load, frequency changes) hits them all alike; gc is off while timing.
    """
    best = {name: [float("inf"), float("inf")] for name in calls}
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            for name, pair in calls.items():
                for i, call in enumerate(pair):
                    best[name][i] = min(best[name][i], timed(call))
    finally:
        gc.enable()
    return {name: tuple(times) for name, times in best.items()}


def peak_memory(func):
    gc.collect()
    tracemalloc.start()
    try:
        func()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measure(payload, out_of_band, repeat):
    """{pickler: (dumps s, loads s, size, peak bytes)}, leaving out the
    picklers that cannot pickle the payload."""
    calls, sizes, peaks = {}, {}, {}
    for name, dumps in picklers():
        buffers = []
        kwargs = {"protocol": 5, "buffer_callback": buffers.append} if out_of_band else {}
        try:
            data = dumps(payload, **kwargs)
        except (pickle.PicklingError, AttributeError, TypeError):
            continue

        def dump_call(dumps=dumps, kwargs=kwargs, buffers=buffers):
            buffers.clear()
            dumps(payload, **kwargs)

        def load_call(data=data, buffers=list(buffers)):  # noqa: B006 (a copy bound now, on purpose)
            pickle.loads(data, buffers=buffers)

        calls[name] = (dump_call, load_call)
        sizes[name] = len(data)
        peaks[name] = peak_memory(dump_call)
    times = best_interleaved(calls, repeat)
    return {name: (*times[name], sizes[name], peaks[name]) for name in calls}


def round_trip_small_closure(repeat, count):
    """One small closure pickled and loaded `count` times: the cost of shipping a task."""
    task = small_closure()
    calls, sizes = {}, {}
    for name, dumps in picklers():
        try:
            data = dumps(task)
        except (pickle.PicklingError, AttributeError, TypeError):
            continue
        calls[name] = (
            lambda dumps=dumps: [dumps(task) for _ in range(count)],
            lambda data=data: [pickle.loads(data) for _ in range(count)],
        )
        sizes[name] = len(data)
    times = best_interleaved(calls, repeat)
    return {name: (*times[name], sizes[name], None) for name in calls}


def human_bytes(n):
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def print_counted_table(results, counts):
    """Per operation: time (best of runs) and instructions (callgrind), side by side."""
    names = [name for name, _ in picklers()]
    print(
        f"\nPython {sys.version.split()[0]}; per operation: best time of runs (gc off) and instructions "
        "(callgrind, by difference); ratios are other/cloudpickle_rs"
    )
    header = (
        f"{'payload':<26} {'pickler':<15} {'dumps us':>9} {'loads us':>9} {'dumps Ir':>11} {'loads Ir':>11}"
        f" {'size':>9} {'dumps x':>8} {'loads x':>8} {'dumps Ir x':>10} {'loads Ir x':>10}"
    )
    print(header)
    print("-" * len(header))
    for label, rows in results.items():
        payload = label
        ours, ours_ir = rows.get("cloudpickle_rs"), counts.get(label, {}).get("cloudpickle_rs")
        for name in names:
            row, ir = rows.get(name), counts.get(label, {}).get(name)
            if row is None:
                print(f"{payload:<26} {name:<15} {'cannot pickle':>9}")
                payload = ""
                continue
            dump_time, load_time, size, _ = row
            cells = [f"{dump_time * 1e6:>9.1f}", f"{load_time * 1e6:>9.1f}"]
            cells += [f"{ir[0]:>11,}", f"{ir[1]:>11,}"] if ir else [f"{'-':>11}"] * 2
            cells.append(f"{human_bytes(size):>9}")
            if name != "cloudpickle_rs" and ours is not None:
                cells += [f"{dump_time / ours[0]:>8.2f}", f"{load_time / ours[1]:>8.2f}"]
                if ir and ours_ir:
                    cells += [f"{ir[0] / ours_ir[0]:>10.2f}", f"{ir[1] / ours_ir[1]:>10.2f}"]
            print(f"{payload:<26} {name:<15} " + " ".join(cells))
            payload = ""


def print_table(results):
    names = [name for name, _ in picklers()]
    print(f"\nPython {sys.version.split()[0]}; times are best of runs, gc off; ratios are other/cloudpickle_rs")
    header = (
        f"{'payload':<28} {'pickler':<15} {'dumps s':>9} {'loads s':>9} {'size':>9} {'peak dumps':>11}"
        f" {'dumps x':>8} {'loads x':>8}"
    )
    print(header)
    print("-" * len(header))
    for payload, rows in results.items():
        ours = rows.get("cloudpickle_rs")
        for name in names:
            row = rows.get(name)
            if row is None:
                print(f"{payload:<28} {name:<15} {'cannot pickle':>9}")
                continue
            dump_time, load_time, size, peak = row
            ratios = ("", "")
            if ours is not None and name != "cloudpickle_rs":
                ratios = (f"{dump_time / ours[0]:.2f}", f"{load_time / ours[1]:.2f}")
            peak_text = human_bytes(peak) if peak is not None else "-"
            print(
                f"{payload:<28} {name:<15} {dump_time:>9.4f} {load_time:>9.4f} {human_bytes(size):>9} "
                f"{peak_text:>11} {ratios[0]:>8} {ratios[1]:>8}"
            )
            payload = ""
    if dill is not None:
        print("\nsizes with dill", dill.__version__, "(for reference):")
        for label in ("5000 lambdas", "2000 closures"):
            if label in PAYLOAD_CACHE:
                print(f"  {label:<26} {human_bytes(len(dill.dumps(PAYLOAD_CACHE[label], recurse=True)))}")


PAYLOAD_CACHE = {}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="payloads 10x smaller, for a smoke run")
    parser.add_argument("--only", nargs="*", help="payload names containing these words")
    parser.add_argument(
        "--instructions", action="store_true", help="also count instructions per operation (valgrind's callgrind)"
    )
    parser.add_argument("--count", nargs=4, metavar=("PAYLOAD", "PICKLER", "OP", "R"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count:
        label, pickler_name, op, repeat = args.count
        count_child(label, pickler_name, op, int(repeat))
        return
    results = {}
    for label, (payload, out_of_band) in build_payloads(args.quick, args.instructions).items():
        if args.only and not any(word in label for word in args.only):
            continue
        PAYLOAD_CACHE[label] = payload
        results[label] = measure(payload, out_of_band, args.repeat)
    if args.instructions:
        if not args.only or any(word in SMALL_CLOSURE for word in args.only):
            count = 2000
            per_op = round_trip_small_closure(args.repeat, count)
            results[SMALL_CLOSURE] = {
                name: (dump_time / count, load_time / count, size, peak)
                for name, (dump_time, load_time, size, peak) in per_op.items()
            }
        print_counted_table(results, count_all(args.only))
        return
    if not args.only or any("closure" in w for w in args.only):
        count = 2000 if args.quick else 20_000
        results[f"1 closure x {count} round trips"] = round_trip_small_closure(args.repeat, count)
    print_table(results)


if __name__ == "__main__":
    main()
