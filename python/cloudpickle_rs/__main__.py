"""Command line: ``python -m cloudpickle_rs demo | inspect FILE | version``.

``--help`` (``-h``, or no argument) says what each command does; each command
has its own ``--help``. ``inspect`` is ``_inspect/cli.py``'s.

The demo runs as ``__main__``, so its functions exist only here: it pickles a
lambda, a closure over a ``__main__`` global and a recursive nested function,
loads them in a fresh interpreter that has none of this code, and times
``dumps`` against the standard library's pickle and upstream cloudpickle.
"""

import argparse
import pickle
import subprocess
import sys
import textwrap
import timeit

import cloudpickle_rs
from cloudpickle_rs import _inspect
from cloudpickle_rs._install import UPSTREAM_VERSION
from cloudpickle_rs._native import BUILT_FOR_PYTHON

PROG = "python -m cloudpickle_rs"

OFFSET = 100  # a __main__ global, read by the closure below


def make_adder(n):
    def add(x):
        return x + n + OFFSET

    return add


def make_fib():
    def fib(k):
        return k if k < 2 else fib(k - 1) + fib(k - 2)

    return fib


# The names of this file's __main__ that the pickled functions come from or
# read: the receiver must have none of them, before loading or after.
SENDER_NAMES = ("make_adder", "make_fib", "OFFSET")

RECEIVER = """
import pickle, sys
own = sorted(k for k in vars(sys.modules["__main__"]) if not k.startswith("__"))
main = vars(sys.modules["__main__"])
square, add, fib = pickle.loads(sys.stdin.buffer.read())
print(f"  square(7) = {square(7):<5} (a lambda)")
print(f"  add(1)    = {add(1):<5} (a closure over n=5 and the __main__ global OFFSET=100)")
print(f"  fib(20)   = {fib(20):<5} (a recursive nested function)")
sender = %r
present = [k for k in sender if k in main]
if present:
    print("  the receiver's __main__ now defines", ", ".join(present))
else:
    print("  the receiver's __main__ defined only its own imports (" + ", ".join(own) + ") before")
    print("  loading, and none of " + ", ".join(sender) + " after: the functions brought")
    print("  their code and the global they read, and added nothing to the receiver's namespace")
""" % (SENDER_NAMES,)


def best_time(func, number):
    return min(timeit.repeat(func, number=number, repeat=5)) / number


def fmt(seconds):
    return f"{seconds * 1e6:9.2f} us"


def compare(ours, other, name):
    """One ratio, always said the same way: how cloudpickle_rs fares against `name`."""
    if other / ours >= 1.1:
        ratio = other / ours
        return f"cloudpickle_rs is {ratio:.{2 if ratio < 2 else 1}f}x faster than {name}"
    return f"cloudpickle_rs takes {ours / other:.2f}x the time of {name}"


def timing_rows(functions, data, number):
    try:
        import cloudpickle
    except ImportError:
        cloudpickle = None
    rows = []
    for label, payload in (("the 3 functions", functions), ("1000 plain dicts", data)):
        ours = best_time(lambda payload=payload: cloudpickle_rs.dumps(payload), number)
        try:
            stdlib = best_time(lambda payload=payload: pickle.dumps(payload, pickle.HIGHEST_PROTOCOL), number)
        except (pickle.PicklingError, AttributeError, TypeError):
            stdlib = None
        upstream = best_time(lambda payload=payload: cloudpickle.dumps(payload), number) if cloudpickle else None
        rows.append((label, ours, stdlib, upstream))
    return rows, cloudpickle is not None


def demo(args):
    square = lambda x: x * x  # noqa: E731
    functions = (square, make_adder(5), make_fib())
    payload = cloudpickle_rs.dumps(functions)
    print(f"cloudpickle_rs {cloudpickle_rs.__version__} on Python {sys.version.split()[0]}")
    print(f"pickled a lambda, a closure and a recursive function by value: {len(payload)} bytes")
    print("loaded in a fresh interpreter (python -c, without this file's code):")
    result = subprocess.run([sys.executable, "-c", RECEIVER], input=payload, capture_output=True)
    sys.stdout.write(result.stdout.decode())
    if result.returncode != 0:
        sys.stderr.write(result.stderr.decode())
        return 1

    data = [{"id": i, "name": f"row{i}", "score": i * 0.5, "tags": ("a", "b")} for i in range(1000)]
    rows, have_upstream = timing_rows(functions, data, args.number)
    print(f"\ntime per dumps (best of 5 runs of {args.number} calls):")
    for label, ours, stdlib, upstream in rows:
        print(f"  {label:<18} {'cloudpickle_rs':<15}{fmt(ours)}")
        for name, other in (("pickle", stdlib), ("cloudpickle", upstream)):
            if other is not None:
                print(f"  {'':<18} {name:<15}{fmt(other)}   {compare(ours, other, name)}")
            elif name == "pickle":
                print(f"  {'':<18} {name:<15}   cannot pickle them")
    if not have_upstream:
        print("  (pip install cloudpickle to compare with upstream)")
    return 0


def version_text():
    impl = sys.implementation.name
    name = {"cpython": "CPython"}.get(impl, impl)
    running = ".".join(map(str, sys.version_info[:3]))
    return (
        f"cloudpickle-rs {cloudpickle_rs.__version__}\n"
        f"built for {name} {BUILT_FOR_PYTHON} (running {name} {running}, {sys.executable})\n"
        f"follows the API of cloudpickle {UPSTREAM_VERSION}\n"
    )


def version(args):
    sys.stdout.write(version_text())
    return 0


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


COMMANDS = {
    "demo": "pickle a lambda, a closure and a recursive function, load them in a "
    "fresh interpreter, and time dumps against pickle and cloudpickle",
    "inspect": "tell what loading a pickle would import and run, without loading it",
    "version": "print this package's version, the Python it was built for and the cloudpickle API it follows",
}


def build_parser():
    listing = "\n".join(
        textwrap.fill(text, 78, initial_indent=f"  {name:<9}", subsequent_indent=" " * 11)
        for name, text in COMMANDS.items()
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} [-h] [-V] COMMAND ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="cloudpickle-rs: cloudpickle's API in Rust. Pickles lambdas, closures\n"
        "and the functions and classes of __main__ by value, for another process.\n\n"
        "commands:\n" + listing,
        epilog=f"Run `{PROG} COMMAND --help` for a command's options.",
    )
    parser.add_argument("-V", "--version", action="store_true", help=COMMANDS["version"])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", help=argparse.SUPPRESS)

    def command(name, run, description=None):
        text = COMMANDS[name]
        description = description or text[0].upper() + text[1:] + "."
        cmd = commands.add_parser(name, prog=f"{PROG} {name}", description=description)
        cmd.set_defaults(run=run)
        return cmd

    cmd = command("demo", demo)
    cmd.add_argument(
        "--number",
        type=positive_int,
        default=2000,
        metavar="N",
        help="dumps calls per timing run (default: 2000; five runs, the best counts)",
    )
    _inspect.add_arguments(command("inspect", _inspect.run, _inspect.DESCRIPTION))
    command("version", version)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.version:
        return version(args)
    if args.command is None:
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
