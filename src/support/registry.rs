//! The names of the modules registered to be pickled by value.

use std::sync::atomic::{AtomicBool, Ordering};

use ahash::AHashSet;
use parking_lot::RwLock;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyModule, PySet};

static BY_VALUE: RwLock<Option<AHashSet<String>>> = RwLock::new(None);
/// Lets the hot path skip the lock while nothing is registered (the usual case).
static ANY_REGISTERED: AtomicBool = AtomicBool::new(false);

/// Whether `module_name` or one of its parent packages is registered.
pub fn is_registered(module_name: &str) -> bool {
    if !ANY_REGISTERED.load(Ordering::Acquire) {
        return false;
    }
    let guard = BY_VALUE.read();
    let Some(names) = guard.as_ref() else {
        return false;
    };
    let mut name = module_name;
    loop {
        if names.contains(name) {
            return true;
        }
        match name.rfind('.') {
            Some(dot) => name = &name[..dot],
            None => return false,
        }
    }
}

fn module_name(module: &Bound<'_, PyAny>) -> PyResult<String> {
    if !module.is_instance_of::<PyModule>() {
        return Err(PyValueError::new_err(format!(
            "Input should be a module object, got {} instead",
            module.str()?
        )));
    }
    module
        .getattr(pyo3::intern!(module.py(), "__name__"))?
        .extract()
}

/// Register a module so that its functions and classes are pickled by value.
#[pyfunction]
pub fn register_pickle_by_value(module: &Bound<'_, PyAny>) -> PyResult<()> {
    let name = module_name(module)?;
    let sys_modules = module.py().import("sys")?.getattr("modules")?;
    if !sys_modules.contains(&name)? {
        return Err(PyValueError::new_err(format!(
            "{} was not imported correctly, have you used an `import` statement to access it?",
            module.str()?
        )));
    }
    BY_VALUE
        .write()
        .get_or_insert_with(AHashSet::new)
        .insert(name);
    ANY_REGISTERED.store(true, Ordering::Release);
    Ok(())
}

/// Unregister a module so that its functions and classes are pickled by reference again.
#[pyfunction]
pub fn unregister_pickle_by_value(module: &Bound<'_, PyAny>) -> PyResult<()> {
    let name = module_name(module)?;
    let mut guard = BY_VALUE.write();
    let names = guard.get_or_insert_with(AHashSet::new);
    if !names.remove(&name) {
        return Err(PyValueError::new_err(format!(
            "{} is not registered for pickle by value",
            module.str()?
        )));
    }
    ANY_REGISTERED.store(!names.is_empty(), Ordering::Release);
    Ok(())
}

/// A copy of the set of module names registered for pickling by value.
#[pyfunction]
pub fn list_registry_pickle_by_value(py: Python<'_>) -> PyResult<Bound<'_, PySet>> {
    let guard = BY_VALUE.read();
    match guard.as_ref() {
        Some(names) => PySet::new(py, names.iter()),
        None => PySet::empty(py),
    }
}
