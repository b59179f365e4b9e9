"""Helpers for tests that pickle in one interpreter and load in another.

The point of cloudpickle is that the *receiving* process does not have the
sender's code: the functions of the sender's ``__main__``, its nested
functions and lambdas, or a package only the sender can import. The helpers
here therefore run each side in a fresh ``sys.executable`` subprocess:

* :func:`run_sender` runs a script as ``__main__`` that ends by writing
  ``cloudpickle_rs.dumps(<expr>)`` to a file, and returns those bytes;
* :func:`subprocess_loads` loads bytes with plain ``pickle.loads`` in a fresh
  ``python -c`` whose ``__main__`` knows nothing of the sender, then runs
  checking code against the loaded object (bound to the name ``objs``);
* :func:`send_and_receive` chains the two.

Every subprocess runs in an empty temporary directory, with the tests
directory removed from ``PYTHONPATH`` (so ``mock_local_folder`` is importable
only where a test asks for it with ``sys_path=``), and inherits the rest of
the environment (e.g. a ``PYTHONPATH`` that provides ``cloudpickle_rs``).
"""

import os
import subprocess
import sys
import tempfile
import textwrap

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 60

__all__ = [
    "TESTS_DIR",
    "TIMEOUT",
    "interpreters",
    "SubprocessFailure",
    "subprocess_env",
    "run_python",
    "run_script",
    "run_sender",
    "subprocess_loads",
    "send_and_receive",
]


#: Written by tests/run_all_pythons.sh: one line "VERSION SIDE PATH CHROOT" per
#: CPython it found, SIDE being "host" or "chroot" (Debian sid's, in CHROOT).
INTERPRETERS_FILE = os.path.join(os.path.dirname(TESTS_DIR), ".venvs", "interpreters")


def interpreters():
    """``{"3.11": argv, ...}``: how to start each other CPython the test
    runner found, from this process (on the host or inside the chroot)."""
    found = {}
    try:
        with open(INTERPRETERS_FILE, encoding="utf-8") as f:
            lines = [line.split() for line in f]
    except FileNotFoundError:
        return found
    inside = os.environ.get("CPRS_IN_CHROOT") == "1"
    for version, side, path, chroot in (fields for fields in lines if len(fields) == 4):
        if side == "chroot" and not inside:
            # Usable while the runner has the checkout mounted inside.
            if os.geteuid() == 0 and os.path.isdir(chroot + TESTS_DIR):
                found[version] = ["chroot", chroot, "/usr/bin/env", "-i", "LANG=C.UTF-8", path]
        elif os.access(path, os.X_OK):
            # (Inside the chroot, pyenv's interpreters are mounted at the same path.)
            found[version] = [path]
    return found


class SubprocessFailure(AssertionError):
    """A helper subprocess exited non-zero; the message carries its stderr."""


#: Two closures over one cell, ``put`` and ``get``. cloudpickle-rs keeps them
#: sharing it, so ``get`` sees what ``put`` stored; upstream cloudpickle gives
#: each function its own copy, so a test that needs ``get() == new`` after a
#: round trip proves cloudpickle-rs did the pickling.
MAKE_PAIR = """
def make_pair():
    value = "unset"
    def put(new):
        nonlocal value
        value = new
    def get():
        return value
    return put, get
"""


def subprocess_env(extra=None, sys_path=()):
    """The environment for a helper subprocess.

    Inherits ``os.environ``, drops the tests directory from ``PYTHONPATH``,
    prepends the directories in ``sys_path`` and applies ``extra``.
    """
    env = dict(os.environ)
    inherited = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.abspath(p) != TESTS_DIR]
    parts = [str(p) for p in sys_path] + inherited
    if parts:
        env["PYTHONPATH"] = os.pathsep.join(parts)
    else:
        env.pop("PYTHONPATH", None)
    env.update(extra or {})
    return env


def _describe(label, result):
    return (
        f"--- {label} exited with code {result.returncode}\n"
        f"--- {label} stdout:\n{_text(result.stdout)}\n"
        f"--- {label} stderr:\n{_text(result.stderr)}"
    )


def _text(data):
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data or ""


def run_python(args, *, input=None, env=None, sys_path=(), cwd=None):
    """Runs ``sys.executable *args`` and returns the CompletedProcess.

    Does not check the exit code. ``input`` is bytes for stdin. The working
    directory is a fresh empty directory unless ``cwd`` is given.
    """
    full_env = subprocess_env(env, sys_path)
    with tempfile.TemporaryDirectory(prefix="cprs_cwd_") as empty:
        return subprocess.run(
            [sys.executable, *args],
            input=input,
            capture_output=True,
            timeout=TIMEOUT,
            env=full_env,
            cwd=cwd or empty,
        )


def run_script(src, *, input=None, env=None, sys_path=(), label="subprocess"):
    """Runs ``src`` with ``python -c``; returns its stdout as text.

    Raises :class:`SubprocessFailure` (with stdout and stderr) on a non-zero
    exit.
    """
    result = run_python(["-c", textwrap.dedent(src)], input=input, env=env, sys_path=sys_path)
    if result.returncode != 0:
        raise SubprocessFailure(_describe(label, result))
    return _text(result.stdout)


_SENDER_FOOTER = """

# --- appended by testutils.run_sender ---
import sys as _testutils_sys
import cloudpickle_rs as _testutils_cloudpickle_rs
with open(_testutils_sys.argv[1], "wb") as _testutils_file:
    _testutils_file.write(
        _testutils_cloudpickle_rs.dumps({expr}, protocol={protocol!r})
    )
"""


def _run_sender(src, expr, protocol, env, sys_path, script_dir):
    script = textwrap.dedent(src) + _SENDER_FOOTER.format(expr=expr, protocol=protocol)
    with tempfile.TemporaryDirectory(prefix="cprs_sender_") as tmp:
        directory = script_dir or tmp
        path = os.path.join(directory, "sender_main.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(script)
        out = os.path.join(tmp, "payload.pkl")
        result = run_python([path, out], env=env, sys_path=sys_path)
        if result.returncode != 0:
            return None, result
        with open(out, "rb") as f:
            return f.read(), result


def run_sender(src, *, expr="objs", protocol=None, env=None, sys_path=(), script_dir=None):
    """Runs ``src`` as the ``__main__`` script of a fresh interpreter.

    After ``src`` runs, ``cloudpickle_rs.dumps(<expr>, protocol=protocol)`` is
    written to a file whose bytes are returned. The script is
    ``<script_dir>/sender_main.py`` (a temporary directory by default; pass
    the same ``script_dir`` to get the same ``__file__`` in two runs).
    ``sys_path`` directories are importable in the sender only.
    """
    payload, result = _run_sender(src, expr, protocol, env, sys_path, script_dir)
    if payload is None:
        raise SubprocessFailure(_describe("sender", result))
    return payload


_RECEIVER_HEADER = """\
import pickle
import sys
data = sys.stdin.buffer.read()
"""


def _receiver_source(check_src, autoload):
    header = _RECEIVER_HEADER
    if autoload:
        header += "objs = pickle.loads(data)\n"
    return header + textwrap.dedent(check_src)


def subprocess_loads(payload, check_src, *, env=None, sys_path=(), autoload=True):
    """Loads ``payload`` in a fresh ``python -c`` and runs ``check_src``.

    The receiver's ``__main__`` has only ``pickle``, ``sys``, ``data`` (the
    payload bytes) and, unless ``autoload`` is false, ``objs =
    pickle.loads(data)``. Returns the receiver's stdout (text); raises
    :class:`SubprocessFailure` with its stderr if it exits non-zero (e.g. an
    ``assert`` in ``check_src`` failed).
    """
    result = run_python(
        ["-c", _receiver_source(check_src, autoload)],
        input=payload,
        env=env,
        sys_path=sys_path,
    )
    if result.returncode != 0:
        raise SubprocessFailure(_describe("receiver", result))
    return _text(result.stdout)


def send_and_receive(
    sender_src,
    check_src,
    *,
    expr="objs",
    protocol=None,
    sender_env=None,
    sender_sys_path=(),
    receiver_env=None,
    receiver_sys_path=(),
    autoload=True,
):
    """Pickles ``<expr>`` in a ``__main__`` sender, checks it in a receiver.

    Returns the receiver's stdout; on failure of either side raises
    :class:`SubprocessFailure` carrying both sides' output.
    """
    payload, sender = _run_sender(sender_src, expr, protocol, sender_env, sender_sys_path, None)
    if payload is None:
        raise SubprocessFailure(_describe("sender", sender))
    receiver = run_python(
        ["-c", _receiver_source(check_src, autoload)],
        input=payload,
        env=receiver_env,
        sys_path=receiver_sys_path,
    )
    if receiver.returncode != 0:
        raise SubprocessFailure(_describe("sender", sender) + "\n" + _describe("receiver", receiver))
    return _text(receiver.stdout)


#: ``code_blob(fields, **changes)``: our ``make_code``'s ``(blob, objects)``
#: from fields named as ``_native._code_fields`` gives them, with ``changes``
#: applied. The blob layout of src/kinds/code/blob.rs, written again here so
#: that tests can forge blobs. Source text, to run in the subprocesses of
#: tests that may crash the interpreter.
CODE_BLOB_SOURCE = """
def code_blob(fields, **changes):
    from cloudpickle_rs import _native

    fields = dict(fields, **changes)

    def varint(n):
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)

    version = tuple(fields["version"])
    if version >= (3, 11):
        tables, trailing = ["code", "linetable", "exceptiontable"], ["filename", "name", "qualname"]
    else:
        tables = ["code", "linetable" if version == (3, 10) else "lnotab"]
        trailing = ["filename", "name"]
    blob = bytearray(b"C") + bytes([fields["format"], *version])
    for name in _native.FORMAT["code_ints"]:
        blob += varint((fields[name] << 1) ^ (fields[name] >> 63))
    for name in _native.FORMAT["code_counts"]:
        blob += varint(len(fields[name]))
    blob += varint(len(tables))
    for name in tables:
        blob += varint(len(fields.get(name, b""))) + fields.get(name, b"")
    runs = sum((tuple(fields[name]) for name in _native.FORMAT["code_counts"]), ())
    return bytes(blob), runs + tuple(fields.get(name, "") for name in trailing)
"""
exec(CODE_BLOB_SOURCE)


def reconstructors_called(payload):
    """The names of our reconstructors a pickle calls (through
    ``rebuild_v2(number, ...)``), as the inspector reads them."""
    from cloudpickle_rs._inspect import inspect_bytes

    return [ref["name"] for ref in inspect_bytes(payload)["references"] if ref["how"] == "reconstructor"]
