"""Command line: ``python -m cloudpickle_rs demo`` and ``... inspect FILE``
(see ``_inspect.py``).

The demo runs as ``__main__``, so its functions exist only here: it pickles a
lambda, a closure over a ``__main__`` global and a recursive nested function,
loads them in a fresh interpreter that has none of this code, and times
``dumps`` against the standard library's pickle and upstream cloudpickle.
"""

import pickle
import subprocess
import sys
import timeit

import cloudpickle_rs

OFFSET = 100  # a __main__ global, read by the closure below


def make_adder(n):
    def add(x):
        return x + n + OFFSET

    return add


def make_fib():
    def fib(k):
        return k if k < 2 else fib(k - 1) + fib(k - 2)

    return fib


RECEIVER = """
import pickle, sys
names = [k for k in vars(sys.modules["__main__"]) if not k.startswith("__")]
square, add, fib = pickle.loads(sys.stdin.buffer.read())
print("  square(7)  =", square(7), "  (a lambda)")
print("  add(1)     =", add(1), "  (a closure over n=5 and the __main__ global OFFSET=100)")
print("  fib(20)    =", fib(20), " (a recursive nested function)")
print("  the receiver's __main__ defined before loading:", names or "nothing")
"""


def best_time(func, number):
    return min(timeit.repeat(func, number=number, repeat=5)) / number


def fmt(seconds):
    return f"{seconds * 1e6:9.2f} us"


def timing_rows(functions, data):
    try:
        import cloudpickle
    except ImportError:
        cloudpickle = None
    rows = []
    for label, payload in (("the 3 functions", functions), ("plain data", data)):
        ours = best_time(lambda: cloudpickle_rs.dumps(payload), 2000)
        try:
            stdlib = best_time(lambda: pickle.dumps(payload, pickle.HIGHEST_PROTOCOL), 2000)
        except (pickle.PicklingError, AttributeError, TypeError):
            stdlib = None
        upstream = best_time(lambda: cloudpickle.dumps(payload), 2000) if cloudpickle else None
        rows.append((label, ours, stdlib, upstream))
    return rows, cloudpickle is not None


def demo():
    square = lambda x: x * x  # noqa: E731
    functions = (square, make_adder(5), make_fib())
    payload = cloudpickle_rs.dumps(functions)
    print(f"cloudpickle_rs {cloudpickle_rs.__version__} on Python {sys.version.split()[0]}")
    print(f"pickled a lambda, a closure and a recursive function by value: {len(payload)} bytes")
    print("loaded in a fresh interpreter:")
    result = subprocess.run([sys.executable, "-c", RECEIVER], input=payload, capture_output=True)
    sys.stdout.write(result.stdout.decode())
    if result.returncode != 0:
        sys.stderr.write(result.stderr.decode())
        return 1

    data = [{"id": i, "name": f"row{i}", "score": i * 0.5, "tags": ("a", "b")} for i in range(1000)]
    rows, have_upstream = timing_rows(functions, data)
    print("\ntime per dumps (best of 5):")
    print(f"  {'payload':<16} {'cloudpickle_rs':>14} {'pickle':>14} {'cloudpickle':>14}")
    for label, ours, stdlib, upstream in rows:
        cells = [fmt(ours)]
        cells.append(fmt(stdlib) + f" ({ours / stdlib:4.2f}x)" if stdlib else "   cannot pickle")
        cells.append(fmt(upstream) + f" ({upstream / ours:4.1f}x slower)" if upstream else "   not installed")
        print(f"  {label:<16} " + "  ".join(cells))
    if not have_upstream:
        print("  (pip install cloudpickle to compare with upstream)")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        return demo()
    if argv[:1] == ["inspect"]:
        from cloudpickle_rs._inspect import main as inspect_main

        return inspect_main(argv[1:])
    print("usage: python -m cloudpickle_rs demo | inspect FILE [--allow MODULE] [--json]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
