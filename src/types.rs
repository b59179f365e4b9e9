//! The small reducers: cells, bound methods, classmethod/staticmethod.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyString, PyTuple};

use crate::ffi;
use crate::reconstruct::Reconstructors;

/// Builds the reduce tuple `(callable, args)`.
pub fn reduce<'py>(callable: &Py<PyAny>, args: Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
    let py = args.py();
    Ok(PyTuple::new(py, [callable.bind(py).clone(), args.into_any()])?.into_any())
}

/// Values that cannot lead back to the cell, so they can go in its arguments.
fn is_atomic(value: &Bound<'_, PyAny>) -> bool {
    value.is_none()
        || value.is_exact_instance_of::<PyBool>()
        || value.is_exact_instance_of::<PyInt>()
        || value.is_exact_instance_of::<PyFloat>()
        || value.is_exact_instance_of::<PyString>()
        || value.is_exact_instance_of::<PyBytes>()
}

/// An empty cell is `make_cell()`; a cell holding a plain value `make_cell(v)`;
/// any other cell is made empty, memoized, then filled by `cell_set`, so
/// that its contents may refer back to it (a recursive closure).
pub fn reduce_cell<'py>(cell: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = cell.py();
    let r = Reconstructors::get(py);
    match ffi::cell_contents(cell) {
        None => reduce(&r.make_cell, PyTuple::empty(py)),
        Some(value) if is_atomic(&value) => reduce(&r.make_cell, PyTuple::new(py, [value])?),
        Some(value) => Ok(PyTuple::new(
            py,
            [
                r.make_cell.bind(py).clone(),
                PyTuple::empty(py).into_any(),
                value,
                py.None().into_bound(py),
                py.None().into_bound(py),
                r.cell_set.bind(py).clone(),
            ],
        )?
        .into_any()),
    }
}

/// A bound method: its function and its `self`, both pickled explicitly.
pub fn reduce_method<'py>(method: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = method.py();
    let args = PyTuple::new(
        py,
        [method.getattr(intern!(py, "__func__"))?, method.getattr(intern!(py, "__self__"))?],
    )?;
    reduce(&Reconstructors::get(py).make_method, args)
}

/// `classmethod(f)`, `staticmethod(f)` and their abstract variants: `type(obj)(f)`.
pub fn reduce_function_wrapper<'py>(wrapper: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = wrapper.py();
    let args = PyTuple::new(py, [wrapper.getattr(intern!(py, "__func__"))?])?;
    Ok(PyTuple::new(py, [wrapper.get_type().into_any(), args.into_any()])?.into_any())
}
