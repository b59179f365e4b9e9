"""Smoke test of an installed cloudpickle-rs wheel (run by .ci/wheels).

Run as a script (``python -I .ci/wheel_smoke.py VERSION``) with the Python of a
fresh virtualenv that has only the wheel installed, from an empty directory:
it pickles a lambda, a closure over a ``__main__`` global and a ``__main__``
class with an instance, loads them in a second fresh interpreter (``-I``, no
access to this file) and checks what comes back. Prints one ``ok`` line, or
raises. Runs on every CPython 3.9+; needs nothing but the standard library
and the wheel.
"""

import os
import subprocess
import sys

import cloudpickle_rs

SCALE = 3  # a __main__ global the closure reads


class Point:
    dims = 2

    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm1(self):
        return abs(self.x) + abs(self.y)


def make_scaler(offset):
    def scale(v):
        return v * SCALE + offset

    return scale


RECEIVER = r"""
import pickle, sys
assert not {"Point", "make_scaler", "SCALE"} & set(vars(sys.modules["__main__"]))
square, scale, Point, p = pickle.loads(sys.stdin.buffer.read())
assert square(7) == 49, square(7)
assert scale(2) == 2 * 3 + 10, scale(2)
assert type(p) is Point and Point.__module__ == "__main__" and Point.dims == 2
assert p.norm1() == 7 and Point(-1, 2).norm1() == 3
print("loaded:", square(7), scale(2), p.norm1())
"""


def main():
    expected_version = sys.argv[1]
    installed = os.path.dirname(cloudpickle_rs.__file__)
    if not installed.startswith(sys.prefix):
        raise SystemExit(f"cloudpickle_rs imported from {installed}, not from the venv {sys.prefix}")
    if cloudpickle_rs.__version__ != expected_version:
        raise SystemExit(f"__version__ {cloudpickle_rs.__version__!r}, expected {expected_version!r}")
    payload = cloudpickle_rs.dumps((lambda x: x * x, make_scaler(10), Point, Point(3, -4)))
    result = subprocess.run([sys.executable, "-I", "-c", RECEIVER], input=payload, capture_output=True, timeout=120)
    if result.returncode != 0:
        sys.stderr.write(result.stderr.decode(errors="replace"))
        raise SystemExit("the receiver could not load the pickle")
    cli = subprocess.run([sys.executable, "-I", "-m", "cloudpickle_rs", "version"], capture_output=True, timeout=120)
    lines = cli.stdout.decode().splitlines()
    built_for = "%d.%d" % sys.version_info[:2]
    if not (
        cli.returncode == 0
        and len(lines) == 3
        and lines[0] == f"cloudpickle-rs {expected_version}"
        and lines[1].startswith(f"built for CPython {built_for} ")
    ):
        raise SystemExit(f"python -m cloudpickle_rs version said: {cli.stdout!r} {cli.stderr!r}")
    print(
        f"ok: CPython {sys.version.split()[0]}: a lambda, a closure and a __main__ class "
        f"round-tripped into a fresh interpreter ({len(payload)} bytes; "
        f"{result.stdout.decode().strip()}); `version` says {lines[1]!r}"
    )


if __name__ == "__main__":
    main()
