#!/usr/bin/env bash
# Builds cloudpickle-rs and runs its tests on every CPython 3.9-3.13 found
# (pyenv's, else python3.X on PATH). One virtualenv per version under
# .venvs/; extra arguments go to pytest (e.g. -m slow, -k closure).
# Exits non-zero when a build or a test fails on any version.
# CPRS_PYTHONS="3.11 3.12" limits the run to those versions (for local work);
# CPRS_EXTRAS="test,engines" installs more extras (default: test).
set -u
cd "$(dirname "$0")/.."
root=$PWD
extras=${CPRS_EXTRAS:-test}
read -r -a versions <<< "${CPRS_PYTHONS:-3.11 3.9 3.10 3.12 3.13}"

find_python() {
    local v=$1 prefix
    if command -v pyenv >/dev/null 2>&1; then
        prefix=$(ls -d "$(pyenv root)"/versions/"$v".* 2>/dev/null | grep -E "/$v\.[0-9]+$" | sort -V | tail -n 1)
        if [ -n "$prefix" ] && [ -x "$prefix/bin/python$v" ]; then
            echo "$prefix/bin/python$v"
            return
        fi
    fi
    command -v "python$v" 2>/dev/null
}

declare -A outcome
declare -A python_of
failed=0
skipped=()

# Every version is built before any is tested: the tests of one version
# load pickles made by the others (python/cloudpickle_rs holds every build).
for v in "${versions[@]}"; do
    python=$(find_python "$v")
    if [ -z "$python" ]; then
        skipped+=("$v")
        continue
    fi
    echo "=== building for CPython $v ($python)"
    venv="$root/.venvs/py$v"
    log="$root/.venvs/py$v.log"
    mkdir -p "$root/.venvs"
    if ! { [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"; } ||
       ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check maturin >"$log" 2>&1 ||
       ! VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" CARGO_TARGET_DIR="$root/target/py$v" \
            "$venv/bin/maturin" develop --release --extras "$extras" >>"$log" 2>&1; then
        echo "build failed on CPython $v; log:"
        tail -n 40 "$log"
        outcome[$v]="build failed"
        failed=1
        continue
    fi
    python_of[$v]=$python
done

for v in "${versions[@]}"; do
    [ -n "${python_of[$v]:-}" ] || continue
    echo "=== CPython $v (${python_of[$v]})"
    venv="$root/.venvs/py$v"
    "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@" 2>&1 | tee "$root/.venvs/py$v.pytest"
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
    [ -n "${outcome[$v]:-}" ] && echo "CPython $v: ${outcome[$v]}"
done
if [ "${#skipped[@]}" -gt 0 ]; then
    echo "skipped (not installed): ${skipped[*]}"
else
    echo "skipped: none (all of ${versions[*]} found)"
fi
if [ "${#outcome[@]}" -eq 0 ]; then
    echo "no CPython 3.9-3.13 found"
    exit 1
fi
exit "$failed"
