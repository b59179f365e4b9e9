//! Functions by value: code, the globals they reference, closure cells,
//! attributes, and the submodules their body reaches through a package.
//!
//! Wire layout: `make_function(*function_args, *function_state)`, or, when
//! the state can refer back to the function, `make_function(*function_args)`
//! then `function_setstate(f, function_state)` once `f` is memoized.
//! Trailing None items of the state (of the arguments, without a state) are
//! left out.

use parking_lot::Mutex;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyBytes, PyDict, PyFloat, PyFunction, PyInt, PyModule, PyString, PyTuple,
};

use crate::ffi;
use crate::format;
use crate::kinds::{code, stdlib};
use crate::layout;
use crate::name;
use crate::reconstructors::{self, Reconstructor};
use crate::support::reduce::reduce_with_setter;
use crate::support::{dump, lookup, names, statics};

layout! {
    /// `make_function`'s first arguments; the fields of its
    /// [`function_state`](super::function_state) follow them when they
    /// cannot lead back to the function (else `function_setstate` gets them).
    pub mod function_args {
        CODE = "code",
        /// The shared globals dict (see [`shared_base_globals`](super::shared_base_globals)).
        GLOBALS = "globals",
        /// The function's own cells (cells pickle as empty cells filled
        /// afterwards, so a cell shared by two closures stays shared).
        CLOSURE = "closure",
        /// None: the code's `co_name`.
        NAME = "name",
        /// None: the code's `co_qualname` (its `co_name` before 3.11).
        QUALNAME = "qualname",
    }
}

layout! {
    /// A by-value function's state: what `make_function` takes as `state`,
    /// or `function_setstate` once the function is memoized. `MODULE` and
    /// `DOC` come together, only when they differ from what making the
    /// function gives it.
    pub mod function_state {
        /// The globals the code references, merged into the shared globals dict.
        GLOBALS = "globals",
        DEFAULTS = "defaults",
        KWDEFAULTS = "kwdefaults",
        /// `__annotations__` as stored: on 3.14, only once computed or assigned.
        ANNOTATIONS = "annotations",
        /// `__annotate__` (3.14, PEP 649), still lazy or beside `ANNOTATIONS`.
        ANNOTATE = "annotate",
        DICT = "dict",
        /// Submodules the body uses: loading the state imports them.
        SUBMODULES = "submodules",
        /// PEP 695 `__type_params__` (3.12+).
        TYPE_PARAMS = "type_params",
        MODULE = "module",
        DOC = "doc",
    }
}

/// Adds the reconstructors and layouts of functions to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    reconstructors::add(
        m,
        Reconstructor::MakeFunction,
        wrap_pyfunction!(make_function, m)?,
    )?;
    reconstructors::add(
        m,
        Reconstructor::FunctionSetstate,
        wrap_pyfunction!(function_setstate, m)?,
    )?;
    format::export(m, "function_args", &function_args::FIELD_NAMES)?;
    format::export(m, "function_state", &function_state::FIELD_NAMES)
}

// ---------------------------------------------------------------------------
// Pickling.

/// A function importable by name goes by reference (`NotImplemented` lets the C
/// pickler save it as a global); any other is rebuilt from its parts.
pub fn reduce_function<'py>(
    pickler: &Bound<'py, PyAny>,
    func: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let func = func.cast::<PyFunction>()?;
    let parts = ffi::function_parts(func);
    if !surely_dynamic(&parts) && lookup::function_or_class_by_reference(func)? {
        return Ok(func.py().NotImplemented().into_bound(func.py()));
    }
    if let Some(reduced) = stdlib::reduce_singledispatch(func, &parts.code)? {
        return Ok(reduced);
    }
    reduce_dynamic_function(pickler, func, parts)
}

/// A function of `__main__`, or a local one: the by-reference lookup would
/// say "by value" for it (it reads the same `__module__` and `__qualname__`).
fn surely_dynamic(parts: &ffi::FunctionParts<'_>) -> bool {
    let is = |value: &Bound<'_, PyAny>, test: fn(&str) -> bool| {
        value
            .cast::<PyString>()
            .is_ok_and(|s| s.to_str().is_ok_and(test))
    };
    is(&parts.module, |m| m == "__main__") || is(&parts.qualname, |q| q.contains("<locals>"))
}

/// `(make_function, function_args)` when the state holds only plain
/// values, else the state goes apart: `(make_function, function_args,
/// state, None, None, function_setstate)`. Arguments and state are cut
/// after their last item that is not already what making the function
/// gives it.
fn reduce_dynamic_function<'py>(
    pickler: &Bound<'py, PyAny>,
    func: &Bound<'py, PyFunction>,
    parts: ffi::FunctionParts<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    use function_args as arg;
    use function_state as at;
    let py = func.py();
    let code = code::canonical(&parts.code)?;
    let globals = ffi::function_globals(func);
    let closure = closure_to_pickle(&code, ffi::function_closure(func))?;
    let made = code::made_attributes(&code)?;
    let mut args: [Option<Bound<'py, PyAny>>; arg::LEN] = Default::default();
    args[arg::CODE] = Some(code.clone());
    let (base_globals, made_module) = shared_base_globals(pickler, &globals)?;
    args[arg::GLOBALS] = Some(base_globals.into_any());
    args[arg::CLOSURE] = closure.clone().map(Bound::into_any);
    args[arg::NAME] = differing(parts.name, &made.get_item(0)?)?;
    args[arg::QUALNAME] = differing(parts.qualname, &made.get_item(1)?)?;
    let referenced = last_referenced_globals(&code, &globals)?;
    let mut closure_packages = Vec::new();
    add_closure_packages(&mut closure_packages, closure.as_ref())?;
    let submodules = if closure_packages.is_empty() {
        submodules_of(&code, &referenced.facts.packages)?
    } else {
        closure_packages.extend(referenced.facts.packages.iter().cloned());
        submodules_of(&code, &closure_packages)?
    };
    let mut state: [Option<Bound<'py, PyAny>>; at::LEN] = Default::default();
    if parts.has_annotations {
        // Already a dict (3.14: computed or assigned): reading it runs nothing.
        state[at::ANNOTATIONS] = canonical_keys(func.getattr(intern!(py, "__annotations__"))?)?;
    }
    state[at::ANNOTATE] = parts.annotate;
    state[at::GLOBALS] = referenced.dict.map(Bound::into_any);
    state[at::DEFAULTS] = present(parts.defaults);
    state[at::KWDEFAULTS] = canonical_keys(parts.kwdefaults)?;
    state[at::DICT] = parts.dict.map(canonical_keys).transpose()?.flatten();
    state[at::SUBMODULES] = present(submodules);
    state[at::TYPE_PARAMS] = present(type_params(func)?);
    // `__module__` and `__doc__` go only when not what making the function gives.
    if !same(&parts.module, &made_module)? || !same(&parts.doc, &made.get_item(2)?)? {
        state[at::MODULE] = Some(names::canonical(parts.module)?);
        state[at::DOC] = Some(parts.doc);
    }
    let make = Reconstructor::MakeFunction;
    let state_len = trimmed_len(&state);
    // State that cannot lead back to the function can be made before it:
    // it then follows make_function's first arguments, saving the setstate call.
    if state_len == 0 {
        return reconstructors::reduce_to(py, make, trimmed(py, args));
    }
    let mut budget = PLAIN_BUDGET;
    let mut plain = true;
    for (i, field) in state[..state_len].iter().enumerate() {
        let Some(field) = field else { continue };
        if i == at::GLOBALS && referenced.facts.plain {
            continue;
        }
        if !is_plain(field, &mut budget)? {
            plain = false;
            break;
        }
    }
    if plain {
        let inline = args
            .into_iter()
            .chain(state.into_iter().take(state_len))
            .map(|item| or_none(py, item));
        return reconstructors::reduce_to(py, make, inline.collect::<Vec<_>>());
    }
    let setstate = reconstructors::get(py, Reconstructor::FunctionSetstate)?.clone();
    let state = trimmed_tuple(py, state)?;
    let (rebuild, args) = reconstructors::call(py, make, trimmed(py, args))?;
    reduce_with_setter(rebuild, args, state.into_any(), setstate)
}

/// The closure as it travels. An annotation scope of a class body (3.12+:
/// `__annotate__`, a type parameter's bound) reads class-level names through
/// its `__classdict__` cell, which holds the class's whole namespace: that
/// cell travels as a new one holding only the names the scope reads (the
/// namespace itself would drag every attribute along, `_abc_impl` and all).
fn closure_to_pickle<'py>(
    code: &Bound<'py, PyAny>,
    closure: Option<Bound<'py, PyTuple>>,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Some(closure) = closure else {
        return Ok(None);
    };
    if !cfg!(Py_3_12) {
        return Ok(Some(closure));
    }
    let Some((index, names)) = code::class_namespace_reads(code)? else {
        return Ok(Some(closure));
    };
    let Some(namespace) = closure
        .get_item(index)
        .ok()
        .map(|cell| ffi::cell_contents(&cell))
        .transpose()?
        .flatten()
    else {
        return Ok(Some(closure));
    };
    let py = code.py();
    let read = PyDict::new(py);
    for name in names.iter() {
        if let Some(value) = lookup::mapping_get(&namespace, &name)? {
            read.set_item(name, value)?;
        }
    }
    let mut cells: Vec<Bound<'py, PyAny>> = closure.iter().collect();
    cells[index] = ffi::new_cell(py, Some(read.as_any()))?;
    Ok(Some(PyTuple::new(py, cells)?))
}

/// How many values [`is_plain`] looks at before it gives up.
const PLAIN_BUDGET: usize = 64;

/// None, bools, ints, floats, strs, bytes, modules pickled by reference, and
/// tuples and str-keyed dicts of them: values whose pickling cannot reach
/// back to the function.
fn is_plain(value: &Bound<'_, PyAny>, budget: &mut usize) -> PyResult<bool> {
    if *budget == 0 {
        return Ok(false);
    }
    *budget -= 1;
    if value.is_none()
        || value.is_exact_instance_of::<PyBool>()
        || value.is_exact_instance_of::<PyInt>()
        || value.is_exact_instance_of::<PyFloat>()
        || value.is_exact_instance_of::<PyString>()
        || value.is_exact_instance_of::<PyBytes>()
    {
        return Ok(true);
    }
    if let Ok(tuple) = value.cast_exact::<PyTuple>() {
        for item in tuple.iter() {
            if !is_plain(&item, budget)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    if let Ok(dict) = value.cast_exact::<PyDict>() {
        for (key, item) in dict.iter() {
            if !key.is_exact_instance_of::<PyString>() || !is_plain(&item, budget)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    if value.is_exact_instance_of::<PyModule>() {
        return lookup::module_by_reference(value);
    }
    Ok(false)
}

/// The tuple of `items` without its trailing `None`s (which stand for None).
fn trimmed_tuple<'py, const N: usize>(
    py: Python<'py>,
    items: [Option<Bound<'py, PyAny>>; N],
) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, trimmed(py, items))
}

/// `items` without their trailing Nones, the other Nones as None objects.
fn trimmed<'py, const N: usize>(
    py: Python<'py>,
    items: [Option<Bound<'py, PyAny>>; N],
) -> impl ExactSizeIterator<Item = Bound<'py, PyAny>> {
    let len = trimmed_len(&items);
    items
        .into_iter()
        .take(len)
        .map(move |item| or_none(py, item))
}

/// How many of `items` are left once the trailing Nones are cut.
fn trimmed_len(items: &[Option<Bound<'_, PyAny>>]) -> usize {
    items
        .iter()
        .rposition(Option::is_some)
        .map_or(0, |last| last + 1)
}

/// `a == b`, without a comparison call when they are one object (the usual
/// case: names and docs shared with the code object).
fn same(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(a.is(b) || a.eq(b)?)
}

/// The canonical copy of the name `value`, unless it equals what the
/// function is made with.
fn differing<'py>(
    value: Bound<'py, PyAny>,
    made: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if same(&value, made)? {
        return Ok(None);
    }
    names::canonical(value).map(Some)
}

/// None for Python's None.
fn present(value: Bound<'_, PyAny>) -> Option<Bound<'_, PyAny>> {
    (!value.is_none()).then_some(value)
}

fn or_none<'py>(py: Python<'py>, value: Option<Bound<'py, PyAny>>) -> Bound<'py, PyAny> {
    value.unwrap_or_else(|| py.None().into_bound(py))
}

/// A copy of a dict with canonical keys (so that memo hits in the pickle do
/// not depend on which key strings the sender happened to share with its
/// code or data), or None for an empty dict or None. Anything else passes
/// through.
fn canonical_keys(value: Bound<'_, PyAny>) -> PyResult<Option<Bound<'_, PyAny>>> {
    let py = value.py();
    if value.is_none() {
        return Ok(None);
    }
    let Ok(dict) = value.cast::<PyDict>() else {
        return Ok(Some(value));
    };
    if dict.is_empty() {
        return Ok(None);
    }
    let copy = PyDict::new(py);
    for (k, v) in dict.iter() {
        copy.set_item(names::canonical(k)?, v)?;
    }
    Ok(Some(copy.into_any()))
}

/// PEP 695 type parameters (3.12+), or None when there are none.
fn type_params<'py>(func: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = func.py();
    if cfg!(Py_3_12) {
        let params = func.getattr(intern!(py, "__type_params__"))?;
        if params.cast::<PyTuple>().is_ok_and(|t| !t.is_empty()) {
            return Ok(params);
        }
    }
    Ok(py.None().into_bound(py))
}

/// The globals dict this function will get on load, shared by every function
/// of the same `__globals__` pickled by this pickler (`pickler.globals_ref`,
/// as in cloudpickle, keyed by `id(__globals__)`).
///
/// Also the `__module__` a function made with it gets on load
/// (`globals["__name__"]`, which the base dict holds a copy of).
fn shared_base_globals<'py>(
    pickler: &Bound<'py, PyAny>,
    globals: &Bound<'py, PyDict>,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyAny>)> {
    let py = pickler.py();
    let key = (
        dump::serial(),
        pickler.as_ptr() as usize,
        globals.as_ptr() as usize,
    );
    let last = LAST_BASE
        .lock()
        .as_ref()
        .filter(|last| key.0.is_some() && last.key == key)
        .map(|last| (last.base.bind(py).clone(), last.module.bind(py).clone()));
    if let Some(found) = last {
        return Ok(found);
    }
    let base = base_globals_of(pickler, globals)?;
    let module = or_none(py, globals.get_item(intern!(py, "__name__"))?);
    let replaced = LAST_BASE.lock().replace(LastBase {
        key,
        base: base.clone().unbind(),
        module: module.clone().unbind(),
    });
    drop(replaced);
    Ok((base, module))
}

/// [`shared_base_globals`] of the last function pickled, by the dump, the
/// pickler and the globals dict: the functions of one module pickled one
/// after the other skip two lookups (`globals_ref` holds it all the same).
struct LastBase {
    key: (Option<u64>, usize, usize),
    base: Py<PyDict>,
    module: Py<PyAny>,
}

static LAST_BASE: Mutex<Option<LastBase>> = Mutex::new(None);

/// [`shared_base_globals`], looked up in (or added to) `pickler.globals_ref`.
fn base_globals_of<'py>(
    pickler: &Bound<'py, PyAny>,
    globals: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyDict>> {
    let py = pickler.py();
    let instance_dict = ffi::instance_dict(pickler)?;
    let refs = if let Some(refs) = instance_dict.get_item(intern!(py, "globals_ref"))? {
        refs.cast_into::<PyDict>()?
    } else {
        let refs = PyDict::new(py);
        instance_dict.set_item(intern!(py, "globals_ref"), &refs)?;
        refs
    };
    let key = globals.as_ptr() as usize;
    if let Some(base) = refs.get_item(key)? {
        return Ok(base.cast_into::<PyDict>()?);
    }
    let base = PyDict::new(py);
    // Module attributes kept so that relative imports in the body still
    // resolve after loading.
    for attr in [
        name!(py, "__package__")?,
        name!(py, "__name__")?,
        name!(py, "__path__")?,
        name!(py, "__file__")?,
    ] {
        if let Some(value) = globals.get_item(&attr)? {
            base.set_item(attr, names::canonical(value)?)?;
        }
    }
    refs.set_item(key, &base)?;
    Ok(base)
}

/// What the reducer asks of a function's [`referenced_globals`].
#[derive(Clone)]
struct GlobalsFacts {
    /// Whether every value is plain ([`is_plain`]).
    plain: bool,
    /// The packages among the values ([`add_package`]).
    packages: std::sync::Arc<Vec<String>>,
}

/// A function's [`referenced_globals`] (None: it references none) and
/// what is known of them.
struct Referenced<'py> {
    dict: Option<Bound<'py, PyDict>>,
    facts: GlobalsFacts,
}

/// [`Referenced`] of the last function pickled, by the addresses of its
/// code object and globals dict (the values say whether it still holds).
struct LastReferenced {
    code: usize,
    globals: usize,
    dict: Py<PyDict>,
    facts: GlobalsFacts,
}

static LAST_REFERENCED: Mutex<Option<LastReferenced>> = Mutex::new(None);

/// [`referenced_globals`], the very dict of the previous function when it
/// had the same code and globals and their values are unchanged: the
/// closures one factory made, pickled one after the other, share one dict,
/// which a pickle holds once, and what is known of it.
fn last_referenced_globals<'py>(
    code: &Bound<'py, PyAny>,
    globals: &Bound<'py, PyDict>,
) -> PyResult<Referenced<'py>> {
    let py = code.py();
    let key = (code.as_ptr() as usize, globals.as_ptr() as usize);
    let last = LAST_REFERENCED
        .lock()
        .as_ref()
        .filter(|last| (last.code, last.globals) == key)
        .map(|last| (last.dict.bind(py).clone(), last.facts.clone()));
    if let Some((kept, facts)) = last {
        if holds_current_values(&kept, code, globals)? {
            return Ok(Referenced {
                dict: Some(kept),
                facts,
            });
        }
    }
    let Some(dict) = referenced_globals(code, globals)? else {
        return Ok(Referenced {
            dict: None,
            facts: GlobalsFacts {
                plain: true,
                packages: std::sync::Arc::default(),
            },
        });
    };
    let mut packages = Vec::new();
    add_packages(&mut packages, dict.iter().map(|(_, value)| value))?;
    let facts = GlobalsFacts {
        plain: is_plain(dict.as_any(), &mut PLAIN_BUDGET.clone())?,
        packages: std::sync::Arc::new(packages),
    };
    let replaced = LAST_REFERENCED.lock().replace(LastReferenced {
        code: key.0,
        globals: key.1,
        dict: dict.clone().unbind(),
        facts: facts.clone(),
    });
    drop(replaced);
    Ok(Referenced {
        dict: Some(dict),
        facts,
    })
}

/// Drops what [`last_referenced_globals`] and [`shared_base_globals`] keep,
/// once a dump ends: sharing pays only within one pickle, and the values
/// must not outlive it.
pub fn forget_what_the_dump_kept() {
    let dropped = (LAST_REFERENCED.lock().take(), LAST_BASE.lock().take());
    drop(dropped);
}

/// Whether `kept` is what [`referenced_globals`] would give now: the same
/// names, each bound to the very same value.
fn holds_current_values(
    kept: &Bound<'_, PyDict>,
    code: &Bound<'_, PyAny>,
    globals: &Bound<'_, PyDict>,
) -> PyResult<bool> {
    let mut found = 0;
    for name in code::global_names(code)?.iter() {
        if let Some(value) = globals.get_item(&name)? {
            match kept.get_item(&name)? {
                Some(old) if old.is(&lookup::resolved(value)?) => found += 1,
                _ => return Ok(false),
            }
        }
    }
    Ok(found == kept.len())
}

/// `{name: value}` for the globals the code references that exist now, or
/// None when there are none.
fn referenced_globals<'py>(
    code: &Bound<'py, PyAny>,
    globals: &Bound<'py, PyDict>,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let py = code.py();
    let mut subset: Option<Bound<'py, PyDict>> = None;
    for name in code::global_names(code)?.iter() {
        if let Some(value) = globals.get_item(&name)? {
            subset
                .get_or_insert_with(|| PyDict::new(py))
                .set_item(name, lookup::resolved(value)?)?;
        }
    }
    Ok(subset)
}

/// Submodules the body reaches as attributes of a package it references
/// (`import os.path` then `os.path.join`): pickled by reference beside the
/// function so that loading imports them. Sorted by name for determinism.
pub fn imported_submodules<'py>(
    code: &Bound<'py, PyAny>,
    referenced: Option<&Bound<'py, PyDict>>,
    closure: Option<&Bound<'py, PyTuple>>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut packages = Vec::new();
    if let Some(referenced) = referenced {
        add_packages(&mut packages, referenced.iter().map(|(_, value)| value))?;
    }
    add_closure_packages(&mut packages, closure)?;
    submodules_of(code, &packages)
}

/// [`add_package`] for each of `values`.
fn add_packages<'py>(
    packages: &mut Vec<String>,
    values: impl IntoIterator<Item = Bound<'py, PyAny>>,
) -> PyResult<()> {
    for value in values {
        add_package(packages, &value)?;
    }
    Ok(())
}

/// [`add_package`] for what each filled cell of `closure` holds.
fn add_closure_packages(
    packages: &mut Vec<String>,
    closure: Option<&Bound<'_, PyTuple>>,
) -> PyResult<()> {
    for cell in closure.into_iter().flat_map(PyTupleMethods::iter) {
        if let Some(value) = ffi::cell_contents(&cell)? {
            add_package(packages, &value)?;
        }
    }
    Ok(())
}

/// Adds the name of `value` to `packages` when it is a package (a module
/// with a `__package__`).
fn add_package(packages: &mut Vec<String>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = value.py();
    if value.is_instance_of::<PyModule>()
        && lookup::getattr_opt(value, intern!(py, "__package__"))?
            .map(|p| p.is_truthy())
            .transpose()?
            .unwrap_or(false)
    {
        packages.push(value.getattr(intern!(py, "__name__"))?.str()?.to_string());
    }
    Ok(())
}

/// The loaded submodules of `packages` that `code` reaches by attribute
/// names, sorted by name, or None.
fn submodules_of<'py>(
    code: &Bound<'py, PyAny>,
    packages: &[String],
) -> PyResult<Bound<'py, PyAny>> {
    let py = code.py();
    if packages.is_empty() {
        return Ok(py.None().into_bound(py));
    }
    let co_names = code
        .getattr(intern!(py, "co_names"))?
        .cast_into::<PyTuple>()?;
    let co_names: Vec<String> = co_names.iter().map(|n| n.to_string()).collect();
    let modules = lookup::sys_modules(py)?.copy()?;
    let mut found: Vec<(String, Bound<'py, PyAny>)> = Vec::new();
    for (name, module) in modules.iter() {
        let Ok(name) = name.cast::<PyString>() else {
            continue;
        };
        let name = name.to_str()?;
        for package in packages {
            let Some(rest) = name
                .strip_prefix(package.as_str())
                .and_then(|r| r.strip_prefix('.'))
            else {
                continue;
            };
            if rest
                .split('.')
                .all(|token| co_names.iter().any(|n| n == token))
                && !found.iter().any(|(n, _)| n == name)
            {
                found.push((name.to_owned(), module.clone()));
            }
        }
    }
    if found.is_empty() {
        return Ok(py.None().into_bound(py));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(PyTuple::new(py, found.into_iter().map(|(_, m)| m))?.into_any())
}

// ---------------------------------------------------------------------------
// Loading.

/// Creates a function from its code, globals, closure cells, state (or the
/// state arrives through [`function_setstate`]) and names (None: the code's
/// own name and qualified name).
#[pyfunction]
#[pyo3(signature = (code, globals, closure = None, name = None, qualname = None, *state))]
pub fn make_function<'py>(
    code: &Bound<'py, PyAny>,
    globals: &Bound<'py, PyDict>,
    closure: Option<&Bound<'py, PyTuple>>,
    name: Option<&Bound<'py, PyString>>,
    qualname: Option<&Bound<'py, PyString>>,
    state: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyFunction>> {
    let py = code.py();
    let Some(code) = ffi::as_code(code) else {
        return Err(PyTypeError::new_err(format!(
            "expected a code object, got {}",
            code.get_type().name()?
        )));
    };
    // Without `__builtins__`, 3.9 would give the function a bare builtins namespace.
    if !globals.contains(intern!(py, "__builtins__"))? {
        globals.set_item(intern!(py, "__builtins__"), statics::builtins_dict(py)?)?;
    }
    let func = ffi::new_function(code, globals, qualname, closure)?;
    if let Some(name) = name {
        func.setattr(intern!(py, "__name__"), name)?;
    }
    if !state.is_empty() {
        set_state(&func, state)?;
    }
    Ok(func)
}

/// Restores a function's state (see [`function_state`]).
#[pyfunction]
pub fn function_setstate(func: &Bound<'_, PyAny>, state: &Bound<'_, PyTuple>) -> PyResult<()> {
    let Some(func) = ffi::as_function(func) else {
        return Err(PyTypeError::new_err(format!(
            "expected a function, got {}",
            func.get_type().name()?
        )));
    };
    set_state(func, state)
}

fn set_state(func: &Bound<'_, PyFunction>, state: &Bound<'_, PyTuple>) -> PyResult<()> {
    use function_state as at;
    let py = func.py();
    let len = state.len();
    if len > at::LEN || len == at::DOC {
        return Err(PyValueError::new_err(format!(
            "function state must have at most {} items, or {}; got {len}",
            at::MODULE,
            at::LEN
        )));
    }
    let none = py.None().into_bound(py);
    let item = |i: usize| -> PyResult<Bound<'_, PyAny>> {
        if i < len {
            state.get_item(i)
        } else {
            Ok(none.clone())
        }
    };
    let referenced = item(at::GLOBALS)?;
    if !referenced.is_none() {
        ffi::function_globals(func).update(referenced.cast::<PyDict>()?.as_mapping())?;
    }
    ffi::set_function_defaults(func, &item(at::DEFAULTS)?, false)?;
    ffi::set_function_defaults(func, &item(at::KWDEFAULTS)?, true)?;
    set_annotations(func, &item(at::ANNOTATIONS)?, &item(at::ANNOTATE)?)?;
    let attributes = item(at::DICT)?;
    if !attributes.is_none() {
        let attributes = attributes.cast::<PyDict>()?;
        func.getattr(intern!(py, "__dict__"))?
            .cast::<PyDict>()?
            .update(attributes.as_mapping())?;
    }
    // The submodules did their work when they were loaded: importing them.
    let type_params = item(at::TYPE_PARAMS)?;
    if !type_params.is_none() {
        func.setattr(intern!(py, "__type_params__"), type_params)?;
    }
    if len == at::LEN {
        func.setattr(intern!(py, "__module__"), item(at::MODULE)?)?;
        func.setattr(intern!(py, "__doc__"), item(at::DOC)?)?;
    }
    Ok(())
}

/// `__annotations__` and, from 3.14, `__annotate__`, as the sender stored them.
fn set_annotations(
    func: &Bound<'_, PyFunction>,
    annotations: &Bound<'_, PyAny>,
    annotate: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = func.py();
    if annotate.is_none() {
        if !annotations.is_none() {
            func.setattr(intern!(py, "__annotations__"), annotations)?;
        }
        return Ok(());
    }
    #[cfg(Py_3_14)]
    {
        let annotations = (!annotations.is_none())
            .then(|| annotations.cast::<PyDict>())
            .transpose()?;
        ffi::set_function_annotate(func, annotate, annotations)
    }
    #[cfg(not(Py_3_14))]
    Err(PyValueError::new_err(
        "this function state holds __annotate__, which functions have only from CPython 3.14",
    ))
}
