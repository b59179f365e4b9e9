"""Checks a directory of release files (run by .ci/wheels, locally and in
.github/workflows/release.yml): the sdist and exactly one wheel per CPython
and platform asked for, ``twine check --strict`` on all of them, and for each
Linux wheel the platform tag ``auditwheel show`` finds (it must be the one in
the wheel's name: manylinux_2_17 or musllinux_1_2) and a stripped extension.
Prints one line per file: name, size, tag. Exits 1 on any failure.

    python .ci/dist_check.py DIR --version 0.1.0 --pythons "3.9 3.10" \\
        --platforms "manylinux_2_17_x86_64 win_amd64" [--tools BIN_DIR]

A platform may be a pattern (``macosx_*_arm64``). Standard library only.
"""

import argparse
import fnmatch
import os
import re
import struct
import subprocess
import sys
import tarfile
import zipfile

NAME = "cloudpickle_rs"


def fail(errors, message):
    errors.append(message)
    print(f"  FAILED: {message}")


def wheel_tags(filename):
    # name-version-pythontag-abitag-platformtag.whl (no build tag here)
    parts = filename[: -len(".whl")].split("-")
    return parts[2], parts[3], parts[4].split(".")


def elf_has_symtab(data):
    """Whether an ELF image (64- or 32-bit, either endianness) has a .symtab section."""
    if data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        (shoff,) = struct.unpack_from(end + "Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x3A)
    else:
        (shoff,) = struct.unpack_from(end + "I", data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x2E)

    def section(i):
        base = shoff + i * shentsize
        if is64:
            name, kind = struct.unpack_from(end + "II", data, base)
            offset, size = struct.unpack_from(end + "QQ", data, base + 0x18)
        else:
            name, kind = struct.unpack_from(end + "II", data, base)
            offset, size = struct.unpack_from(end + "II", data, base + 0x10)
        return name, kind, offset, size

    _, _, str_off, str_size = section(shstrndx)
    names = data[str_off : str_off + str_size]
    for i in range(shnum):
        name, kind, _, _ = section(i)
        if kind == 2 or names[name : names.index(b"\0", name)] == b".symtab":  # SHT_SYMTAB
            return True
    return False


def check_sdist(path, version, errors):
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
        prefix = f"{NAME}-{version}/"
        for needed in (
            "LICENSE",
            "Cargo.toml",
            "Cargo.lock",
            "pyproject.toml",
            "src/lib.rs",
            "python/cloudpickle_rs/__init__.py",
            "PKG-INFO",
        ):
            if prefix + needed not in names:
                fail(errors, f"{os.path.basename(path)} lacks {needed}")
        info = tar.extractfile(prefix + "PKG-INFO").read().decode() if prefix + "PKG-INFO" in names else ""
    if "License-Expression: BSD-3-Clause" not in info:
        fail(errors, f"{os.path.basename(path)}: PKG-INFO has no License-Expression: BSD-3-Clause")
    return "sdist"


def check_linux_wheel(path, tools, errors):
    name = os.path.basename(path)
    with zipfile.ZipFile(path) as whl:
        modules = [n for n in whl.namelist() if re.match(rf"{NAME}/_native\..*\.so$", n)]
        if len(modules) != 1:
            fail(errors, f"{name}: {len(modules)} extension modules")
        for module in modules:
            if elf_has_symtab(whl.read(module)):
                fail(errors, f"{name}: {module} is not stripped (it has a .symtab)")
    shown = subprocess.run([os.path.join(tools, "auditwheel"), "show", path], capture_output=True, text=True)
    text = " ".join(shown.stdout.split())
    found = re.search(r'is consistent with the following platform tag: "([^"]+)"', text)
    if shown.returncode != 0 or not found:
        fail(errors, f"{name}: auditwheel show failed: {shown.stdout}{shown.stderr}")
        return "?"
    tag = found.group(1)
    if tag not in wheel_tags(name)[2]:
        fail(errors, f"{name}: auditwheel finds {tag}, not a tag the name declares")
    return tag


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir")
    parser.add_argument("--version", required=True)
    parser.add_argument("--pythons", required=True, help="space-separated, e.g. '3.9 3.10'")
    parser.add_argument("--platforms", required=True, help="space-separated platform tags or patterns")
    parser.add_argument(
        "--tools", default=os.path.dirname(sys.executable), help="the directory holding auditwheel and twine"
    )
    args = parser.parse_args()

    errors = []
    files = sorted(os.listdir(args.dir))
    wheels = [f for f in files if f.endswith(".whl")]
    sdists = [f for f in files if f.endswith(".tar.gz")]
    others = [f for f in files if f not in wheels and f not in sdists]
    if others:
        fail(errors, f"unexpected files in {args.dir}: {others}")
    if sdists != [f"{NAME}-{args.version}.tar.gz"]:
        fail(errors, f"expected one sdist {NAME}-{args.version}.tar.gz, found {sdists}")

    expected = {}
    for python in args.pythons.split():
        tag = "cp" + python.replace(".", "")
        for platform in args.platforms.split():
            matches = [
                w
                for w in wheels
                if w.startswith(f"{NAME}-{args.version}-{tag}-{tag}-")
                and any(fnmatch.fnmatchcase(p, platform) for p in wheel_tags(w)[2])
            ]
            if len(matches) != 1:
                fail(errors, f"expected one wheel for CPython {python} on {platform}, found {matches}")
            for match in matches:
                expected[match] = (python, platform)
    for wheel in wheels:
        if wheel not in expected:
            fail(errors, f"unexpected wheel {wheel}")

    if files:
        twine = subprocess.run(
            [os.path.join(args.tools, "twine"), "check", "--strict", *[os.path.join(args.dir, f) for f in files]],
            capture_output=True,
            text=True,
        )
        if twine.returncode != 0:
            fail(errors, f"twine check --strict failed:\n{twine.stdout}{twine.stderr}")
        else:
            print(f"twine check --strict: {len(files)} files PASSED")

    print(f"{'file':<86} {'size':>9}  tag (auditwheel show for Linux wheels)")
    for f in files:
        path = os.path.join(args.dir, f)
        if f in sdists:
            tag = check_sdist(path, args.version, errors)
        elif "linux" in wheel_tags(f)[2][0]:
            tag = check_linux_wheel(path, args.tools, errors)
        else:
            tag = ".".join(wheel_tags(f)[2]) if f.endswith(".whl") else "-"
        print(f"{f:<86} {os.path.getsize(path) / 1024:>6.0f} KiB  {tag}")
    if errors:
        print(f"{len(errors)} problem(s) in {args.dir}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
