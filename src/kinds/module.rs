//! Modules: importable ones by name (`subimport(name)`), dynamic ones (and
//! those registered by value) as `make_module(name)`, memoized, then
//! `module_setstate(module, namespace)`.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule, PyString};

use crate::reconstructors::{self, Reconstructor};
use crate::support::reduce::reduce_with_setter;
use crate::support::{lookup, statics};

/// Adds the reconstructors of modules to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    reconstructors::add(m, Reconstructor::Subimport, wrap_pyfunction!(subimport, m)?)?;
    reconstructors::add(
        m,
        Reconstructor::MakeModule,
        wrap_pyfunction!(make_module, m)?,
    )?;
    reconstructors::add(
        m,
        Reconstructor::ModuleSetstate,
        wrap_pyfunction!(module_setstate, m)?,
    )
}

// ---------------------------------------------------------------------------
// Pickling.

pub fn reduce_module<'py>(module: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = module.py();
    let name = module.getattr(intern!(py, "__name__"))?;
    if lookup::module_by_reference(module)? {
        return reconstructors::reduce_to(py, Reconstructor::Subimport, [name]);
    }
    // The namespace goes in the state, after the module is memoized, so that
    // functions and objects inside may refer back to the module.
    let namespace = module
        .getattr(intern!(py, "__dict__"))?
        .cast_into::<PyDict>()?
        .copy()?;
    // Libraries may put unpicklable objects there; loading restores builtins.
    if namespace.contains(intern!(py, "__builtins__"))? {
        namespace.del_item(intern!(py, "__builtins__"))?;
    }
    if cfg!(Py_3_15) {
        for (name, value) in namespace.copy()?.iter() {
            namespace.set_item(name, lookup::resolved(value)?)?;
        }
    }
    let (rebuild, args) = reconstructors::call(py, Reconstructor::MakeModule, [name])?;
    reduce_with_setter(
        rebuild,
        args,
        namespace.into_any(),
        reconstructors::get(py, Reconstructor::ModuleSetstate)?.clone(),
    )
}

// ---------------------------------------------------------------------------
// Loading.

/// Imports a module by its full dotted name and returns that module (not
/// its top-level package, as `__import__` would).
#[pyfunction]
pub fn subimport<'py>(name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    let py = name.py();
    let imported = py.import(name)?;
    Ok(lookup::sys_modules(py)?
        .get_item(name)?
        .unwrap_or_else(|| imported.into_any()))
}

/// An empty module of the given name; its namespace arrives through [`module_setstate`].
#[pyfunction]
pub fn make_module<'py>(name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    let py = name.py();
    let module = statics::module_type(py)?.call1((name,))?;
    module.setattr(intern!(py, "__builtins__"), statics::builtins_dict(py)?)?;
    Ok(module)
}

/// Fills a dynamic module's namespace.
#[pyfunction]
pub fn module_setstate(module: &Bound<'_, PyAny>, namespace: &Bound<'_, PyDict>) -> PyResult<()> {
    let py = module.py();
    let module = module.cast::<PyModule>()?;
    module.dict().update(namespace.as_mapping())?;
    module
        .dict()
        .set_item(intern!(py, "__builtins__"), statics::builtins_dict(py)?)?;
    Ok(())
}
