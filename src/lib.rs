//! cloudpickle-rs: cloudpickle's reducers as native code behind the C
//! pickler's `reducer_override` hook.
//!
//! How the code is organised (no file of `src/` imports one that imports it):
//! - `pickler` makes the Pickler class (a subclass of the C pickler), binds
//!   `__init__` and holds the dispatch-table descriptor; `hook` is its
//!   `reducer_override`: type -> kind in one table; `dumps` holds `dumps`,
//!   `dump` and the picklers `dumps` reuses.
//! - `kinds/` holds one module per pickled kind: its wire layout (named
//!   positions, declared with `layout!` and exported as `_native.FORMAT`),
//!   its reducer, then its reconstructors. Kinds depend on each other only
//!   downward (`function` uses `code` and `stdlib`).
//! - `reconstructors` declares the load-side callables once; each kind
//!   registers into it. `compat` serves upstream cloudpickle's formats.
//! - `support/` holds what kinds share; `ffi/` every raw CPython call.

mod compat;
mod dumps;
mod ffi;
mod format;
mod hook;
mod kinds;
mod pickler;
mod reconstructors;
mod support;

use pyo3::prelude::*;

/// `gil_used`: the registries and class creation rely on the GIL; no
/// free-threaded CPython has been tested.
#[pymodule(gil_used = true)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    format::start(m)?;
    kinds::code::register(m)?;
    kinds::function::register(m)?;
    kinds::class::register(m)?;
    kinds::typevar::register(m)?;
    kinds::module::register(m)?;
    kinds::exception::register(m)?;
    kinds::stdlib::register(m)?;
    kinds::misc::register(m)?;
    reconstructors::finish(m)?;
    compat::register(m)?;
    m.add("Pickler", pickler::create_pickler_class(py)?)?;
    m.add_class::<pickler::DispatchTableDescriptor>()?;
    m.add_function(wrap_pyfunction!(dumps::dumps, m)?)?;
    m.add_function(wrap_pyfunction!(dumps::dump, m)?)?;
    m.add_function(wrap_pyfunction!(
        support::registry::register_pickle_by_value,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(
        support::registry::unregister_pickle_by_value,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(
        support::registry::list_registry_pickle_by_value,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(support::tracker::tracked_by_id, m)?)?;
    m.add(
        "VENDORED_CLOUDPICKLE",
        pyo3::types::PyTuple::new(py, support::tracker::VENDORED_CLOUDPICKLE)?,
    )?;
    m.add("PYTHON_VERSION", kinds::code::python_version(py)?)?;
    // The package's one version (Cargo.toml's) and the CPython it was compiled for.
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("BUILT_FOR_PYTHON", env!("CPRS_BUILT_FOR_PYTHON"))?;
    Ok(())
}
