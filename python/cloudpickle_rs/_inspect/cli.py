"""``python -m cloudpickle_rs inspect FILE [--allow MODULE]... [--json]``."""

import argparse
import json
import sys

from .._trust import NATIVE
from .machine import InspectError
from .report import analyse, format_report, refusal_rows


def read_input(path):
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


#: What ``inspect`` does, for its ``--help`` and ``python -m cloudpickle_rs --help``.
DESCRIPTION = (
    "Tell what loading a pickle would import and which code it ships by value, "
    "without loading it. Exits 0, 1 when --allow is broken, 2 on malformed input."
)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m cloudpickle_rs inspect", description=DESCRIPTION)
    add_arguments(parser)
    return parser.parse_args(argv)


def add_arguments(parser):
    """The arguments of ``inspect``, on its own parser or the CLI's subparser."""
    parser.add_argument("file", help="the pickle file, or - for stdin")
    parser.add_argument(
        "--allow",
        action="append",
        metavar="MODULE",
        help="exit with code 1 if loading would reach anything outside these "
        "modules and their submodules, or run code the pickle ships by value "
        "(repeatable; the rules of cloudpickle_rs.loads(data, allow=[...]); "
        "cloudpickle-rs's reconstructors are always allowed)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON report")


def main(argv=None):
    return run(parse_args(sys.argv[1:] if argv is None else argv))


def run(args):
    """Inspects ``args.file`` as parsed by :func:`add_arguments`; returns the exit code."""
    try:
        data = read_input(args.file)
    except OSError as e:
        print(f"inspect: cannot read {args.file}: {e.strerror or e}", file=sys.stderr)
        return 2
    source = "<stdin>" if args.file == "-" else args.file
    try:
        machine, report = analyse(data)
    except InspectError as e:
        print(f"inspect: {source} is not a valid pickle: {e}", file=sys.stderr)
        return 2
    try:
        found = refusal_rows(machine, report, args.allow) if args.allow is not None else []
    except (TypeError, ValueError) as e:
        print(f"inspect: --allow: {e}", file=sys.stderr)
        return 2
    if args.json:
        if args.allow is not None:
            report["allowed"] = [NATIVE, *args.allow]
            report["violations"] = found
        output = json.dumps(report, indent=2) + "\n"
    else:
        output = format_report(report, source, args.allow, found)
    try:
        sys.stdout.write(output)
        sys.stdout.flush()
    except BrokenPipeError:  # piped into head: not an error of ours
        sys.stdout = None
    return 1 if found else 0
