//! Upstream cloudpickle's names, natively: the reconstructors that pickles
//! written by cloudpickle 1.6–3.1 refer to (`cloudpickle.cloudpickle._make_function`
//! and the rest, with upstream's signatures and behaviour), and the private
//! helpers that downstream code imports from `cloudpickle.cloudpickle`.
//! `cloudpickle_rs.cloudpickle` exports them under upstream's names.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType};

use crate::ffi;
use crate::kinds::{class, code, function, misc, module, typevar};
use crate::support::{lookup, statics, tracker};

/// `_make_function(code, globals, name, argdefs, closure)`:
/// `types.FunctionType(...)` with the receiver's builtins in `globals`.
#[pyfunction]
#[pyo3(name = "_make_function")]
pub fn make_function<'py>(
    code: &Bound<'py, PyAny>,
    globals: &Bound<'py, PyDict>,
    name: &Bound<'py, PyAny>,
    argdefs: &Bound<'py, PyAny>,
    closure: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = code.py();
    globals.set_item(intern!(py, "__builtins__"), statics::builtins_dict(py)?)?;
    // FunctionType checks the code, the closure's length and its cells.
    statics::function_type(py)?.call1((code, globals, name, argdefs, closure))
}

/// `_function_setstate(func, (state, slotstate))`: `state` updates
/// `func.__dict__`; `slotstate` holds `__globals__` (merged), `__closure__`
/// (cell values copied into the function's own cells), the submodules (already
/// imported by loading them) and attributes to set.
#[pyfunction]
#[pyo3(name = "_function_setstate")]
pub fn function_setstate(func: &Bound<'_, PyAny>, state: &Bound<'_, PyTuple>) -> PyResult<()> {
    let py = func.py();
    let Some(func) = ffi::as_function(func) else {
        return Err(PyTypeError::new_err("expected a function"));
    };
    let (attributes, slots) = pair_of_dicts(state, "function")?;
    func.getattr(intern!(py, "__dict__"))?
        .cast::<PyDict>()?
        .update(attributes.as_mapping())?;
    let slots = slots.copy()?;
    if let Some(globals) = take(&slots, intern!(py, "__globals__"))? {
        let own = ffi::function_globals(func);
        own.update(globals.cast::<PyDict>()?.as_mapping())?;
        own.set_item(intern!(py, "__builtins__"), statics::builtins_dict(py)?)?;
    }
    if let Some(closure) = take(&slots, intern!(py, "__closure__"))? {
        copy_cell_values(func, &closure)?;
    }
    take(&slots, intern!(py, "_cloudpickle_submodules"))?;
    for (name, value) in slots.iter() {
        func.setattr(name.cast::<PyString>()?, value)?;
    }
    Ok(())
}

/// The two dicts of an upstream `(state, slotstate)` pair.
fn pair_of_dicts<'py>(
    state: &Bound<'py, PyTuple>,
    what: &str,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>)> {
    if state.len() != 2 {
        return Err(PyValueError::new_err(format!(
            "{what} state must be (state, slotstate)"
        )));
    }
    Ok((
        state.get_item(0)?.cast_into::<PyDict>()?,
        state.get_item(1)?.cast_into::<PyDict>()?,
    ))
}

/// Removes `key` from `dict`, returning its value.
fn take<'py>(
    dict: &Bound<'py, PyDict>,
    key: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let value = dict.get_item(key)?;
    if value.is_some() {
        dict.del_item(key)?;
    }
    Ok(value)
}

/// Copies the values of the pickled cells into the function's own cells, as
/// upstream does (so two functions sharing a cell no longer share it).
fn copy_cell_values(func: &Bound<'_, PyAny>, pickled: &Bound<'_, PyAny>) -> PyResult<()> {
    if pickled.is_none() {
        return Ok(());
    }
    let own = func.getattr(intern!(func.py(), "__closure__"))?;
    if own.is_none() {
        return Err(PyValueError::new_err("the function has no closure"));
    }
    let own = own.cast_into::<PyTuple>()?;
    let pickled = pickled.cast::<PyTuple>()?;
    if own.len() != pickled.len() {
        return Err(PyValueError::new_err("closure length mismatch"));
    }
    for (mine, theirs) in own.iter().zip(pickled.iter()) {
        if !ffi::is_cell(&theirs) {
            return Err(PyTypeError::new_err("closure items must be cells"));
        }
        if let Some(value) = ffi::cell_contents(&theirs)? {
            ffi::set_cell(&mine, &value)?;
        }
    }
    Ok(())
}

/// `_make_empty_cell()`.
#[pyfunction]
#[pyo3(name = "_make_empty_cell")]
pub fn make_empty_cell(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    ffi::new_cell(py, None)
}

/// `_make_cell(value=_empty_cell_value)`: empty when given upstream's
/// `_empty_cell_value` sentinel (`cloudpickle_rs.cloudpickle._empty_cell_value`).
#[pyfunction]
#[pyo3(name = "_make_cell", signature = (*value))]
pub fn make_cell<'py>(py: Python<'py>, value: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
    if value.len() == 1 {
        let item = value.get_item(0)?;
        if item.is(statics::empty_cell_value(py)?) {
            return ffi::new_cell(py, None);
        }
    }
    misc::make_cell(py, value)
}

/// `dynamic_subimport(name, vars)`: a new module holding `vars`.
#[pyfunction]
pub fn dynamic_subimport<'py>(
    name: &Bound<'py, PyString>,
    vars: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    let module = module::make_module(name)?;
    module::module_setstate(&module, vars)?;
    Ok(module)
}

/// `_make_skeleton_class(type_constructor, name, bases, type_kwargs,
/// class_tracker_id, extra)`: the class tracked under that id, else a new one
/// made with the metaclass `type_constructor` from `type_kwargs`.
#[pyfunction]
#[pyo3(name = "_make_skeleton_class")]
pub fn make_skeleton_class<'py>(
    type_constructor: &Bound<'py, PyType>,
    name: &Bound<'py, PyString>,
    bases: &Bound<'py, PyTuple>,
    type_kwargs: &Bound<'py, PyDict>,
    class_tracker_id: Option<&Bound<'py, PyString>>,
    extra: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let _ = extra;
    let py = name.py();
    if let Some(known) = tracked(py, class_tracker_id)? {
        return Ok(known);
    }
    let namespace = PyDict::new(py);
    for (key, value) in type_kwargs.iter() {
        namespace.set_item(ffi::intern(key.cast_into::<PyString>()?.into_any()), value)?;
    }
    let cls = class::create_class(type_constructor, name, bases, &namespace)?;
    track(cls, class_tracker_id)
}

/// The object already tracked under `id`, when there is an id.
fn tracked<'py>(
    py: Python<'py>,
    id: Option<&Bound<'py, PyString>>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    match id {
        Some(id) => Ok(tracker::tracked(py, id.to_str()?)),
        None => Ok(None),
    }
}

/// Tracks `obj` under `id` (upstream's `_lookup_class_or_track`).
fn track<'py>(
    obj: Bound<'py, PyAny>,
    id: Option<&Bound<'py, PyString>>,
) -> PyResult<Bound<'py, PyAny>> {
    match id {
        Some(id) => tracker::lookup_or_track(obj, id.to_str()?),
        None => Ok(obj),
    }
}

/// `_lookup_class_or_track(class_tracker_id, class_def)`.
#[pyfunction]
#[pyo3(name = "_lookup_class_or_track")]
pub fn lookup_class_or_track<'py>(
    class_tracker_id: Option<&Bound<'py, PyString>>,
    class_def: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    track(class_def, class_tracker_id)
}

/// `_make_skeleton_enum(bases, name, qualname, members, module,
/// class_tracker_id, extra)`.
#[pyfunction]
#[pyo3(name = "_make_skeleton_enum")]
pub fn make_skeleton_enum<'py>(
    bases: &Bound<'py, PyTuple>,
    name: &Bound<'py, PyString>,
    qualname: &Bound<'py, PyString>,
    members: &Bound<'py, PyDict>,
    module: &Bound<'py, PyAny>,
    class_tracker_id: &Bound<'py, PyString>,
    extra: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let _ = extra;
    class::make_enum(bases, name, qualname, members, module, class_tracker_id)
}

/// `_class_setstate(cls, (state, slotstate))`: sets the attributes in
/// `state`, registers the ABC virtual subclasses listed under `_abc_impl`.
#[pyfunction]
#[pyo3(name = "_class_setstate")]
pub fn class_setstate<'py>(
    cls: &Bound<'py, PyAny>,
    state: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    let (attributes, _slots) = pair_of_dicts(state, "class")?;
    let attributes = attributes.copy()?;
    let registry = take(&attributes, intern!(py, "_abc_impl"))?;
    let registry = match registry {
        Some(list) => Some(PyTuple::new(
            py,
            list.try_iter()?.collect::<PyResult<Vec<_>>>()?,
        )?),
        None => None,
    };
    let ours = PyTuple::new(
        py,
        [
            attributes.into_any(),
            registry.map_or_else(|| py.None().into_bound(py), pyo3::Bound::into_any),
        ],
    )?;
    class::class_setstate(cls, &ours)?;
    Ok(cls.clone())
}

/// `_make_typevar(name, bound, constraints, covariant, contravariant,
/// class_tracker_id)`.
#[pyfunction]
#[pyo3(name = "_make_typevar")]
pub fn make_typevar<'py>(
    name: &Bound<'py, PyString>,
    bound: &Bound<'py, PyAny>,
    constraints: &Bound<'py, PyTuple>,
    covariant: &Bound<'py, PyAny>,
    contravariant: &Bound<'py, PyAny>,
    class_tracker_id: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = name.py();
    let kwargs = PyDict::new(py);
    kwargs.set_item(intern!(py, "bound"), bound)?;
    kwargs.set_item(intern!(py, "covariant"), covariant)?;
    kwargs.set_item(intern!(py, "contravariant"), contravariant)?;
    let type_var = py.import("typing")?.getattr("TypeVar")?;
    typevar::make_type_parameter(&type_var, name, constraints, &kwargs, class_tracker_id)
}

/// `_make_dict_keys(obj, is_ordered=False)`.
#[pyfunction]
#[pyo3(name = "_make_dict_keys", signature = (obj, is_ordered = false))]
pub fn make_dict_keys<'py>(
    obj: &Bound<'py, PyAny>,
    is_ordered: bool,
) -> PyResult<Bound<'py, PyAny>> {
    misc::make_dict_view("keys", &as_list(obj)?, is_ordered)
}

/// `_make_dict_values(obj, is_ordered=False)`.
#[pyfunction]
#[pyo3(name = "_make_dict_values", signature = (obj, is_ordered = false))]
pub fn make_dict_values<'py>(
    obj: &Bound<'py, PyAny>,
    is_ordered: bool,
) -> PyResult<Bound<'py, PyAny>> {
    misc::make_dict_view("values", &as_list(obj)?, is_ordered)
}

/// `_make_dict_items(obj, is_ordered=False)`.
#[pyfunction]
#[pyo3(name = "_make_dict_items", signature = (obj, is_ordered = false))]
pub fn make_dict_items<'py>(
    obj: &Bound<'py, PyAny>,
    is_ordered: bool,
) -> PyResult<Bound<'py, PyAny>> {
    misc::make_dict_view("items", obj, is_ordered)
}

fn as_list<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    Ok(
        pyo3::types::PyList::new(obj.py(), obj.try_iter()?.collect::<PyResult<Vec<_>>>()?)?
            .into_any(),
    )
}

/// `_file_reconstructor(retval)`: the `io.StringIO` already rebuilt.
#[pyfunction]
#[pyo3(name = "_file_reconstructor")]
pub fn file_reconstructor(retval: Bound<'_, PyAny>) -> Bound<'_, PyAny> {
    retval
}

/// `_get_dataclass_field_type_sentinel(name)`.
#[pyfunction]
#[pyo3(name = "_get_dataclass_field_type_sentinel")]
pub fn get_dataclass_field_type_sentinel<'py>(
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    misc::dataclass_field_type(name)
}

// Pickling-side helpers that downstream code imports from upstream.

/// `_whichmodule(obj, name)`: the module name `obj` is found under, or None.
#[pyfunction]
#[pyo3(name = "_whichmodule")]
pub fn whichmodule<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    lookup::whichmodule(obj, name)
}

/// `_lookup_module_and_qualname(obj, name=None)`: `(module, name)` when
/// `obj` is importable under that name, else None.
#[pyfunction]
#[pyo3(name = "_lookup_module_and_qualname", signature = (obj, name = None))]
pub fn lookup_module_and_qualname<'py>(
    obj: &Bound<'py, PyAny>,
    name: Option<Bound<'py, PyAny>>,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let py = obj.py();
    let name = match name {
        Some(name) if !name.is_none() => name,
        _ => obj.getattr(intern!(py, "__qualname__"))?,
    };
    match lookup::lookup_module_and_name(obj, &name)? {
        Some(module) => Ok(Some(PyTuple::new(py, [module, name])?)),
        None => Ok(None),
    }
}

/// `_is_registered_pickle_by_value(module)`: the module or one of its parent
/// packages is registered by value.
#[pyfunction]
#[pyo3(name = "_is_registered_pickle_by_value")]
pub fn is_registered_pickle_by_value(module: &Bound<'_, PyAny>) -> PyResult<bool> {
    lookup::module_registered_by_value(module)
}

/// `_should_pickle_by_reference(obj, name=None)`: functions and classes
/// importable by name and not registered by value; modules in `sys.modules`
/// and not registered by value.
#[pyfunction]
#[pyo3(name = "_should_pickle_by_reference", signature = (obj, name = None))]
pub fn should_pickle_by_reference(
    obj: &Bound<'_, PyAny>,
    name: Option<Bound<'_, PyAny>>,
) -> PyResult<bool> {
    if ffi::as_function(obj).is_some() || obj.is_instance_of::<PyType>() {
        return match lookup_module_and_qualname(obj, name)? {
            Some(found) => Ok(!lookup::module_registered_by_value(&found.get_item(0)?)?),
            None => Ok(false),
        };
    }
    if obj.is_instance_of::<pyo3::types::PyModule>() {
        return lookup::module_by_reference(obj);
    }
    Err(PyTypeError::new_err(format!(
        "cannot check importability of {} instances",
        obj.get_type().name()?
    )))
}

/// `_extract_code_globals(co)`: the global names `co` and its nested code
/// objects refer to, as a dict with None values in first-use order.
#[pyfunction]
#[pyo3(name = "_extract_code_globals")]
pub fn extract_code_globals<'py>(co: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    if ffi::as_code(co).is_none() {
        return Err(PyTypeError::new_err("expected a code object"));
    }
    let names = PyDict::new(co.py());
    for name in code::global_names(co)?.iter() {
        names.set_item(name, co.py().None())?;
    }
    Ok(names)
}

/// `_find_imported_submodules(code, top_level_dependencies)`: the submodules
/// of the packages among the dependencies that `code` reaches by attribute
/// names only (`import os.path` then `os.path.join`), dependency after
/// dependency, each one's in `sys.modules` order (as upstream lists them).
#[pyfunction]
#[pyo3(name = "_find_imported_submodules")]
pub fn find_imported_submodules<'py>(
    code: &Bound<'py, PyAny>,
    top_level_dependencies: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let py = code.py();
    let found = PyList::empty(py);
    for dependency in top_level_dependencies.try_iter()? {
        let referenced = PyDict::new(py);
        referenced.set_item(0, dependency?)?;
        let submodules = function::imported_submodules(code, Some(&referenced), None)?;
        if submodules.is_none() {
            continue;
        }
        // Ours come sorted by name.
        let mut unlisted: Vec<Bound<'py, PyAny>> =
            submodules.try_iter()?.collect::<PyResult<_>>()?;
        for (_, module) in lookup::sys_modules(py)?.copy()?.iter() {
            if let Some(at) = unlisted.iter().position(|m| m.is(&module)) {
                found.append(unlisted.swap_remove(at))?;
            }
        }
    }
    Ok(found)
}

/// `_extract_class_dict(cls)`: the class's own attributes (those not
/// identical to a base's), sorted by name as upstream's.
#[pyfunction]
#[pyo3(name = "_extract_class_dict")]
pub fn extract_class_dict<'py>(cls: &Bound<'py, PyType>) -> PyResult<Bound<'py, PyDict>> {
    let py = cls.py();
    let attributes = class::own_attributes(cls)?;
    let names = attributes.keys();
    names.sort()?;
    let sorted = PyDict::new(py);
    for name in names.iter() {
        if let Some(value) = attributes.get_item(&name)? {
            sorted.set_item(name, value)?;
        }
    }
    Ok(sorted)
}

/// `_get_bases(typ)`: `__orig_bases__` when the class itself defines it
/// (PEP 560), else `__bases__`.
#[pyfunction]
#[pyo3(name = "_get_bases")]
pub fn get_bases<'py>(typ: &Bound<'py, PyType>) -> PyResult<Bound<'py, PyAny>> {
    class::bases_of(typ)
}

/// `_get_cell_contents(cell)`: the cell's value, or upstream's
/// `_empty_cell_value` for an empty cell.
#[pyfunction]
#[pyo3(name = "_get_cell_contents")]
pub fn get_cell_contents<'py>(cell: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    match ffi::cell_contents(cell)? {
        Some(value) => Ok(value),
        None => Ok(statics::empty_cell_value(cell.py())?.clone()),
    }
}

/// Adds the functions above to `module`.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(make_function, module)?)?;
    module.add_function(wrap_pyfunction!(function_setstate, module)?)?;
    module.add_function(wrap_pyfunction!(make_empty_cell, module)?)?;
    module.add_function(wrap_pyfunction!(make_cell, module)?)?;
    module.add_function(wrap_pyfunction!(dynamic_subimport, module)?)?;
    module.add_function(wrap_pyfunction!(make_skeleton_class, module)?)?;
    module.add_function(wrap_pyfunction!(lookup_class_or_track, module)?)?;
    module.add_function(wrap_pyfunction!(make_skeleton_enum, module)?)?;
    module.add_function(wrap_pyfunction!(class_setstate, module)?)?;
    module.add_function(wrap_pyfunction!(make_typevar, module)?)?;
    module.add_function(wrap_pyfunction!(make_dict_keys, module)?)?;
    module.add_function(wrap_pyfunction!(make_dict_values, module)?)?;
    module.add_function(wrap_pyfunction!(make_dict_items, module)?)?;
    module.add_function(wrap_pyfunction!(file_reconstructor, module)?)?;
    module.add_function(wrap_pyfunction!(get_dataclass_field_type_sentinel, module)?)?;
    module.add_function(wrap_pyfunction!(whichmodule, module)?)?;
    module.add_function(wrap_pyfunction!(lookup_module_and_qualname, module)?)?;
    module.add_function(wrap_pyfunction!(is_registered_pickle_by_value, module)?)?;
    module.add_function(wrap_pyfunction!(should_pickle_by_reference, module)?)?;
    module.add_function(wrap_pyfunction!(extract_code_globals, module)?)?;
    module.add_function(wrap_pyfunction!(find_imported_submodules, module)?)?;
    module.add_function(wrap_pyfunction!(extract_class_dict, module)?)?;
    module.add_function(wrap_pyfunction!(get_bases, module)?)?;
    module.add_function(wrap_pyfunction!(get_cell_contents, module)?)?;
    Ok(())
}
