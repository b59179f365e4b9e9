//! The small kinds: cells, bound methods, classmethod/staticmethod,
//! properties, getset descriptors, mapping proxies, memoryviews, weak sets,
//! loggers, dict views, dataclasses' sentinels and open text files. Each
//! reduces to a call of its own type, of a stdlib function, or of one of the
//! reconstructors below.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyModule, PyString, PyTuple, PyType};

use crate::ffi;
use crate::reconstructors::{self, Reconstructor};
use crate::support::reduce::{
    attributes, not_implemented, reduce, reduce_to_getattr, reduce_to_own_type, reduce_with_setter,
};
use crate::support::{lookup, statics};

/// Adds the reconstructors of the small kinds to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    reconstructors::add(m, Reconstructor::MakeCell, wrap_pyfunction!(make_cell, m)?)?;
    reconstructors::add(m, Reconstructor::CellSet, wrap_pyfunction!(cell_set, m)?)?;
    reconstructors::add(
        m,
        Reconstructor::MakeMethod,
        wrap_pyfunction!(make_method, m)?,
    )?;
    reconstructors::add(
        m,
        Reconstructor::ClassDictItem,
        wrap_pyfunction!(class_dict_item, m)?,
    )?;
    reconstructors::add(
        m,
        Reconstructor::MakeDictView,
        wrap_pyfunction!(make_dict_view, m)?,
    )?;
    reconstructors::add(
        m,
        Reconstructor::DataclassFieldType,
        wrap_pyfunction!(dataclass_field_type, m)?,
    )?;
    reconstructors::add(
        m,
        Reconstructor::MakeTextFile,
        wrap_pyfunction!(make_text_file, m)?,
    )
}

// ---------------------------------------------------------------------------
// Pickling.

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
    let make = Reconstructor::MakeCell;
    match ffi::cell_contents(cell)? {
        None => reconstructors::reduce_to(py, make, []),
        Some(value) if is_atomic(&value) => reconstructors::reduce_to(py, make, [value]),
        Some(value) => {
            let (rebuild, args) = reconstructors::call(py, make, [])?;
            reduce_with_setter(
                rebuild,
                args,
                value,
                reconstructors::get(py, Reconstructor::CellSet)?.clone(),
            )
        }
    }
}

/// A bound method: its function and its `self`, both pickled explicitly.
pub fn reduce_method<'py>(method: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = method.py();
    let args = attributes(method, [intern!(py, "__func__"), intern!(py, "__self__")])?;
    reconstructors::reduce_to(py, Reconstructor::MakeMethod, args)
}

/// `classmethod(f)`, `staticmethod(f)` and their abstract variants: `type(obj)(f)`.
pub fn reduce_function_wrapper<'py>(wrapper: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = wrapper.py();
    reduce_to_own_type(wrapper, attributes(wrapper, [intern!(py, "__func__")])?)
}

/// `property(fget, fset, fdel, doc)` (and `abc.abstractproperty`).
pub fn reduce_property<'py>(prop: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = prop.py();
    let names = [
        intern!(py, "fget"),
        intern!(py, "fset"),
        intern!(py, "fdel"),
        intern!(py, "__doc__"),
    ];
    reduce_to_own_type(prop, attributes(prop, names)?)
}

/// A getset descriptor loads as `vars(owner)[name]`: the descriptor itself,
/// (`getattr(owner, name)` would run it, giving e.g. a mappingproxy for
/// `type.__dict__['__dict__']`).
pub fn reduce_getset_descriptor<'py>(descr: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = descr.py();
    let args = attributes(
        descr,
        [intern!(py, "__objclass__"), intern!(py, "__name__")],
    )?;
    reconstructors::reduce_to(py, Reconstructor::ClassDictItem, args)
}

/// `MappingProxyType(dict(proxy))`.
pub fn reduce_mappingproxy<'py>(proxy: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = proxy.py();
    let copy = PyDict::new(py);
    copy.update(proxy.cast::<pyo3::types::PyMapping>()?)?;
    reduce_to_own_type(proxy, PyTuple::new(py, [copy])?)
}

/// `bytes(view.tobytes())`, as cloudpickle.
pub fn reduce_memoryview<'py>(view: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = view.py();
    let data = view.call_method0(intern!(py, "tobytes"))?;
    reduce(
        py.get_type::<PyBytes>().into_any(),
        PyTuple::new(py, [data])?,
    )
}

/// `WeakSet(list(ws))`.
pub fn reduce_weakset<'py>(set: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = set.py();
    let items = pyo3::types::PyList::new(py, set.try_iter()?.collect::<PyResult<Vec<_>>>()?)?;
    reduce(statics::weak_set(py)?.clone(), PyTuple::new(py, [items])?)
}

/// A logger by name (`logging.getLogger(name)`); the root logger as `getLogger()`.
pub fn reduce_logger<'py>(logger: &Bound<'py, PyAny>, root: bool) -> PyResult<Bound<'py, PyAny>> {
    let py = logger.py();
    let args = if root {
        PyTuple::empty(py)
    } else {
        attributes(logger, [intern!(py, "name")])?
    };
    reduce(statics::get_logger(py)?.clone(), args)
}

/// The dict views cloudpickle handles, plain and OrderedDict's.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DictView {
    Keys { ordered: bool },
    Values { ordered: bool },
    Items { ordered: bool },
}

impl DictView {
    fn name(self) -> &'static str {
        match self {
            DictView::Keys { .. } => "keys",
            DictView::Values { .. } => "values",
            DictView::Items { .. } => "items",
        }
    }

    fn ordered(self) -> bool {
        matches!(
            self,
            DictView::Keys { ordered: true }
                | DictView::Values { ordered: true }
                | DictView::Items { ordered: true }
        )
    }
}

/// The view classes of dict and OrderedDict, made once.
pub fn dict_view_classes(py: Python<'_>) -> PyResult<&[(DictView, Py<PyAny>)]> {
    static CLASSES: PyOnceLock<Vec<(DictView, Py<PyAny>)>> = PyOnceLock::new();
    CLASSES
        .get_or_try_init(py, || {
            let mut found = Vec::new();
            for ordered in [false, true] {
                let sample = if ordered {
                    statics::ordered_dict(py)?.call0()?
                } else {
                    PyDict::new(py).into_any()
                };
                for view in [
                    DictView::Keys { ordered },
                    DictView::Values { ordered },
                    DictView::Items { ordered },
                ] {
                    let cls = sample.call_method0(view.name())?.get_type();
                    found.push((view, cls.into_any().unbind()));
                }
            }
            Ok::<_, PyErr>(found)
        })
        .map(Vec::as_slice)
}

/// Only the view's own contents travel (not the rest of the dict behind it):
/// `make_dict_view(kind, contents, ordered)`.
pub fn reduce_dict_view<'py>(view: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = view.py();
    let tp = view.get_type();
    let Some(kind) = dict_view_classes(py)?
        .iter()
        .find(|(_, cls)| tp.is(cls.bind(py)))
        .map(|(kind, _)| *kind)
    else {
        return Ok(not_implemented(py));
    };
    let contents = match kind {
        DictView::Items { .. } => {
            let d = PyDict::new(py);
            for item in view.try_iter()? {
                let (k, v): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item?.extract()?;
                d.set_item(k, v)?;
            }
            d.into_any()
        }
        _ => pyo3::types::PyList::new(py, view.try_iter()?.collect::<PyResult<Vec<_>>>()?)?
            .into_any(),
    };
    let args = [
        PyString::new(py, kind.name()).into_any(),
        contents,
        PyBool::new(py, kind.ordered()).to_owned().into_any(),
    ];
    reconstructors::reduce_to(py, Reconstructor::MakeDictView, args)
}

/// `dataclasses._FIELD`, `_FIELD_CLASSVAR`, `_FIELD_INITVAR`: the receiver's own
/// sentinels, by name, so that `dataclasses.fields()` keeps working.
pub fn reduce_dataclass_field_type<'py>(
    sentinel: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = sentinel.py();
    reconstructors::reduce_to(
        py,
        Reconstructor::DataclassFieldType,
        attributes(sentinel, [intern!(py, "name")])?,
    )
}

/// `dataclasses.MISSING` and `dataclasses.KW_ONLY` by reference, so that
/// `is MISSING` holds after loading.
pub fn reduce_dataclass_singleton<'py>(
    singleton: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = singleton.py();
    let dataclasses = py.import("dataclasses")?;
    for name in ["MISSING", "KW_ONLY"] {
        let dataclasses_module = dataclasses.clone().into_any();
        if lookup::getattr_opt(&dataclasses_module, &PyString::new(py, name))?
            .is_some_and(|s| s.is(singleton))
        {
            return reduce_to_getattr(dataclasses.into_any(), PyString::new(py, name).into_any());
        }
    }
    Ok(py.NotImplemented().into_bound(py))
}

/// `getattr(sys, "stdout")` when `file` is the current `sys.stdout` (so for
/// stderr), whatever its class: the receiver's own stream.
fn standard_stream<'py>(file: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = file.py();
    let sys = py.import("sys")?;
    for stream in ["stdout", "stderr"] {
        if sys.getattr(stream)?.is(file) {
            return reduce_to_getattr(sys.into_any(), PyString::new(py, stream).into_any())
                .map(Some);
        }
    }
    Ok(None)
}

/// An instance of a subclass of `io.TextIOWrapper`: by reference when it is
/// `sys.stdout` or `sys.stderr` (pytest's capture replaces them with one),
/// else as its class says.
pub fn reduce_standard_stream<'py>(file: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = file.py();
    Ok(standard_stream(file)?.unwrap_or_else(|| py.NotImplemented().into_bound(py)))
}

/// An open text file: its whole content and position, as an `io.StringIO`
/// named like it (as cloudpickle). stdout and stderr go by reference.
pub fn reduce_text_file<'py>(file: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = file.py();
    let fail = |msg: String| Err(statics::PicklingError::new_err(msg));
    if let Some(reduced) = standard_stream(file)? {
        return Ok(reduced);
    }
    let sys = py.import("sys")?;
    let (Some(name), Some(mode)) = (
        lookup::getattr_opt(file, intern!(py, "name"))?,
        lookup::getattr_opt(file, intern!(py, "mode"))?,
    ) else {
        return fail("Cannot pickle files that do not map to an actual file".into());
    };
    if sys.getattr("stdin")?.is(file) {
        return fail("Cannot pickle standard input".into());
    }
    if file.getattr(intern!(py, "closed"))?.is_truthy()? {
        return fail("Cannot pickle closed files".into());
    }
    if file.call_method0(intern!(py, "isatty"))?.is_truthy()? {
        return fail("Cannot pickle files that map to tty objects".into());
    }
    let mode_text = mode.str()?.to_string();
    if !mode_text.contains('r') && !mode_text.contains('+') {
        return fail(format!(
            "Cannot pickle files that are not opened for reading: {mode_text}"
        ));
    }
    let read = || -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let position = file.call_method0(intern!(py, "tell"))?;
        file.call_method1(intern!(py, "seek"), (0,))?;
        let contents = file.call_method0(intern!(py, "read"))?;
        file.call_method1(intern!(py, "seek"), (&position,))?;
        Ok((position, contents))
    };
    let (position, contents) = match read() {
        Ok(read) => read,
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyOSError>(py) => {
            let err = statics::PicklingError::new_err(format!(
                "Cannot pickle file {name} as it cannot be read"
            ));
            err.set_cause(py, Some(e));
            return Err(err);
        }
        Err(e) => return Err(e),
    };
    let copy = py.import("io")?.getattr("StringIO")?.call0()?;
    copy.call_method1(intern!(py, "write"), (contents,))?;
    copy.call_method1(intern!(py, "seek"), (position,))?;
    copy.setattr(intern!(py, "name"), name)?;
    reconstructors::reduce_to(py, Reconstructor::MakeTextFile, [copy])
}

// ---------------------------------------------------------------------------
// Loading.

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

/// `vars(owner)[name]`: a descriptor as stored on its class.
#[pyfunction]
pub fn class_dict_item<'py>(
    owner: &Bound<'py, PyType>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    let namespace = owner.getattr(intern!(owner.py(), "__dict__"))?;
    lookup::mapping_get(&namespace, name)?.ok_or_else(|| {
        PyValueError::new_err(format!(
            "{} has no attribute {name} of its own",
            owner
                .name()
                .map_or_else(|_| "the class".to_owned(), |n| n.to_string())
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

/// A pickled text file: the `io.StringIO` holding its content, name and position.
#[pyfunction]
pub fn make_text_file<'py>(contents: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let string_io = contents.py().import("io")?.getattr("StringIO")?;
    if !contents.get_type().is(&string_io) {
        return Err(PyTypeError::new_err("expected an io.StringIO"));
    }
    Ok(contents.clone())
}
