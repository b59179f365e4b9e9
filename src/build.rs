fn main() {
    // Exposes `Py_3_10`, `Py_3_11`, ... cfgs for the interpreter being built against.
    pyo3_build_config::use_pyo3_cfgs();
    // The CPython minor version this extension is compiled for (`BUILT_FOR_PYTHON`).
    let version = pyo3_build_config::get().version();
    println!(
        "cargo:rustc-env=CPRS_BUILT_FOR_PYTHON={}.{}",
        version.major, version.minor
    );
}
