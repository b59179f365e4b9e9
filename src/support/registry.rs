//! The names of the modules registered to be pickled by value.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ahash::AHashSet;
use parking_lot::RwLock;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyModule, PySet};

static BY_VALUE: RwLock<Option<AHashSet<String>>> = RwLock::new(None);
/// Lets the hot path skip the lock while nothing is registered (the usual case).
static ANY_REGISTERED: AtomicBool = AtomicBool::new(false);
/// Changes whenever a module is registered or unregistered: what was
/// decided from the registry before is stale.
static GENERATION: AtomicUsize = AtomicUsize::new(0);

/// The registry's generation (see [`GENERATION`]).
pub fn generation() -> usize {
    GENERATION.load(Ordering::Acquire)
}

/// Whether `module_name` or one of its parent packages is registered.
pub fn is_registered(module_name: &str) -> bool {
    if !ANY_REGISTERED.load(Ordering::Acquire) {
        return false;
    }
    BY_VALUE
        .read()
        .as_ref()
        .is_some_and(|names| covers(names, module_name))
}

/// Whether `module_name` is one of `names` or inside a package among them.
fn covers(names: &AHashSet<String>, module_name: &str) -> bool {
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
    GENERATION.fetch_add(1, Ordering::AcqRel);
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
    GENERATION.fetch_add(1, Ordering::AcqRel);
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

#[cfg(test)]
mod tests {
    use super::covers;
    use ahash::AHashSet;

    fn registered(names: &[&str]) -> AHashSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_registered_package_covers_its_submodules() {
        let names = registered(&["pkg", "other.sub"]);
        assert!(covers(&names, "pkg"));
        assert!(covers(&names, "pkg.mod"));
        assert!(covers(&names, "pkg.mod.deeper"));
        assert!(covers(&names, "other.sub.x"));
    }

    #[test]
    fn a_prefix_that_is_not_a_package_does_not_cover() {
        let names = registered(&["pkg", "other.sub"]);
        assert!(!covers(&names, "pkgs"));
        assert!(!covers(&names, "pkg_extra.mod"));
        assert!(!covers(&names, "other"));
        assert!(!covers(&names, "other.subway"));
        assert!(!covers(&registered(&[]), "pkg"));
    }
}
