//! The by-reference decision: can the receiver import this function, class
//! or module by name? Mirrors cloudpickle's `_whichmodule`,
//! `_lookup_module_and_qualname` and `_should_pickle_by_reference`.

use pyo3::exceptions::{PyAttributeError, PyKeyError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule, PyString};

use crate::support::registry;

pub fn sys_modules(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    crate::ffi::sys_modules(py)
}

/// `getattr(obj, name, None)` that lets every error but `AttributeError` through.
pub fn getattr_opt<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    match obj.getattr(name) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_instance_of::<PyAttributeError>(obj.py()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `mapping[key]`, None on `KeyError`, for any mapping.
pub fn mapping_get<'py>(
    mapping: &Bound<'py, PyAny>,
    key: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    match mapping.get_item(key) {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_instance_of::<PyKeyError>(mapping.py()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A value read from a module namespace as code using it sees it: from 3.15
/// (PEP 810) a lazily imported name is a `types.LazyImportType` object until
/// first use, which imports it; that import happens here.
#[cfg_attr(not(Py_3_15), allow(clippy::unnecessary_wraps))]
pub fn resolved(value: Bound<'_, PyAny>) -> PyResult<Bound<'_, PyAny>> {
    #[cfg(Py_3_15)]
    if value
        .get_type()
        .is(crate::support::statics::lazy_import_type(value.py())?)
    {
        return value.call_method0(intern!(value.py(), "resolve"));
    }
    Ok(value)
}

/// Follows a dotted qualified name from `obj`; None where pickle's
/// `_getattribute` raises `AttributeError` (a missing part or `<locals>`).
pub fn getattribute<'py>(
    obj: &Bound<'py, PyAny>,
    dotted: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let Ok(dotted) = dotted.cast::<PyString>() else {
        return Ok(None);
    };
    let mut current = obj.clone();
    for part in dotted.to_str()?.split('.') {
        if part == "<locals>" {
            return Ok(None);
        }
        match attribute(&current, &PyString::new(obj.py(), part))? {
            Some(next) => current = next,
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

/// [`getattr_opt`], reading a module's namespace directly when it has no
/// module `__getattr__`: a missing name then costs no `AttributeError`.
fn attribute<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if let Ok(module) = obj.cast_exact::<PyModule>() {
        let namespace = module.dict();
        if let Some(found) = namespace.get_item(name)? {
            return resolved(found).map(Some);
        }
        if !namespace.contains(intern!(obj.py(), "__getattr__"))? {
            return Ok(None);
        }
    }
    getattr_opt(obj, name)
}

/// The name of the module `obj` belongs to: its `__module__`, else the first
/// imported module (not `__main__`) where `name` leads to `obj`.
pub fn whichmodule<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = obj.py();
    if let Some(module_name) = getattr_opt(obj, intern!(py, "__module__"))? {
        if !module_name.is_none() {
            return Ok(Some(module_name));
        }
    }
    // Iterate over a copy: a getattr below may import and grow sys.modules.
    for (module_name, module) in sys_modules(py)?.copy()?.iter() {
        if module.is_none() || !module.is_instance_of::<PyModule>() {
            continue;
        }
        if let Ok(n) = module_name.cast::<PyString>() {
            if matches!(n.to_str(), Ok("__main__" | "__mp_main__")) {
                continue;
            }
        }
        // As upstream: any error while introspecting a module counts as "not here".
        if let Ok(Some(found)) = getattribute(&module, name) {
            if found.is(obj) {
                return Ok(Some(module_name));
            }
        }
    }
    Ok(None)
}

/// The importable module holding `obj` under its qualified name, or None
/// when `obj` is dynamic (defined in `__main__`, locally, or not found).
pub fn lookup_module_and_qualname<'py>(
    obj: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = obj.py();
    let name = match getattr_opt(obj, intern!(py, "__qualname__"))? {
        Some(n) if !n.is_none() => n,
        _ => getattr_opt(obj, intern!(py, "__name__"))?.unwrap_or_else(|| py.None().into_bound(py)),
    };
    lookup_module_and_name(obj, &name)
}

/// As [`lookup_module_and_qualname`], with the name to look up given.
pub fn lookup_module_and_name<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = obj.py();
    let name = name.clone();
    // A local function or class can never be reached by name (no attribute
    // is called "<locals>"): skip the module search.
    if name
        .cast::<PyString>()
        .is_ok_and(|n| n.to_str().is_ok_and(|s| s.contains("<locals>")))
    {
        return Ok(None);
    }
    let Some(module_name) = whichmodule(obj, &name)? else {
        return Ok(None);
    };
    if module_name
        .cast::<PyString>()
        .is_ok_and(|n| n.to_str().is_ok_and(|s| s == "__main__"))
    {
        return Ok(None);
    }
    let Some(module) = sys_modules(py)?.get_item(&module_name)? else {
        return Ok(None);
    };
    if module.is_none() {
        return Ok(None);
    }
    match getattribute(&module, &name)? {
        Some(found) if found.is(obj) => Ok(Some(module)),
        _ => Ok(None),
    }
}

pub fn module_registered_by_value(module: &Bound<'_, PyAny>) -> PyResult<bool> {
    let name = module.getattr(intern!(module.py(), "__name__"))?;
    Ok(match name.cast::<PyString>() {
        Ok(n) => registry::is_registered(n.to_str()?),
        Err(_) => false,
    })
}

/// Functions and classes: importable by name and not registered by value.
pub fn function_or_class_by_reference(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    match lookup_module_and_qualname(obj)? {
        Some(module) => Ok(!module_registered_by_value(&module)?),
        None => Ok(false),
    }
}

/// Modules: present in `sys.modules` (so importable) and not registered by value.
pub fn module_by_reference(module: &Bound<'_, PyAny>) -> PyResult<bool> {
    if module_registered_by_value(module)? {
        return Ok(false);
    }
    let name = module.getattr(intern!(module.py(), "__name__"))?;
    sys_modules(module.py())?.contains(name)
}
