#!/usr/bin/env bash
# Builds cloudpickle-rs and runs its tests on every CPython 3.9-3.15 found:
# pyenv's, else python3.X on PATH, else (3.14, 3.15) the Debian sid chroot of
# .ci/sid-chroot when it is provisioned and this runs as root. One virtualenv
# per version under .venvs/; extra arguments go to pytest (e.g. -m slow).
# Exits non-zero when a build or a test fails on any version.
# CPRS_PYTHONS="3.11 3.14" limits the run to those versions (for local work);
# CPRS_EXTRAS="test,engines" installs more extras (default: test);
# CPRS_REQUIRE_ALL=1 makes a version that is not found a failure (CI);
# CPRS_BUILD_ONLY=1 builds and stops.
set -u
cd "$(dirname "$0")/.."
root=$PWD
extras=${CPRS_EXTRAS:-test}
all_versions="3.9 3.10 3.11 3.12 3.13 3.14 3.15"
read -r -a versions <<< "${CPRS_PYTHONS:-3.11 3.9 3.10 3.12 3.13 3.14 3.15}"
chroot_dir=$(bash .ci/sid-chroot root)

chroot_usable() {
    [ "$(id -u)" -eq 0 ] && [ -f "$chroot_dir/.cprs-provisioned" ]
}

# Prints "host PATH" or "chroot PATH" for CPython $1, or nothing.
find_python() {
    local v=$1 prefix found
    if command -v pyenv >/dev/null 2>&1; then
        prefix=$(ls -d "$(pyenv root)"/versions/"$v".* 2>/dev/null | grep -E "/$v\.[0-9]+$" | sort -V | tail -n 1)
        if [ -n "$prefix" ] && [ -x "$prefix/bin/python$v" ]; then
            echo "host $prefix/bin/python$v"
            return
        fi
    fi
    if found=$(command -v "python$v" 2>/dev/null); then
        echo "host $found"
    elif chroot_usable && [ -x "$chroot_dir/usr/bin/python$v" ]; then
        echo "chroot /usr/bin/python$v"
    fi
}

# on_side VERSION [NAME=value...] COMMAND...: runs COMMAND with those
# variables where that version's interpreter lives (the host or the chroot).
on_side() {
    local v=$1
    shift
    if [ "${side_of[$v]}" = chroot ]; then
        bash .ci/sid-chroot run env "$@"
    else
        env "$@"
    fi
}

declare -A outcome side_of python_of
failed=0
skipped=()
mounted_here=0

cleanup() {
    if [ "$mounted_here" -eq 1 ]; then
        bash .ci/sid-chroot umount
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$root/.venvs"
# Written by tests/test_upstream_suite.py, shown in the summary.
rm -f "$root"/.venvs/upstream-suite/result-*.txt
interpreters="$root/.venvs/interpreters"
: >"$interpreters"
for v in "${versions[@]}"; do
    read -r side python <<< "$(find_python "$v")"
    if [ -z "${python:-}" ]; then
        skipped+=("$v")
        continue
    fi
    side_of[$v]=$side
    python_of[$v]=$python
    # Read by the tests that run other versions (tests/testutils.py).
    echo "$v $side $python $chroot_dir" >>"$interpreters"
    if [ "$side" = chroot ] && [ "$mounted_here" -eq 0 ] && ! mountpoint -q "$chroot_dir$root"; then
        bash .ci/sid-chroot mount || { echo "cannot mount the sid chroot"; exit 1; }
        mounted_here=1
    fi
done

# Every version is built before any is tested: the tests of one version
# load pickles made by the others (python/cloudpickle_rs holds every build).
for v in "${versions[@]}"; do
    [ -n "${python_of[$v]:-}" ] || continue
    python=${python_of[$v]}
    echo "=== building for CPython $v ($python, ${side_of[$v]})"
    venv="$root/.venvs/py$v"
    log="$root/.venvs/py$v.log"
    build_env=(VIRTUAL_ENV="$venv" CARGO_TARGET_DIR="$root/target/py$v")
    [ "${side_of[$v]}" = host ] && build_env+=(PATH="$venv/bin:$PATH")
    if ! { [ -x "$venv/bin/python" ] || on_side "$v" "$python" -m venv "$venv" >"$log" 2>&1; } ||
       ! on_side "$v" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check maturin >>"$log" 2>&1 ||
       ! on_side "$v" "${build_env[@]}" "$venv/bin/maturin" develop --release --extras "$extras" >>"$log" 2>&1; then
        echo "build failed on CPython $v; log:"
        tail -n 40 "$log"
        outcome[$v]="build failed"
        failed=1
        unset "python_of[$v]"
    fi
done

# CPRS_BUILD_ONLY=1 (used by .ci/lint): the builds, no tests.
if [ "${CPRS_BUILD_ONLY:-0}" = 1 ]; then
    exit "$failed"
fi

for v in "${versions[@]}"; do
    [ -n "${python_of[$v]:-}" ] || continue
    echo "=== CPython $v (${python_of[$v]}, ${side_of[$v]})"
    venv="$root/.venvs/py$v"
    on_side "$v" "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@" 2>&1 | tee "$root/.venvs/py$v.pytest"
    rc=${PIPESTATUS[0]}
    summary=$(grep -E "^[=]* ?[0-9]+ (passed|failed|error)|no tests ran" "$root/.venvs/py$v.pytest" | tail -n 1 | tr -d '=' | sed 's/^ *//')
    if [ "$rc" -ne 0 ]; then
        failed=1
        outcome[$v]="FAILED (pytest exit $rc): $summary"
    else
        outcome[$v]="ok: $summary"
    fi
done

echo
echo "=== summary"
for v in "${versions[@]}"; do
    [ -n "${outcome[$v]:-}" ] && echo "CPython $v (${side_of[$v]}): ${outcome[$v]}"
done
cat "$root"/.venvs/upstream-suite/result-*.txt 2>/dev/null || true
if [ "${#skipped[@]}" -gt 0 ]; then
    echo "skipped (not found: no pyenv version, no python3.X on PATH, no provisioned chroot): ${skipped[*]}"
    if [ "${CPRS_REQUIRE_ALL:-0}" = 1 ]; then
        echo "CPRS_REQUIRE_ALL=1: every one of $all_versions must be tested"
        failed=1
    fi
else
    echo "skipped: none (all of ${versions[*]} found)"
fi
if [ "${#outcome[@]}" -eq 0 ]; then
    echo "no CPython 3.9-3.15 found"
    exit 1
fi
exit "$failed"
