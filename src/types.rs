//! The small reducers: cells, bound methods, classmethod/staticmethod,
//! type parameters.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyString, PyTuple};

use crate::ffi;
use crate::lookup;
use crate::reconstruct::Reconstructors;
use crate::registry;

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

/// A TypeVar, ParamSpec or TypeVarTuple: by reference when its module has it
/// under its name, else rebuilt from its parameters and tracked, so that
/// loading it twice gives one object (as cloudpickle does for TypeVars).
pub fn reduce_type_parameter<'py>(param: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = param.py();
    let name = param.getattr(intern!(py, "__name__"))?;
    if let Some(module) = lookup::lookup_module_and_name(param, &name)? {
        if !lookup::module_registered_by_value(&module)? {
            let getattr = py.import("builtins")?.getattr("getattr")?.unbind();
            return reduce(&getattr, PyTuple::new(py, [module, name])?);
        }
    }
    let constraints = lookup::getattr_opt(param, intern!(py, "__constraints__"))?
        .unwrap_or_else(|| PyTuple::empty(py).into_any());
    let kwargs = PyDict::new(py);
    for flag in ["__covariant__", "__contravariant__", "__infer_variance__"] {
        if lookup::getattr_opt(param, &PyString::new(py, flag))?.is_some_and(|v| v.is_truthy().unwrap_or(false)) {
            kwargs.set_item(flag.trim_matches('_'), true)?;
        }
    }
    if let Some(bound) = lookup::getattr_opt(param, intern!(py, "__bound__"))?.filter(|b| !b.is_none()) {
        kwargs.set_item("bound", bound)?;
    }
    let has_default = match lookup::getattr_opt(param, intern!(py, "has_default"))? {
        Some(method) => method.call0()?.is_truthy()?,
        None => false,
    };
    if has_default {
        kwargs.set_item("default", param.getattr(intern!(py, "__default__"))?)?;
    }
    let module = lookup::getattr_opt(param, intern!(py, "__module__"))?.map(|m| m.str().map(|s| s.to_string())).transpose()?;
    let definition = [
        param.get_type().qualname()?.to_string(),
        module.unwrap_or_default(),
        name.str()?.to_string(),
        constraints.repr()?.to_string(),
        kwargs.repr()?.to_string(),
    ];
    let base_id = registry::digest(&definition.iter().map(String::as_str).collect::<Vec<_>>());
    let tracker_id = registry::tracker_id_for(param, &base_id)?;
    let args = PyTuple::new(
        py,
        [param.get_type().into_any(), ffi::intern(name), constraints, kwargs.into_any(), PyString::new(py, &tracker_id).into_any()],
    )?;
    reduce(&Reconstructors::get(py).make_type_parameter, args)
}
