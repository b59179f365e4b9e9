//! The load side: native reconstructors that pickles made here call. Each
//! checks its arguments, since a pickle may come from anywhere: a wrong type,
//! arity or value raises TypeError or ValueError, never crashes.

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyInt, PyModule, PyString, PyTuple, PyType};

use ahash::AHashMap;

use crate::ffi;
use crate::lookup;
use crate::registry;
use crate::statics;

/// The reconstructors, as the module exposes them, for the reducers to name.
pub struct Reconstructors {
    pub make_function: Py<PyAny>,
    pub function_setstate: Py<PyAny>,
    pub make_code: Py<PyAny>,
    pub make_cell: Py<PyAny>,
    pub cell_set: Py<PyAny>,
    pub make_method: Py<PyAny>,
    pub subimport: Py<PyAny>,
    pub make_module: Py<PyAny>,
    pub module_setstate: Py<PyAny>,
    pub builtin_type: Py<PyAny>,
    pub make_type_parameter: Py<PyAny>,
    pub make_class: Py<PyAny>,
    pub make_enum: Py<PyAny>,
    pub class_setstate: Py<PyAny>,
    pub class_dict_item: Py<PyAny>,
    pub make_dict_view: Py<PyAny>,
    pub dataclass_field_type: Py<PyAny>,
    pub make_exception: Py<PyAny>,
    pub make_text_file: Py<PyAny>,
    pub make_lru_cache: Py<PyAny>,
    pub make_singledispatch: Py<PyAny>,
    pub make_singledispatchmethod: Py<PyAny>,
    pub make_context_var: Py<PyAny>,
    pub make_traceback: Py<PyAny>,
    /// [`reconstructor`], the one global a pickle names to reach the others.
    pub reconstructor: Py<PyAny>,
    /// Each reconstructor's address -> its name.
    names_by_address: AHashMap<usize, Py<PyString>>,
}

/// The reconstructors [`reconstructor`] hands out, by name.
pub const NAMES: [&str; 24] = [
    "make_function",
    "function_setstate",
    "make_code",
    "make_cell",
    "cell_set",
    "make_method",
    "subimport",
    "make_module",
    "module_setstate",
    "builtin_type",
    "make_type_parameter",
    "make_class",
    "make_enum",
    "class_setstate",
    "class_dict_item",
    "make_dict_view",
    "dataclass_field_type",
    "make_exception",
    "make_text_file",
    "make_lru_cache",
    "make_singledispatch",
    "make_singledispatchmethod",
    "make_context_var",
    "make_traceback",
];

static RECONSTRUCTORS: PyOnceLock<Reconstructors> = PyOnceLock::new();

impl Reconstructors {
    /// Registers the reconstructors on the module and remembers them.
    pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_function(wrap_pyfunction!(make_function, m)?)?;
        m.add_function(wrap_pyfunction!(function_setstate, m)?)?;
        m.add_function(wrap_pyfunction!(crate::code::make_code, m)?)?;
        m.add_function(wrap_pyfunction!(make_cell, m)?)?;
        m.add_function(wrap_pyfunction!(cell_set, m)?)?;
        m.add_function(wrap_pyfunction!(make_method, m)?)?;
        m.add_function(wrap_pyfunction!(subimport, m)?)?;
        m.add_function(wrap_pyfunction!(make_module, m)?)?;
        m.add_function(wrap_pyfunction!(module_setstate, m)?)?;
        m.add_function(wrap_pyfunction!(builtin_type, m)?)?;
        m.add_function(wrap_pyfunction!(make_type_parameter, m)?)?;
        m.add_function(wrap_pyfunction!(crate::class::make_class, m)?)?;
        m.add_function(wrap_pyfunction!(crate::class::make_enum, m)?)?;
        m.add_function(wrap_pyfunction!(crate::class::class_setstate, m)?)?;
        m.add_function(wrap_pyfunction!(class_dict_item, m)?)?;
        m.add_function(wrap_pyfunction!(make_dict_view, m)?)?;
        m.add_function(wrap_pyfunction!(dataclass_field_type, m)?)?;
        m.add_function(wrap_pyfunction!(make_exception, m)?)?;
        m.add_function(wrap_pyfunction!(make_text_file, m)?)?;
        m.add_function(wrap_pyfunction!(crate::stdlib::make_lru_cache, m)?)?;
        m.add_function(wrap_pyfunction!(crate::stdlib::make_singledispatch, m)?)?;
        m.add_function(wrap_pyfunction!(
            crate::stdlib::make_singledispatchmethod,
            m
        )?)?;
        m.add_function(wrap_pyfunction!(crate::stdlib::make_context_var, m)?)?;
        m.add_function(wrap_pyfunction!(make_traceback, m)?)?;
        m.add_function(wrap_pyfunction!(reconstructor, m)?)?;
        m.add_class::<crate::code::SortedFrozenSet>()?;
        let get = |name: &str| m.getattr(name).map(Bound::unbind);
        let mut names_by_address = AHashMap::new();
        for name in NAMES {
            let function = m.getattr(name)?;
            let name = crate::names::canonical(PyString::new(m.py(), name).into_any())?;
            names_by_address.insert(
                function.as_ptr() as usize,
                name.cast_into::<PyString>()?.unbind(),
            );
        }
        let found = Reconstructors {
            make_function: get("make_function")?,
            function_setstate: get("function_setstate")?,
            make_code: get("make_code")?,
            make_cell: get("make_cell")?,
            cell_set: get("cell_set")?,
            make_method: get("make_method")?,
            subimport: get("subimport")?,
            make_module: get("make_module")?,
            module_setstate: get("module_setstate")?,
            builtin_type: get("builtin_type")?,
            make_type_parameter: get("make_type_parameter")?,
            make_class: get("make_class")?,
            make_enum: get("make_enum")?,
            class_setstate: get("class_setstate")?,
            class_dict_item: get("class_dict_item")?,
            make_dict_view: get("make_dict_view")?,
            dataclass_field_type: get("dataclass_field_type")?,
            make_exception: get("make_exception")?,
            make_text_file: get("make_text_file")?,
            make_lru_cache: get("make_lru_cache")?,
            make_singledispatch: get("make_singledispatch")?,
            make_singledispatchmethod: get("make_singledispatchmethod")?,
            make_context_var: get("make_context_var")?,
            make_traceback: get("make_traceback")?,
            reconstructor: get("reconstructor")?,
            names_by_address,
        };
        // A second import of the module (subinterpreter, reload) keeps the first set.
        let _ = RECONSTRUCTORS.set(m.py(), found);
        Ok(())
    }

    /// The reconstructor of that name.
    fn by_name(&self, name: &str) -> Option<&Py<PyAny>> {
        Some(match name {
            "make_function" => &self.make_function,
            "function_setstate" => &self.function_setstate,
            "make_code" => &self.make_code,
            "make_cell" => &self.make_cell,
            "cell_set" => &self.cell_set,
            "make_method" => &self.make_method,
            "subimport" => &self.subimport,
            "make_module" => &self.make_module,
            "module_setstate" => &self.module_setstate,
            "builtin_type" => &self.builtin_type,
            "make_type_parameter" => &self.make_type_parameter,
            "make_class" => &self.make_class,
            "make_enum" => &self.make_enum,
            "class_setstate" => &self.class_setstate,
            "class_dict_item" => &self.class_dict_item,
            "make_dict_view" => &self.make_dict_view,
            "dataclass_field_type" => &self.dataclass_field_type,
            "make_exception" => &self.make_exception,
            "make_text_file" => &self.make_text_file,
            "make_lru_cache" => &self.make_lru_cache,
            "make_singledispatch" => &self.make_singledispatch,
            "make_singledispatchmethod" => &self.make_singledispatchmethod,
            "make_context_var" => &self.make_context_var,
            "make_traceback" => &self.make_traceback,
            _ => return None,
        })
    }

    /// The name of `obj` when it is one of the reconstructors.
    pub fn name_of<'py>(&self, obj: &Bound<'py, PyAny>) -> Option<&Py<PyString>> {
        self.names_by_address.get(&(obj.as_ptr() as usize))
    }

    pub fn get(py: Python<'_>) -> &Reconstructors {
        RECONSTRUCTORS
            .get(py)
            .expect("reconstructors are registered when the module is imported")
    }
}

/// `reconstructor(name)`: the reconstructor of that name. Pickles name this
/// one function as a global and reach the others through it: each global a
/// pickle names costs the pickler an import, the others only a call.
#[pyfunction]
pub fn reconstructor<'py>(name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    let py = name.py();
    let wanted = name.to_str()?;
    match Reconstructors::get(py).by_name(wanted) {
        Some(found) => Ok(found.bind(py).clone()),
        None => Err(statics::UnpicklingError::new_err(format!(
            "cloudpickle_rs has no reconstructor named {wanted:?}"
        ))),
    }
}

/// Checks that `closure` fits the free variables of `code`: CPython trusts
/// a function's closure to have exactly one cell per free variable.
fn check_closure(code: &Bound<'_, PyAny>, closure: Option<&Bound<'_, PyTuple>>) -> PyResult<()> {
    let freevars = code.getattr(intern!(code.py(), "co_freevars"))?.len()?;
    let given = closure.map_or(0, |c| c.len());
    if given != freevars {
        return Err(PyValueError::new_err(format!(
            "code object needs a closure of {freevars} cells, got {given}"
        )));
    }
    if let Some(cell) = closure
        .into_iter()
        .flat_map(|c| c.iter())
        .find(|c| !ffi::is_cell(c))
    {
        return Err(PyTypeError::new_err(format!(
            "closure items must be cells, not {}",
            cell.get_type().name()?
        )));
    }
    Ok(())
}

/// Creates a function from its code, globals, closure cells, state (or the
/// state arrives through [`function_setstate`]) and names (None: the code's
/// own name and qualified name).
#[pyfunction]
#[pyo3(signature = (code, globals, closure = None, state = None, name = None, qualname = None))]
pub fn make_function<'py>(
    code: &Bound<'py, PyAny>,
    globals: &Bound<'py, PyDict>,
    closure: Option<&Bound<'py, PyTuple>>,
    state: Option<&Bound<'py, PyTuple>>,
    name: Option<&Bound<'py, PyString>>,
    qualname: Option<&Bound<'py, PyString>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = code.py();
    if !ffi::is_code(code) {
        return Err(PyTypeError::new_err(format!(
            "expected a code object, got {}",
            code.get_type().name()?
        )));
    }
    check_closure(code, closure)?;
    // Without `__builtins__`, 3.9 would give the function a bare builtins namespace.
    if !globals.contains(intern!(py, "__builtins__"))? {
        globals.set_item(intern!(py, "__builtins__"), statics::builtins_dict(py)?)?;
    }
    let func = ffi::new_function(code, globals, qualname.map(|q| q.as_any()))?;
    if let Some(name) = name {
        func.setattr(intern!(py, "__name__"), name)?;
    }
    if let Some(closure) = closure {
        ffi::set_function_closure(&func, closure)?;
    }
    if let Some(state) = state {
        function_setstate(&func, state)?;
    }
    Ok(func)
}

/// The layout of a by-value function's state: the tuple `make_function`
/// takes as its `state` argument, or `function_setstate` once the function is
/// memoized. Trailing None items are left out; `MODULE` and `DOC` come
/// together (only when they differ from what making the function gives it).
pub mod function_state {
    /// The globals the code references, merged into the shared globals dict.
    pub const GLOBALS: usize = 0;
    pub const DEFAULTS: usize = 1;
    pub const KWDEFAULTS: usize = 2;
    /// `__annotations__` as stored: on 3.14, only once computed or assigned.
    pub const ANNOTATIONS: usize = 3;
    /// `__annotate__` (3.14, PEP 649), still lazy or beside `ANNOTATIONS`.
    pub const ANNOTATE: usize = 4;
    pub const DICT: usize = 5;
    /// Submodules the body uses: loading the state imports them.
    pub const SUBMODULES: usize = 6;
    /// PEP 695 `__type_params__` (3.12+).
    pub const TYPE_PARAMS: usize = 7;
    pub const MODULE: usize = 8;
    pub const DOC: usize = 9;
    pub const LEN: usize = 10;
    /// The names of the fields, by position (exported as `_native.FUNCTION_STATE`).
    pub const FIELDS: [&str; LEN] = [
        "globals",
        "defaults",
        "kwdefaults",
        "annotations",
        "annotate",
        "dict",
        "submodules",
        "type_params",
        "module",
        "doc",
    ];
}

/// Restores a function's state (see [`function_state`]).
#[pyfunction]
pub fn function_setstate(func: &Bound<'_, PyAny>, state: &Bound<'_, PyTuple>) -> PyResult<()> {
    use function_state as at;
    let py = func.py();
    if !ffi::is_function(func) {
        return Err(PyTypeError::new_err(format!(
            "expected a function, got {}",
            func.get_type().name()?
        )));
    }
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
    func: &Bound<'_, PyAny>,
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

/// `make_cell()` is an empty cell; `make_cell(value)` a cell holding `value`.
#[pyfunction]
#[pyo3(signature = (*contents))]
pub fn make_cell<'py>(
    py: Python<'py>,
    contents: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    match contents.len() {
        0 => ffi::new_cell(py, None),
        1 => ffi::new_cell(py, Some(&contents.get_item(0)?)),
        n => Err(PyTypeError::new_err(format!(
            "make_cell takes at most 1 argument ({n} given)"
        ))),
    }
}

/// Fills a cell made by `make_cell()`.
#[pyfunction]
pub fn cell_set(cell: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    ffi::set_cell(cell, value)
}

/// A bound method, as `types.MethodType(func, obj)`.
#[pyfunction]
pub fn make_method<'py>(
    func: &Bound<'py, PyAny>,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    statics::method_type(func.py())?.call1((func, obj))
}

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

/// A class of the `types` module by name (`FunctionType`, `CodeType`, ...).
#[pyfunction]
pub fn builtin_type<'py>(name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    let py = name.py();
    if name.to_str()? == "ClassType" {
        return Ok(py.get_type::<PyType>().into_any());
    }
    match lookup::getattr_opt(&py.import("types")?.into_any(), name)? {
        Some(cls) if cls.is_instance_of::<PyType>() => Ok(cls),
        _ => Err(PyValueError::new_err(format!(
            "types has no class named {name}"
        ))),
    }
}

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
    registry::lookup_or_track(param, tracker_id.to_str()?)
}

/// `vars(owner)[name]`: a descriptor as stored on its class.
#[pyfunction]
pub fn class_dict_item<'py>(
    owner: &Bound<'py, PyType>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    let found = owner
        .getattr(intern!(owner.py(), "__dict__"))?
        .cast_into::<pyo3::types::PyMapping>()?
        .get_item(name);
    found.map_err(|_| {
        PyValueError::new_err(format!(
            "{} has no attribute {name} of its own",
            owner.name().map(|n| n.to_string()).unwrap_or_default()
        ))
    })
}

/// A dict view over `contents` (a list of keys or values, or a dict of
/// items), of a plain dict or, when `ordered`, of an OrderedDict.
#[pyfunction]
pub fn make_dict_view<'py>(
    kind: &str,
    contents: &Bound<'py, PyAny>,
    ordered: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let py = contents.py();
    let mapping = if ordered {
        statics::ordered_dict(py)?.call0()?
    } else {
        PyDict::new(py).into_any()
    };
    match kind {
        "keys" => {
            for key in contents.cast::<pyo3::types::PyList>()?.iter() {
                mapping.set_item(key, py.None())?;
            }
        }
        "values" => {
            for (i, value) in contents.cast::<pyo3::types::PyList>()?.iter().enumerate() {
                mapping.set_item(i, value)?;
            }
        }
        "items" => {
            mapping.call_method1(intern!(py, "update"), (contents.cast::<PyDict>()?,))?;
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown dict view kind {other:?}"
            )))
        }
    }
    mapping.call_method0(kind)
}

/// The receiver's own `dataclasses` field-type sentinel of that name.
#[pyfunction]
pub fn dataclass_field_type<'py>(name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    let py = name.py();
    let dataclasses = py.import("dataclasses")?;
    for attr in ["_FIELD", "_FIELD_CLASSVAR", "_FIELD_INITVAR"] {
        let sentinel = dataclasses.getattr(attr)?;
        if sentinel.getattr(intern!(py, "name"))?.eq(name)? {
            return Ok(sentinel);
        }
    }
    Err(PyValueError::new_err(format!(
        "no dataclass field type named {name}"
    )))
}

/// An exception of class `cls` with these `args`, without running `__init__`.
#[pyfunction]
pub fn make_exception<'py>(
    cls: &Bound<'py, PyType>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    if !cls.is_subclass(&py.get_type::<pyo3::exceptions::PyBaseException>())? {
        return Err(PyTypeError::new_err(format!(
            "{} is not an exception class",
            cls.name()?
        )));
    }
    let new = py
        .get_type::<pyo3::exceptions::PyBaseException>()
        .getattr(intern!(py, "__new__"))?;
    let mut call_args = vec![cls.clone().into_any()];
    call_args.extend(args.iter());
    let exc = new.call1(PyTuple::new(py, call_args)?)?;
    exc.setattr(intern!(py, "args"), args)?;
    Ok(exc)
}

/// `make_traceback(((filename, name, lineno), ...))`: a traceback whose
/// frames (from the outermost) run no code of the sender: each is the frame
/// of a `raise` compiled under that file name, function name and line.
#[pyfunction]
pub fn make_traceback<'py>(frames: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
    let py = frames.py();
    let bad = || PyTypeError::new_err("a traceback frame must be (filename, name, lineno >= 0)");
    let traceback_type = py.import("types")?.getattr("TracebackType")?;
    let raising = raising_code(py)?;
    let mut tb = py.None().into_bound(py);
    for frame in frames.iter().collect::<Vec<_>>().into_iter().rev() {
        let frame = frame.cast_into::<PyTuple>().map_err(|_| bad())?;
        if frame.len() != 3 {
            return Err(bad());
        }
        // Exact types: reading a subclass (an `__index__`) could run code.
        let filename = frame
            .get_item(0)?
            .cast_into_exact::<PyString>()
            .map_err(|_| bad())?;
        let name = frame
            .get_item(1)?
            .cast_into_exact::<PyString>()
            .map_err(|_| bad())?;
        let lineno: i32 = frame
            .get_item(2)?
            .cast_into_exact::<PyInt>()
            .map_err(|_| bad())?
            .extract()
            .map_err(|_| bad())?;
        if lineno < 0 {
            return Err(bad());
        }
        let code = raising_frame_code(&raising, &filename, &name, lineno)?;
        let frame = raised_frame(py, &code)?;
        // tb_lasti -1: no instruction, so no column markers under the line.
        tb = traceback_type.call1((tb, frame, -1, lineno))?;
    }
    Ok(tb)
}

/// `raise __cprs_raised__`, compiled once.
fn raising_code(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static CODE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    CODE.get_or_try_init(py, || {
        py.import("builtins")?
            .getattr("compile")?
            .call1(("raise __cprs_raised__", "<traceback>", "exec"))
            .map(Bound::unbind)
    })
    .map(|code| code.bind(py).clone())
}

fn raising_frame_code<'py>(
    raising: &Bound<'py, PyAny>,
    filename: &Bound<'py, PyString>,
    name: &Bound<'py, PyString>,
    lineno: i32,
) -> PyResult<Bound<'py, PyAny>> {
    let py = raising.py();
    let changes = PyDict::new(py);
    changes.set_item("co_filename", filename)?;
    changes.set_item("co_name", name)?;
    if cfg!(Py_3_11) {
        changes.set_item("co_qualname", name)?;
    }
    changes.set_item("co_firstlineno", lineno.max(1))?;
    raising.call_method("replace", (), Some(&changes))
}

/// The frame in which `code` raised, from the exception's traceback.
fn raised_frame<'py>(py: Python<'py>, code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let marker = PyRuntimeError::new_err("cloudpickle_rs traceback frame");
    let globals = PyDict::new(py);
    globals.set_item("__cprs_raised__", marker.value(py))?;
    globals.set_item("__name__", "__cprs_traceback__")?;
    let raised = match py
        .import("builtins")?
        .getattr("exec")?
        .call1((code, &globals))
    {
        Ok(_) => return Err(PyRuntimeError::new_err("the traceback frame did not raise")),
        Err(raised) => raised,
    };
    let mut tb = raised
        .traceback(py)
        .ok_or_else(|| PyRuntimeError::new_err("the traceback frame left no traceback"))?
        .into_any();
    loop {
        let next = tb.getattr(intern!(py, "tb_next"))?;
        if next.is_none() {
            return tb.getattr(intern!(py, "tb_frame"));
        }
        tb = next;
    }
}

/// A pickled text file: the `io.StringIO` holding its content, name and position.
#[pyfunction]
pub fn make_text_file<'py>(contents: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let string_io = contents.py().import("io")?.getattr("StringIO")?;
    if !contents.get_type().is(&string_io) {
        return Err(PyTypeError::new_err("expected an io.StringIO"));
    }
    Ok(contents.clone())
}
