"""What the native reducer_override costs an ordinary object.

Times dumps of 200k instances of an importable class (every one reaches the
hook, which answers NotImplemented) with stdlib pickle, cloudpickle_rs (plain,
a subclass, a subclass with a class-level dispatch entry, an instance table),
and upstream cloudpickle, in one process; best of N with gc disabled.

    python benches/bench_hook.py [--repeat N]
"""

import argparse
import gc
import io
import os
import pickle
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from payloads import Point  # noqa: E402

import cloudpickle_rs  # noqa: E402

try:
    import cloudpickle
except ImportError:
    cloudpickle = None


class Unrelated:
    pass


def best(func, repeat):
    times = []
    gc.disable()
    try:
        for _ in range(repeat):
            start = time.perf_counter()
            func()
            times.append(time.perf_counter() - start)
    finally:
        gc.enable()
    return min(times)


class Sub(cloudpickle_rs.Pickler):
    def __init__(self, file, extra=None):
        super().__init__(file)
        self.extra = extra


class InstanceTable(cloudpickle_rs.Pickler):
    def __init__(self, file):
        super().__init__(file)
        self.dispatch_table = dict(self.dispatch_table)
        self.dispatch_table[Unrelated] = lambda o: (Unrelated, ())


def with_pickler(cls):
    def dumps(obj):
        f = io.BytesIO()
        cls(f).dump(obj)
        return f.getvalue()

    return dumps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--n", type=int, default=200_000)
    args = parser.parse_args()
    payload = [Point(i, -i) for i in range(args.n)]
    cases = [
        ("pickle.dumps", lambda: pickle.dumps(payload, pickle.HIGHEST_PROTOCOL)),
        ("cloudpickle_rs.dumps", lambda: cloudpickle_rs.dumps(payload)),
        ("cloudpickle_rs subclass", lambda: with_pickler(Sub)(payload)),
    ]
    cloudpickle_rs.Pickler.dispatch_table[Unrelated] = lambda o: (Unrelated, ())
    try:
        cases.append(("class-level dispatch entry", lambda: cloudpickle_rs.dumps(payload)))
        cases.append(("instance dispatch_table", lambda: with_pickler(InstanceTable)(payload)))
        if cloudpickle is not None:
            cases.append(("upstream cloudpickle.dumps", lambda: cloudpickle.dumps(payload)))
        # Interleave the cases so that drift (other load, heap growth) hits all alike.
        times = {label: float("inf") for label, _ in cases}
        for _ in range(args.repeat):
            for label, func in cases:
                times[label] = min(times[label], best(func, 1))
        results = [(label, times[label]) for label, _ in cases]
    finally:
        del cloudpickle_rs.Pickler.dispatch_table[Unrelated]
    base = results[0][1]
    print(f"dumps of {args.n} instances of an importable class, Python {sys.version.split()[0]}, best of {args.repeat}")
    print(f"{'pickler':<30} {'seconds':>10} {'vs pickle':>10}")
    for label, seconds in results:
        print(f"{label:<30} {seconds:>10.4f} {seconds / base:>9.2f}x")


if __name__ == "__main__":
    main()
