"""The command line, as a user runs it: ``python -m cloudpickle_rs ...`` in a
fresh interpreter, checked by exit code and output."""

import re
import sys

import pytest

import cloudpickle_rs
from testutils import run_python

COMMANDS = ("demo", "inspect", "version")


def cli(*args):
    result = run_python(["-m", "cloudpickle_rs", *args])
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@pytest.mark.parametrize("args", [(), ("-h",), ("--help",)], ids=["no argument", "-h", "--help"])
def test_help_names_every_command_and_exits_0(args):
    code, out, err = cli(*args)
    assert code == 0, err
    assert err == ""
    assert out.startswith("usage: python -m cloudpickle_rs")
    for command in COMMANDS:
        # Each command is listed with what it does, on its own line.
        assert re.search(rf"^  {command} +\w+", out, re.MULTILINE), (command, out)
    assert "fresh interpreter" in out  # demo's line
    assert "without loading it" in out  # inspect's line
    assert "COMMAND --help" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_its_own_help(command):
    code, out, err = cli(command, "--help")
    assert code == 0, err
    assert out.startswith(f"usage: python -m cloudpickle_rs {command} [-h]")
    # --help says what the command does and does nothing else (demo --help
    # used to run the demo).
    assert "pickled a lambda" not in out and "time per dumps" not in out
    assert len(out.splitlines()) >= 4


def test_inspect_help_lists_its_options():
    code, out, _ = cli("inspect", "-h")
    assert code == 0
    assert "--allow MODULE" in out and "--json" in out and "file" in out


def test_an_unknown_command_exits_2_naming_the_commands():
    code, out, err = cli("bogus")
    assert code == 2 and out == ""
    assert "invalid choice: 'bogus'" in err
    # The choices are listed (quoted or not, depending on the Python version).
    choices = err[err.index("choose from") :]
    for command in COMMANDS:
        assert command in choices


def test_version_names_ours_the_python_built_for_and_upstreams_api():
    code, out, err = cli("version")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"cloudpickle-rs {cloudpickle_rs.__version__}"
    built_for = "%d.%d" % sys.version_info[:2]
    assert lines[1].startswith(f"built for CPython {built_for} (running CPython {built_for}.")
    assert lines[2] == "follows the API of cloudpickle 3.1.2"
    assert len(lines) == 3
    # --version and -V say the same.
    assert cli("--version") == (0, out, "")
    assert cli("-V") == (0, out, "")


def test_native_module_reports_the_python_it_was_compiled_for():
    from cloudpickle_rs import _native

    assert _native.BUILT_FOR_PYTHON == "%d.%d" % sys.version_info[:2]
    assert _native.__version__ == cloudpickle_rs.__version__


RATIO = re.compile(r"cloudpickle_rs (is \d+\.\d+x faster than|takes \d+\.\d\dx the time of) (pickle|cloudpickle)$")


def test_demo_states_every_ratio_in_words_one_way():
    code, out, err = cli("demo", "--number", "20")
    assert code == 0, err
    assert "time per dumps (best of 5 runs of 20 calls)" in out
    timing = out[out.index("time per dumps") :].splitlines()[1:]
    ratios = [line for line in timing if re.search(r"\d\.\d+x", line)]
    # cloudpickle against the 3 functions and the data, pickle against the data
    # (it cannot pickle the functions); the test extra installs cloudpickle.
    assert len(ratios) == 3, out
    for line in ratios:
        assert RATIO.search(line.strip()), line
    assert "cannot pickle them" in out
    assert "slower" not in out
    # No bare ratio in parentheses such as "(1.01x)".
    assert not re.search(r"\(\s*\d+(\.\d+)?x\)", out)


def test_demo_says_why_the_receivers_names_prove_nothing_leaked():
    code, out, err = cli("demo", "--number", "1")
    assert code == 0, err
    assert "square(7) = 49" in out and "add(1)    = 106" in out and "fib(20)   = 6765" in out
    text = " ".join(out.split())
    assert "the receiver's __main__ defined only its own imports (pickle, sys) before loading" in text
    assert "none of make_adder, make_fib, OFFSET after" in text
    # The old, unexplained listing of the receiver's names is gone.
    assert "['pickle', 'sys']" not in out


def test_demo_rejects_a_number_below_1():
    code, out, err = cli("demo", "--number", "0")
    assert code == 2 and out == ""
    assert "must be at least 1" in err
