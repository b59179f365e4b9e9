"""Leak check: resident memory over many dumps+loads cycles.

    python benches/memory.py [--cycles N] [--samples K] [--max-growth PCT]

Each cycle makes a new closure and a new dynamic class with an instance,
pickles both with cloudpickle_rs.dumps and loads them back (checking the
results), and loads a pickle made in another interpreter, whose classes and
functions this process does not have, so that the load side builds them anew
(make_class, make_function, make_code ...). After a warm-up of a tenth of the
cycles, it samples the resident set size (from /proc/self/statm) and the
number of allocated Python memory blocks (``sys.getallocatedblocks``) K times,
prints the samples and the growth from the first sample to the last, and
exits 1 when resident memory grows by more than --max-growth percent (default
5%) and more than two allocator arenas (2 MiB), or when more than one block
per hundred cycles (plus 1000) stays allocated. Linux only (/proc).
"""

import argparse
import gc
import os
import pickle
import subprocess
import sys
import textwrap
import time

import cloudpickle_rs

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: Resident growth that two obmalloc arenas explain.
ARENA_SLACK = 2 * 2**20

# Made in a fresh interpreter: its __main__ functions and classes are pickled
# by value, and this process has never seen them.
FOREIGN_SENDER = textwrap.dedent(
    """
    import enum, sys
    import cloudpickle_rs

    def make_counter(start):
        count = [start]
        def step(by=1):
            count[0] += by
            return count[0]
        return step

    class Shape:
        sides = 0
        def __init__(self, name):
            self.name = name
        def describe(self):
            return f"{self.name}:{self.sides}"

    class Square(Shape):
        sides = 4

    class Color(enum.Enum):
        RED = 1
        BLUE = 2

    payload = [make_counter(10), Square("sq"), Color.BLUE, lambda x: x * 3]
    sys.stdout.buffer.write(cloudpickle_rs.dumps(payload))
    """
)


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def foreign_pickle():
    return subprocess.run([sys.executable, "-c", FOREIGN_SENDER], capture_output=True, check=True).stdout


def make_closure(offset):
    def add(x):
        return x + offset

    return add


def make_instance(value):
    class Holder:
        def __init__(self, value):
            self.value = value

        def doubled(self):
            return self.value * 2

    return Holder(value)


def check_foreign(loaded):
    counter, square, color, triple = loaded
    assert counter() == 11 and square.describe() == "sq:4"
    assert color.name == "BLUE" and triple(2) == 6


def one_cycle(i, foreign):
    add = pickle.loads(cloudpickle_rs.dumps(make_closure(i)))
    assert add(1) == i + 1
    holder = pickle.loads(cloudpickle_rs.dumps(make_instance(i)))
    assert holder.value == i and holder.doubled() == 2 * i
    check_foreign(pickle.loads(foreign))


def sample_points(cycles, samples):
    """The cycle numbers after which to sample: the end of the warm-up (a
    tenth of the cycles), then evenly to the last cycle."""
    warmup = max(1, cycles // 10)
    step = (cycles - warmup) / max(1, samples - 1)
    return sorted({warmup + round(step * k) for k in range(samples)} | {cycles})


def run(cycles, samples):
    foreign = foreign_pickle()
    points = sample_points(cycles, samples)
    readings = []
    started = time.monotonic()
    next_point = 0
    for i in range(1, cycles + 1):
        one_cycle(i, foreign)
        if i == points[next_point]:
            gc.collect()
            readings.append((i, resident_bytes(), sys.getallocatedblocks()))
            print(
                f"cycle {i:>9}: rss {readings[-1][1] / 2**20:8.2f} MiB, {readings[-1][2]:>9} blocks",
                flush=True,
            )
            next_point += 1
    return readings, time.monotonic() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=11)
    parser.add_argument("--max-growth", type=float, default=5.0, help="percent")
    args = parser.parse_args(argv)
    if args.cycles < 10:
        parser.error("--cycles must be at least 10")
    readings, elapsed = run(args.cycles, args.samples)
    (start, first, first_blocks), (end, last, last_blocks) = readings[0], readings[-1]
    growth = (last - first) / first * 100
    # The allocator takes and returns memory in whole arenas (1 MiB, and on
    # 3.14 resident memory swings by two of them with no trend): growth up to
    # that much is no sign of a leak, whatever the percentage.
    rss_ok = growth <= args.max_growth or last - first <= ARENA_SLACK
    # Python objects still allocated: exact, whatever the allocator keeps.
    blocks_slack = 1000 + (end - start) // 100
    blocks_ok = last_blocks - first_blocks <= blocks_slack
    verdict = "ok" if rss_ok and blocks_ok else "LEAK?"
    print(
        f"memory growth {growth:+.2f}% over {end - start} cycles after "
        f"warm-up ({first / 2**20:.2f} -> {last / 2**20:.2f} MiB, limit {args.max_growth}% "
        f"or {ARENA_SLACK // 2**20} MiB), allocated blocks {last_blocks - first_blocks:+d} "
        f"(limit {blocks_slack}): {verdict}; {args.cycles} cycles in {elapsed:.1f}s"
    )
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
