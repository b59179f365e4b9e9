//! Objects of the standard library that plain pickle and upstream
//! cloudpickle cannot ship once they belong to `__main__` or a local scope:
//! functools' caches and dispatchers, `typing.NewType`, module-level
//! `contextvars.ContextVar`s and the weak dictionaries. Each kind: its wire
//! layout, its reducer, then its reconstructor (when a stdlib callable does
//! not serve as one).

use ahash::AHashMap;
use parking_lot::Mutex;
use pyo3::exceptions::{PyLookupError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyInt, PyList, PyString, PyTuple};

use crate::ffi;
use crate::reconstructors::{self, Reconstructor};
use crate::support::reduce::{not_implemented, reduce_to_getattr, reduce_with_state};
use crate::support::{digest, lookup, names, statics, tracker};

/// Adds the reconstructors of the standard library's kinds to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    reconstructors::add(
        m,
        Reconstructor::MakeLruCache,
        wrap_pyfunction!(make_lru_cache, m)?,
    )?;
    reconstructors::add(
        m,
        Reconstructor::MakeSingledispatch,
        wrap_pyfunction!(make_singledispatch, m)?,
    )?;
    reconstructors::add(
        m,
        Reconstructor::MakeSingledispatchmethod,
        wrap_pyfunction!(make_singledispatchmethod, m)?,
    )?;
    reconstructors::add(
        m,
        Reconstructor::MakeContextVar,
        wrap_pyfunction!(make_context_var, m)?,
    )
}

fn functools(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    py.import("functools")
}

/// The attributes of `wrapper` other than `skip` and those it got from
/// `wrapped` (`functools.update_wrapper` copies them; they are the same
/// objects): None when there are none.
fn extra_attributes<'py>(
    wrapper: &Bound<'py, PyAny>,
    wrapped: &Bound<'py, PyAny>,
    skip: &[&str],
) -> PyResult<Bound<'py, PyAny>> {
    let py = wrapper.py();
    let extra = PyDict::new(py);
    for (key, value) in ffi::instance_dict(wrapper)?.iter() {
        let Ok(name) = key.cast::<PyString>() else {
            extra.set_item(key, value)?;
            continue;
        };
        if skip.contains(&name.to_str()?) || (name == "__wrapped__" && value.is(wrapped)) {
            continue;
        }
        if lookup::getattr_opt(wrapped, name)?.is_some_and(|v| v.is(&value)) {
            continue;
        }
        extra.set_item(names::canonical(key)?, value)?;
    }
    Ok(if extra.is_empty() {
        py.None().into_bound(py)
    } else {
        extra.into_any()
    })
}

// --- functools.lru_cache / functools.cache ---------------------------------
// `(make_lru_cache, (function, maxsize, typed), extra attributes or None)`:
// the wrapper is made again by `functools.lru_cache`, with an empty cache.

/// A cached function that the receiver cannot import.
pub fn reduce_lru_cache<'py>(wrapper: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = wrapper.py();
    if lookup::function_or_class_by_reference(wrapper)? {
        return Ok(not_implemented(py));
    }
    let missing = || {
        statics::PicklingError::new_err(
            "cannot pickle a functools.lru_cache wrapper that lost its __wrapped__ or cache_parameters",
        )
    };
    let function = lookup::getattr_opt(wrapper, intern!(py, "__wrapped__"))?.ok_or_else(missing)?;
    let parameters = lookup::getattr_opt(wrapper, intern!(py, "cache_parameters"))?
        .ok_or_else(missing)?
        .call0()?;
    let maxsize = parameters.get_item("maxsize")?;
    let typed = parameters.get_item("typed")?;
    let state = extra_attributes(wrapper, &function, &["cache_parameters"])?;
    let (make, args) =
        reconstructors::call(py, Reconstructor::MakeLruCache, [function, maxsize, typed])?;
    reduce_with_state(make, args, state)
}

/// `make_lru_cache(function, maxsize, typed)`: `functools.lru_cache(maxsize,
/// typed)(function)`.
#[pyfunction]
pub fn make_lru_cache<'py>(
    function: &Bound<'py, PyAny>,
    maxsize: &Bound<'py, PyAny>,
    typed: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let py = function.py();
    // Exactly an int: lru_cache compares it with 0 (a subclass's __lt__).
    if !(maxsize.is_none() || maxsize.is_exact_instance_of::<PyInt>()) {
        return Err(PyTypeError::new_err(
            "lru_cache maxsize must be None or an int",
        ));
    }
    if !function.is_callable() {
        return Err(PyTypeError::new_err("lru_cache needs a callable"));
    }
    functools(py)?
        .getattr(intern!(py, "lru_cache"))?
        .call1((maxsize, typed))?
        .call1((function,))
}

// --- functools.cached_property ---------------------------------------------
// `(functools.cached_property, (function,), attributes)`: its lock (3.9-3.11)
// is made again; `attrname` comes back in the attributes, since setting a
// class attribute does not call `__set_name__`.

pub fn reduce_cached_property<'py>(property: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = property.py();
    let attributes = PyDict::new(py);
    let mut function = None;
    for (key, value) in ffi::instance_dict(property)?.iter() {
        match key
            .cast::<PyString>()
            .map(|k| k.to_str().map(str::to_owned))
        {
            Ok(Ok(name)) if name == "func" => function = Some(value),
            Ok(Ok(name)) if name == "lock" => {}
            _ => attributes.set_item(names::canonical(key)?, value)?,
        }
    }
    let Some(function) = function else {
        return Err(statics::PicklingError::new_err(
            "cannot pickle a functools.cached_property without its func",
        ));
    };
    let cls = property.get_type().into_any();
    reduce_with_state(cls, PyTuple::new(py, [function])?, attributes.into_any())
}

// --- functools.singledispatch and singledispatchmethod ---------------------
// `(make_singledispatch, (default, ((cls, implementation), ...)), extra
// attributes or None)` and `(make_singledispatchmethod, (function, ((cls,
// implementation), ...)))`: made again by functools, then registered in the
// order of the original's registry.

/// The code of the function `functools.singledispatch` returns.
fn singledispatch_code(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static CODE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    CODE.get_or_try_init(py, || {
        let builtin = py.import("builtins")?.getattr("len")?;
        let wrapper = functools(py)?
            .getattr("singledispatch")?
            .call1((builtin,))?;
        Ok::<_, PyErr>(wrapper.getattr("__code__")?.unbind())
    })
    .map(|code| code.bind(py))
}

/// `((cls, implementation), ...)` of a singledispatch registry, without the
/// default (registered for `object`).
fn registrations<'py>(registry: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let py = registry.py();
    let object = py.get_type::<pyo3::types::PyAny>();
    let mut found = Vec::new();
    for item in registry.call_method0(intern!(py, "items"))?.try_iter()? {
        let item = item?;
        if !item.get_item(0)?.is(&object) {
            found.push(item);
        }
    }
    PyTuple::new(py, found)
}

/// A function made by `functools.singledispatch`, when `code` is its code.
pub fn reduce_singledispatch<'py>(
    function: &Bound<'py, PyAny>,
    code: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = function.py();
    if !code.is(singledispatch_code(py)?) {
        return Ok(None);
    }
    let (Some(registry), Some(default)) = (
        lookup::getattr_opt(function, intern!(py, "registry"))?,
        lookup::getattr_opt(function, intern!(py, "__wrapped__"))?,
    ) else {
        return Ok(None);
    };
    let skip = ["register", "dispatch", "registry", "_clear_cache"];
    let state = extra_attributes(function, &default, &skip)?;
    let (make, args) = reconstructors::call(
        py,
        Reconstructor::MakeSingledispatch,
        [default, registrations(&registry)?.into_any()],
    )?;
    reduce_with_state(make, args, state).map(Some)
}

fn register_all(target: &Bound<'_, PyAny>, registrations: &Bound<'_, PyTuple>) -> PyResult<()> {
    for item in registrations.iter() {
        let pair = item
            .cast_into::<PyTuple>()
            .ok()
            .filter(|p| p.len() == 2)
            .ok_or_else(|| {
                PyTypeError::new_err(
                    "singledispatch registrations must be (class, implementation) pairs",
                )
            })?;
        target.call_method1(
            intern!(target.py(), "register"),
            (pair.get_item(0)?, pair.get_item(1)?),
        )?;
    }
    Ok(())
}

#[pyfunction]
pub fn make_singledispatch<'py>(
    default: &Bound<'py, PyAny>,
    registrations: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = default.py();
    if !default.is_callable() {
        return Err(PyTypeError::new_err("singledispatch needs a callable"));
    }
    let dispatcher = functools(py)?
        .getattr(intern!(py, "singledispatch"))?
        .call1((default,))?;
    register_all(&dispatcher, registrations)?;
    Ok(dispatcher)
}

pub fn reduce_singledispatchmethod<'py>(method: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = method.py();
    let function = method.getattr(intern!(py, "func"))?;
    let registry = method
        .getattr(intern!(py, "dispatcher"))?
        .getattr(intern!(py, "registry"))?;
    let args = [function, registrations(&registry)?.into_any()];
    reconstructors::reduce_to(py, Reconstructor::MakeSingledispatchmethod, args)
}

#[pyfunction]
pub fn make_singledispatchmethod<'py>(
    function: &Bound<'py, PyAny>,
    registrations: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = function.py();
    // functools checks `function` itself (a callable or a descriptor).
    let method = functools(py)?
        .getattr(intern!(py, "singledispatchmethod"))?
        .call1((function,))?;
    register_all(&method, registrations)?;
    Ok(method)
}

// --- typing.NewType (3.10+: a class; 3.9's is a function) -------------------
// `(typing.NewType, (name, supertype), its attributes)`: the attributes bring
// back `__module__`, which NewType would take from the loader's frame.

pub fn reduce_new_type<'py>(new_type: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = new_type.py();
    if lookup::function_or_class_by_reference(new_type)? {
        return Ok(not_implemented(py));
    }
    let name = names::canonical(new_type.getattr(intern!(py, "__name__"))?)?;
    let supertype = new_type.getattr(intern!(py, "__supertype__"))?;
    let attributes = PyDict::new(py);
    for (key, value) in ffi::instance_dict(new_type)?.iter() {
        let value = if value.is_exact_instance_of::<PyString>() {
            names::canonical(value)?
        } else {
            value
        };
        attributes.set_item(names::canonical(key)?, value)?;
    }
    let args = PyTuple::new(py, [name, supertype])?;
    reduce_with_state(new_type.get_type().into_any(), args, attributes.into_any())
}

// --- contextvars.ContextVar --------------------------------------------------
// By reference when a module the receiver can import holds it under its own
// name; else `(make_context_var, (name, (default,) or (), tracker_id))`. The
// tracker id (a digest of name and default, as for TypeVars) makes every
// pickle of one variable load as one variable in a process. ContextVars
// cannot be weakly referenced: tracked ones are kept alive, as module-level
// variables are anyway.

struct ContextVars {
    by_id: AHashMap<String, Py<PyAny>>,
    /// Address -> id, for the variables in `by_id` (which keeps them alive).
    ids: AHashMap<usize, String>,
}

static CONTEXT_VARS: Mutex<Option<ContextVars>> = Mutex::new(None);

fn with_context_vars<T>(f: impl FnOnce(&mut ContextVars) -> T) -> T {
    let mut guard = CONTEXT_VARS.lock();
    f(guard.get_or_insert_with(|| ContextVars {
        by_id: AHashMap::new(),
        ids: AHashMap::new(),
    }))
}

/// `(default,)`, or `()` when the variable has none (what `get()` says in an
/// empty context).
fn context_var_default<'py>(var: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let py = var.py();
    let empty = py.import("contextvars")?.getattr("Context")?.call0()?;
    match empty.call_method1(intern!(py, "run"), (var.getattr(intern!(py, "get"))?,)) {
        Ok(default) => PyTuple::new(py, [default]),
        Err(e) if e.is_instance_of::<PyLookupError>(py) => Ok(PyTuple::empty(py)),
        Err(e) => Err(e),
    }
}

pub fn reduce_context_var<'py>(var: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = var.py();
    let name = var.getattr(intern!(py, "name"))?;
    if let Some(module) = lookup::lookup_module_and_name(var, &name)? {
        if !lookup::module_registered_by_value(&module)? {
            return reduce_to_getattr(module, name);
        }
    }
    let name = names::canonical(name)?;
    let default = context_var_default(var)?;
    let address = var.as_ptr() as usize;
    let known = with_context_vars(|vars| vars.ids.get(&address).cloned());
    let id = if let Some(id) = known {
        id
    } else {
        let definition = PyTuple::new(py, [name.clone(), default.clone().into_any()])?;
        let base = digest::tracker_id(var, definition.as_any())?;
        with_context_vars(|vars| {
            let id = tracker::first_free_id(&base, |id| {
                vars.by_id
                    .get(id)
                    .is_some_and(|other| !other.bind(py).is(var))
            });
            vars.by_id.insert(id.clone(), var.clone().unbind());
            vars.ids.insert(address, id.clone());
            id
        })
    };
    let args = [name, default.into_any(), PyString::new(py, &id).into_any()];
    reconstructors::reduce_to(py, Reconstructor::MakeContextVar, args)
}

/// `make_context_var(name, (default,) or (), tracker_id)`: the variable
/// already loaded under that id, else a new one.
#[pyfunction]
pub fn make_context_var<'py>(
    name: &Bound<'py, PyString>,
    default: &Bound<'py, PyTuple>,
    tracker_id: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = name.py();
    let id = tracker_id.to_str()?.to_owned();
    if let Some(known) = with_context_vars(|vars| vars.by_id.get(&id).map(|v| v.clone_ref(py))) {
        return Ok(known.into_bound(py));
    }
    let kwargs = PyDict::new(py);
    match default.len() {
        0 => {}
        1 => kwargs.set_item("default", default.get_item(0)?)?,
        _ => {
            return Err(PyTypeError::new_err(
                "a ContextVar default must be () or (value,)",
            ))
        }
    }
    let var = py
        .import("contextvars")?
        .getattr("ContextVar")?
        .call((name,), Some(&kwargs))?;
    let var = with_context_vars(|vars| {
        let var = vars
            .by_id
            .entry(id.clone())
            .or_insert_with(|| var.clone().unbind())
            .clone_ref(py)
            .into_bound(py);
        vars.ids.insert(var.as_ptr() as usize, id);
        var
    });
    Ok(var)
}

// --- weakref.WeakValueDictionary / WeakKeyDictionary -----------------------
// `(cls, (), None, None, iter([(key, value), ...]))`: every live entry. Once
// loaded, the entries whose object nothing else in the pickle (or the
// receiver) holds go, as they would have in the sender.

pub fn reduce_weak_dictionary<'py>(mapping: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = mapping.py();
    let items = PyList::empty(py);
    for item in mapping.call_method0(intern!(py, "items"))?.try_iter()? {
        items.append(item?)?;
    }
    let none = py.None().into_bound(py);
    let parts = [
        mapping.get_type().into_any(),
        PyTuple::empty(py).into_any(),
        none.clone(),
        none,
        items.try_iter()?.into_any(),
    ];
    Ok(PyTuple::new(py, parts)?.into_any())
}
