"""Side-by-side benchmark: cloudpickle_rs, upstream cloudpickle and stdlib pickle.

    python benches/run.py [--repeat N] [--quick] [--only NAME ...]

Run it as a script: it defines its dynamic payloads in ``__main__``, where
cloudpickle and cloudpickle_rs pickle them by value. For each payload and
pickler it reports the best dumps and loads time of N runs (gc disabled while
timing), the pickle size, and the peak memory of one dumps (tracemalloc), then
the ratios against cloudpickle_rs. Needs cloudpickle (and numpy for the array
payload, dill for sizes where installed): ``pip install ".[bench]"``.
"""

import argparse
import functools
import gc
import os
import pickle
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cloudpickle_rs  # noqa: E402
from payloads import Point, SlotPoint  # noqa: E402

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
    return [eval(f"lambda x, k={i}: x + k + {i}") for i in range(n)]


def make_closures(n):
    def make(i):
        offset = i * 2

        def closure(x):
            return x * offset if x > THRESHOLD else offset

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


def build_payloads(quick):
    """{label: (payload, out_of_band)}; out_of_band payloads use protocol 5 with a buffer_callback."""
    scale_down = 10 if quick else 1
    n = lambda count: max(count // scale_down, 1)  # noqa: E731
    payloads = {
        "200k importable instances": ([Point(i, -i) for i in range(n(200_000))], False),
        "200k __slots__ instances": ([SlotPoint(i, -i) for i in range(n(200_000))], False),
        "50k partials": ([functools.partial(scale, i) for i in range(n(50_000))], False),
        "200k plain records": (
            [{"id": i, "name": f"r{i}", "tags": ["a", "b"], "pos": (i, i * 0.5)} for i in range(n(200_000))],
            False,
        ),
        "100k __main__ instances": ([MainPoint(i, -i) for i in range(n(100_000))], False),
        "5000 lambdas": (make_lambdas(n(5000)), False),
        "2000 closures": (make_closures(n(2000)), False),
        "200 classes x 60 methods": (make_classes(n(200), 60), False),
    }
    if numpy is not None:
        payloads["100 MB array, protocol 5"] = (numpy.arange(n(100_000_000) // 8, dtype="float64"), True)
    return payloads


def picklers():
    found = [("cloudpickle_rs", cloudpickle_rs.dumps)]
    if cloudpickle is not None:
        found.append(("cloudpickle", cloudpickle.dumps))
    found.append(("pickle", lambda obj, **kw: pickle.dumps(obj, **{"protocol": pickle.HIGHEST_PROTOCOL, **kw})))
    return found


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

        def load_call(data=data, buffers=list(buffers)):
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


def print_table(results):
    names = [name for name, _ in picklers()]
    print(f"\nPython {sys.version.split()[0]}; times are best of runs, gc off; ratios are other/cloudpickle_rs")
    header = f"{'payload':<28} {'pickler':<15} {'dumps s':>9} {'loads s':>9} {'size':>9} {'peak dumps':>11} {'dumps x':>8} {'loads x':>8}"
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
    args = parser.parse_args()
    results = {}
    for label, (payload, out_of_band) in build_payloads(args.quick).items():
        if args.only and not any(word in label for word in args.only):
            continue
        PAYLOAD_CACHE[label] = payload
        results[label] = measure(payload, out_of_band, args.repeat)
    if not args.only or any("closure" in w for w in args.only):
        count = 2000 if args.quick else 20_000
        results[f"1 closure x {count} round trips"] = round_trip_small_closure(args.repeat, count)
    print_table(results)


if __name__ == "__main__":
    main()
