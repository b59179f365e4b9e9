//! cloudpickle-rs: cloudpickle's reducers as native code behind the C
//! pickler's `reducer_override` hook.

mod class;
mod code;
mod compat;
mod digest;
mod ffi;
mod function;
mod lookup;
mod module;
mod names;
mod pickler;
mod reconstruct;
mod registry;
mod statics;
mod stdlib;
mod types;

use pyo3::prelude::*;

/// `gil_used`: the registries and class creation rely on the GIL; no
/// free-threaded CPython has been tested.
#[pymodule(gil_used = true)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    reconstruct::Reconstructors::register(m)?;
    compat::register(m)?;
    m.add("Pickler", pickler::create_pickler_class(py)?)?;
    m.add_class::<pickler::DispatchTableDescriptor>()?;
    m.add_function(wrap_pyfunction!(pickler::dumps, m)?)?;
    m.add_function(wrap_pyfunction!(pickler::dump, m)?)?;
    m.add_function(wrap_pyfunction!(registry::register_pickle_by_value, m)?)?;
    m.add_function(wrap_pyfunction!(registry::unregister_pickle_by_value, m)?)?;
    m.add_function(wrap_pyfunction!(
        registry::list_registry_pickle_by_value,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(registry::tracked_by_id, m)?)?;
    m.add("PYTHON_VERSION", code::python_version(py))?;
    // The package's one version (Cargo.toml's) and the CPython it was compiled for.
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("BUILT_FOR_PYTHON", env!("CPRS_BUILT_FOR_PYTHON"))?;
    m.add(
        "FUNCTION_STATE",
        pyo3::types::PyTuple::new(py, reconstruct::function_state::FIELDS)?,
    )?;
    Ok(())
}
