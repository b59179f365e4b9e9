//! Classes. The foundation pickles classes by reference, except the builtin
//! types that are only reachable through the `types` module.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::reconstruct::Reconstructors;
use crate::types::reduce;

/// `{type: name}` for every class in `types` (as cloudpickle's `_BUILTIN_TYPE_NAMES`).
fn builtin_type_names(py: Python<'_>) -> PyResult<&Bound<'_, PyDict>> {
    static NAMES: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
    NAMES
        .get_or_try_init(py, || {
            let names = PyDict::new(py);
            let namespace = py.import("types")?.getattr("__dict__")?.cast_into::<PyDict>()?;
            for (name, value) in namespace.iter() {
                if value.get_type().is(py.get_type::<PyType>()) {
                    names.set_item(value, name)?;
                }
            }
            Ok::<_, PyErr>(names.unbind())
        })
        .map(|d| d.bind(py))
}

pub fn reduce_class<'py>(cls: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    if let Some(name) = builtin_type_names(py)?.get_item(cls)? {
        return reduce(&Reconstructors::get(py).builtin_type, PyTuple::new(py, [name])?);
    }
    Ok(py.NotImplemented().into_bound(py))
}
