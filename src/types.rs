//! The small reducers: cells, bound methods, classmethod/staticmethod,
//! type parameters.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyString, PyTuple};

use crate::digest;
use crate::ffi;
use crate::lookup;
use crate::name;
use crate::names;
use crate::reconstruct::Reconstructors;
use crate::registry;

/// Builds the reduce tuple `(callable, args)`.
pub fn reduce<'py>(callable: &Py<PyAny>, args: Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
    reduce_with(callable.bind(args.py()).clone(), args)
}

/// [`reduce`] for a callable already bound.
fn reduce_with<'py>(
    callable: Bound<'py, PyAny>,
    args: Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyTuple::new(args.py(), [callable, args.into_any()])?.into_any())
}

/// `(type(obj), args)`: the object is rebuilt by calling its own type.
fn reduce_to_own_type<'py>(
    obj: &Bound<'py, PyAny>,
    args: Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    reduce_with(obj.get_type().into_any(), args)
}

/// `(getattr, (owner, name))`: loads as the receiver's own attribute.
pub fn reduce_to_getattr<'py>(
    owner: Bound<'py, PyAny>,
    name: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = owner.py();
    reduce_with(
        crate::statics::builtin_getattr(py)?.clone(),
        PyTuple::new(py, [owner, name])?,
    )
}

/// `tuple(getattr(obj, name) for name in names)`.
fn attributes<'py, const N: usize>(
    obj: &Bound<'py, PyAny>,
    names: [&Bound<'py, PyString>; N],
) -> PyResult<Bound<'py, PyTuple>> {
    let values = names
        .into_iter()
        .map(|name| obj.getattr(name))
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(obj.py(), values)
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
    let args = attributes(method, [intern!(py, "__func__"), intern!(py, "__self__")])?;
    reduce(&Reconstructors::get(py).make_method, args)
}

/// `classmethod(f)`, `staticmethod(f)` and their abstract variants: `type(obj)(f)`.
pub fn reduce_function_wrapper<'py>(wrapper: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = wrapper.py();
    reduce_to_own_type(wrapper, attributes(wrapper, [intern!(py, "__func__")])?)
}

/// A TypeVar, ParamSpec or TypeVarTuple: by reference when its module has it
/// under its name, else rebuilt from its parameters and tracked, so that
/// loading it twice gives one object (as cloudpickle does for TypeVars).
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
            .is_some_and(|v| v.is_truthy().unwrap_or(false))
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
        registry::tracker_id_for(param, || digest::tracker_id(param, definition.as_any()))?;
    if digest::in_progress() {
        return digest::by_id(py, &tracker_id);
    }
    let id = PyString::new(py, &tracker_id).into_any();
    let args = PyTuple::new(py, parts.into_iter().chain([id]).collect::<Vec<_>>())?;
    reduce(&Reconstructors::get(py).make_type_parameter, args)
}

/// An enum member as `getattr(its class, its name)`, when that gives it
/// back and the class keeps `Enum.__reduce_ex__` (which writes the value):
/// the name is canonical, so which of the sender's strings happened to be
/// the member's value never changes the bytes.
pub fn reduce_enum_member<'py>(member: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = member.py();
    let not_implemented = || Ok(py.NotImplemented().into_bound(py));
    let cls = member.get_type();
    let enum_reduce = crate::statics::enum_class(py)?.getattr(intern!(py, "__reduce_ex__"))?;
    if !cls.getattr(intern!(py, "__reduce_ex__"))?.is(&enum_reduce) {
        return not_implemented();
    }
    let Some(name) = lookup::getattr_opt(member, intern!(py, "_name_"))?
        .filter(|n| n.is_exact_instance_of::<PyString>())
    else {
        return not_implemented();
    };
    let members = cls.getattr(intern!(py, "_member_map_"))?;
    if !lookup::mapping_get(&members, &name)?.is_some_and(|m| m.is(member)) {
        // A combination of flags, or an alias: not reachable by that name.
        return not_implemented();
    }
    reduce_to_getattr(cls.into_any(), names::canonical(name)?)
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
    reduce(&Reconstructors::get(py).class_dict_item, args)
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
    reduce_with(
        py.get_type::<PyBytes>().into_any(),
        PyTuple::new(py, [data])?,
    )
}

/// `WeakSet(list(ws))`.
pub fn reduce_weakset<'py>(set: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = set.py();
    let items = pyo3::types::PyList::new(py, set.try_iter()?.collect::<PyResult<Vec<_>>>()?)?;
    reduce_with(
        crate::statics::weak_set(py)?.clone(),
        PyTuple::new(py, [items])?,
    )
}

/// A logger by name (`logging.getLogger(name)`); the root logger as `getLogger()`.
pub fn reduce_logger<'py>(logger: &Bound<'py, PyAny>, root: bool) -> PyResult<Bound<'py, PyAny>> {
    let py = logger.py();
    let args = if root {
        PyTuple::empty(py)
    } else {
        attributes(logger, [intern!(py, "name")])?
    };
    reduce_with(crate::statics::get_logger(py)?.clone(), args)
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

pub fn dict_view_classes(py: Python<'_>) -> PyResult<Vec<(DictView, Bound<'_, PyAny>)>> {
    let mut found = Vec::new();
    for ordered in [false, true] {
        let sample = if ordered {
            crate::statics::ordered_dict(py)?.call0()?
        } else {
            PyDict::new(py).into_any()
        };
        for view in [
            DictView::Keys { ordered },
            DictView::Values { ordered },
            DictView::Items { ordered },
        ] {
            found.push((
                view,
                sample.call_method0(view.name())?.get_type().into_any(),
            ));
        }
    }
    Ok(found)
}

/// Only the view's own contents travel (not the rest of the dict behind it):
/// `make_dict_view(kind, contents, ordered)`.
pub fn reduce_dict_view<'py>(
    view: &Bound<'py, PyAny>,
    kind: DictView,
) -> PyResult<Bound<'py, PyAny>> {
    let py = view.py();
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
    let args = PyTuple::new(
        py,
        [
            PyString::new(py, kind.name()).into_any(),
            contents,
            PyBool::new(py, kind.ordered()).to_owned().into_any(),
        ],
    )?;
    reduce(&Reconstructors::get(py).make_dict_view, args)
}

/// `dataclasses._FIELD`, `_FIELD_CLASSVAR`, `_FIELD_INITVAR`: the receiver's own
/// sentinels, by name, so that `dataclasses.fields()` keeps working.
pub fn reduce_dataclass_field_type<'py>(
    sentinel: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = sentinel.py();
    reduce(
        &Reconstructors::get(py).dataclass_field_type,
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
        if dataclasses.getattr(name).is_ok_and(|s| s.is(singleton)) {
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
    let fail = |msg: String| Err(crate::statics::PicklingError::new_err(msg));
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
    if file
        .call_method0(intern!(py, "isatty"))
        .is_ok_and(|t| t.is_truthy().unwrap_or(false))
    {
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
            let err = crate::statics::PicklingError::new_err(format!(
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
    reduce(
        &Reconstructors::get(py).make_text_file,
        PyTuple::new(py, [copy])?,
    )
}

/// An exception: a user-defined one whose class keeps
/// `BaseException.__reduce__` is rebuilt from its class and `args` without
/// calling `__init__` (which may need more arguments than `args` holds),
/// then its `__dict__`; others as their class reduces them. Either way the
/// state also brings back what `BaseException.__reduce__` leaves out (see
/// [`exception_links`]), when the class keeps `BaseException.__setstate__`.
pub fn reduce_exception<'py>(
    exc: &Bound<'py, PyAny>,
    base_reduce: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = exc.py();
    let cls = exc.get_type();
    // copyreg.pickle() registrations (tblib's, for one) come first, as in the C pickler.
    if crate::statics::copyreg_dispatch_table(py)?.contains(&cls)? {
        return Ok(None);
    }
    let own = if ffi::is_heap_type(&cls) && cls.getattr(intern!(py, "__reduce__"))?.is(base_reduce)
    {
        let args = PyTuple::new(
            py,
            [cls.clone().into_any(), exc.getattr(intern!(py, "args"))?],
        )?;
        let state = lookup::getattr_opt(exc, intern!(py, "__dict__"))?
            .unwrap_or_else(|| py.None().into_bound(py));
        let make = Reconstructors::get(py).make_exception.bind(py).clone();
        Some(PyTuple::new(py, [make, args.into_any(), state])?)
    } else {
        None
    };
    let Some(links) = exception_links(exc)? else {
        return Ok(own.map(Bound::into_any));
    };
    let base_setstate = py
        .get_type::<pyo3::exceptions::PyBaseException>()
        .getattr(intern!(py, "__setstate__"))?;
    if !cls.getattr(intern!(py, "__setstate__"))?.is(&base_setstate) {
        return Ok(own.map(Bound::into_any));
    }
    let reduced = match own {
        Some(own) => own,
        None => match exc
            .call_method1(intern!(py, "__reduce_ex__"), (4,))?
            .cast_into::<PyTuple>()
        {
            Ok(reduced) => reduced,
            Err(_) => return Ok(None),
        },
    };
    Ok(Some(with_links(reduced, links)?.into_any()))
}

/// What `BaseException.__reduce__` leaves out, as state for
/// `BaseException.__setstate__` (which sets each): `__cause__`,
/// `__context__`, `__suppress_context__` and `__traceback__` (see
/// [`reduce_traceback`]), those that are not their default. None when all
/// are.
fn exception_links<'py>(exc: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyDict>>> {
    let py = exc.py();
    let links = PyDict::new(py);
    for name in [
        name!(py, "__cause__")?,
        name!(py, "__context__")?,
        name!(py, "__traceback__")?,
    ] {
        let value = exc.getattr(name.cast::<PyString>()?)?;
        if !value.is_none() {
            links.set_item(name, value)?;
        }
    }
    let suppress = exc.getattr(intern!(py, "__suppress_context__"))?;
    if suppress.is_truthy()? {
        links.set_item(name!(py, "__suppress_context__")?, suppress)?;
    }
    Ok((!links.is_empty()).then_some(links))
}

/// `reduced` with `links` added to its state when that state is a dict (or
/// none) that the pickle's BUILD sets; else `reduced` as it is.
fn with_links<'py>(
    reduced: Bound<'py, PyTuple>,
    links: Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyTuple>> {
    let py = reduced.py();
    let mut parts: Vec<Bound<'py, PyAny>> = reduced.iter().collect();
    if !(2..=6).contains(&parts.len()) || parts.get(5).is_some_and(|setter| !setter.is_none()) {
        return Ok(reduced);
    }
    while parts.len() < 3 {
        parts.push(py.None().into_bound(py));
    }
    let state = if parts[2].is_none() {
        links
    } else if let Ok(dict) = parts[2].cast::<PyDict>() {
        let merged = dict.copy()?;
        merged.update(links.as_mapping())?;
        merged
    } else {
        return Ok(reduced);
    };
    parts[2] = state.into_any();
    PyTuple::new(py, parts)
}

/// `(make_traceback, (((filename, name, lineno), ...),))`: the frames from
/// the outermost, each as `traceback` shows it. Their locals and globals do
/// not travel; the receiver's `traceback.format_exception` shows the
/// sender's files, lines and functions (and the source lines where it has
/// the files).
pub fn reduce_traceback<'py>(tb: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = tb.py();
    let mut frames = Vec::new();
    let mut current = tb.clone();
    while !current.is_none() {
        let code = current
            .getattr(intern!(py, "tb_frame"))?
            .getattr(intern!(py, "f_code"))?;
        let lineno = current.getattr(intern!(py, "tb_lineno"))?;
        let lineno = if lineno.is_none() {
            PyInt::new(py, 0).into_any()
        } else {
            lineno
        };
        let frame = [
            names::canonical(code.getattr(intern!(py, "co_filename"))?)?,
            names::canonical(code.getattr(intern!(py, "co_name"))?)?,
            lineno,
        ];
        frames.push(PyTuple::new(py, frame)?);
        current = current.getattr(intern!(py, "tb_next"))?;
    }
    let make = Reconstructors::get(py).make_traceback.bind(py).clone();
    let args = PyTuple::new(py, [PyTuple::new(py, frames)?])?;
    reduce_with(make, args)
}

/// One of our reconstructors is written as `reconstructor(name)`: a pickle
/// then names a single global of ours, however many reconstructors it uses.
/// Any other builtin function is left to the C pickler (a global).
pub fn reduce_reconstructor<'py>(function: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = function.py();
    let r = Reconstructors::get(py);
    match r.name_of(function) {
        Some(name) => reduce(&r.reconstructor, PyTuple::new(py, [name.bind(py)])?),
        None => Ok(py.NotImplemented().into_bound(py)),
    }
}
