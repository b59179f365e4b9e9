fn main() {
    // Exposes `Py_3_10`, `Py_3_11`, ... cfgs for the interpreter being built against.
    pyo3_build_config::use_pyo3_cfgs();
}
