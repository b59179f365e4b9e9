//! Modules: importable ones by name, dynamic ones (and those registered by
//! value) with their namespace.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::lookup;
use crate::reconstruct::Reconstructors;
use crate::types::reduce;

pub fn reduce_module<'py>(module: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = module.py();
    let r = Reconstructors::get(py);
    let name = module.getattr(intern!(py, "__name__"))?;
    if lookup::module_by_reference(module)? {
        return reduce(&r.subimport, PyTuple::new(py, [name])?);
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
    Ok(PyTuple::new(
        py,
        [
            r.make_module.bind(py).clone(),
            PyTuple::new(py, [name])?.into_any(),
            namespace.into_any(),
            py.None().into_bound(py),
            py.None().into_bound(py),
            r.module_setstate.bind(py).clone(),
        ],
    )?
    .into_any())
}
