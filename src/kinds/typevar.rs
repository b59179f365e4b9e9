//! Type parameters (`typing.TypeVar`, `ParamSpec`, `TypeVarTuple`): by
//! reference when their module holds them under their name, else rebuilt
//! and tracked like classes, so that loading one twice gives one object.
//!
//! Wire layout: `make_type_parameter(*type_parameter_args)`.

use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule, PyString, PyTuple};

use crate::format;
use crate::layout;
use crate::reconstructors::{self, Reconstructor};
use crate::support::reduce::reduce_to_getattr;
use crate::support::{digest, lookup, names, tracker};

layout! {
    /// `make_type_parameter`'s arguments.
    pub mod type_parameter_args {
        /// `typing.TypeVar`, `ParamSpec` or `TypeVarTuple`.
        CLASS = "class",
        NAME = "name",
        CONSTRAINTS = "constraints",
        /// `bound`, `covariant`, `contravariant`, `infer_variance`, `default`.
        KWARGS = "kwargs",
        TRACKER_ID = "tracker_id",
    }
}

/// Adds the reconstructor and layout of type parameters to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    reconstructors::add(
        m,
        Reconstructor::MakeTypeParameter,
        wrap_pyfunction!(make_type_parameter, m)?,
    )?;
    format::export(m, "type_parameter_args", &type_parameter_args::FIELD_NAMES)
}

// ---------------------------------------------------------------------------
// Pickling.

/// A `TypeVar`, `ParamSpec` or `TypeVarTuple`: by reference when its module has it
/// under its name, else rebuilt from its parameters and tracked, so that
/// loading it twice gives one object (as cloudpickle does for `TypeVars`).
pub fn reduce_type_parameter<'py>(param: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = param.py();
    let name = param.getattr(intern!(py, "__name__"))?;
    if let Some(module) = lookup::lookup_module_and_name(param, &name)? {
        if !lookup::module_registered_by_value(&module)? {
            return reduce_to_getattr(module, name);
        }
    }
    if let Some(placeholder) = digest::placeholder(param)? {
        return Ok(placeholder);
    }
    let constraints = lookup::getattr_opt(param, intern!(py, "__constraints__"))?
        .unwrap_or_else(|| PyTuple::empty(py).into_any());
    let kwargs = PyDict::new(py);
    for flag in ["__covariant__", "__contravariant__", "__infer_variance__"] {
        if lookup::getattr_opt(param, &PyString::new(py, flag))?
            .map(|v| v.is_truthy())
            .transpose()?
            .unwrap_or(false)
        {
            kwargs.set_item(flag.trim_matches('_'), true)?;
        }
    }
    if let Some(bound) =
        lookup::getattr_opt(param, intern!(py, "__bound__"))?.filter(|b| !b.is_none())
    {
        kwargs.set_item("bound", bound)?;
    }
    let has_default = match lookup::getattr_opt(param, intern!(py, "has_default"))? {
        Some(method) => method.call0()?.is_truthy()?,
        None => false,
    };
    if has_default {
        kwargs.set_item("default", param.getattr(intern!(py, "__default__"))?)?;
    }
    let parts = [
        param.get_type().into_any(),
        names::canonical(name)?,
        constraints,
        kwargs.into_any(),
    ];
    // Its module, though not written, keeps apart same-named parameters of
    // two modules.
    let module = lookup::getattr_opt(param, intern!(py, "__module__"))?
        .unwrap_or_else(|| py.None().into_bound(py));
    let definition = PyTuple::new(py, parts.iter().chain([&module]).collect::<Vec<_>>())?;
    let tracker_id =
        tracker::tracker_id_for(param, || digest::tracker_id(param, definition.as_any()))?;
    if digest::in_progress() {
        return digest::by_id(py, &tracker_id);
    }
    let id = PyString::new(py, &tracker_id).into_any();
    reconstructors::reduce_to(
        py,
        Reconstructor::MakeTypeParameter,
        parts.into_iter().chain([id]).collect::<Vec<_>>(),
    )
}

// ---------------------------------------------------------------------------
// Loading.

/// `typing.TypeVar`, `ParamSpec` or `TypeVarTuple` (the classes this accepts).
pub fn is_type_parameter_class(cls: &Bound<'_, PyAny>) -> PyResult<bool> {
    let typing = cls.py().import("typing")?;
    for name in ["TypeVar", "ParamSpec", "TypeVarTuple"] {
        if lookup::getattr_opt(&typing.clone().into_any(), &PyString::new(cls.py(), name))?
            .is_some_and(|c| c.is(cls))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `cls(name, *constraints, **kwargs)`, or the type parameter already loaded
/// under `tracker_id` in this process.
#[pyfunction]
pub fn make_type_parameter<'py>(
    cls: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
    constraints: &Bound<'py, PyTuple>,
    kwargs: &Bound<'py, PyDict>,
    tracker_id: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    if !is_type_parameter_class(cls)? {
        return Err(PyTypeError::new_err(
            "expected typing.TypeVar, ParamSpec or TypeVarTuple",
        ));
    }
    let mut args = vec![name.clone().into_any()];
    args.extend(constraints.iter());
    let param = cls.call(PyTuple::new(cls.py(), args)?, Some(kwargs))?;
    tracker::lookup_or_track(param, tracker_id.to_str()?)
}
