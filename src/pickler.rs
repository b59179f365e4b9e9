//! The `Pickler` class: a Python subclass of the C `_pickle.Pickler` whose
//! `reducer_override`, `__init__` and `dump` are native method descriptors.
//!
//! Dispatch tables. `Pickler.dispatch_table` (also `Pickler.dispatch`) is
//! `ChainMap(user_table, copyreg.dispatch_table)`, as in cloudpickle, but the
//! C pickler's own `dispatch_table` slot is left empty for it: with the slot
//! set, every ordinary object would pay a mapping lookup and a raised
//! KeyError. The hook consults `user_table` (a plain dict, usually empty)
//! itself, and the C pickler reads `copyreg.dispatch_table` directly. A table
//! assigned to an instance, or defined by a subclass, goes into the slot as
//! usual and takes priority over everything this module reduces.

use std::ffi::CStr;

use ahash::AHashMap;

use pyo3::exceptions::{PyRecursionError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{IntoPyDict, PyBytes, PyDict, PyList, PyString, PyTuple, PyType};

use crate::ffi::{self, MethodImpl};
use crate::statics::{self, PicklingError};
use crate::{class, code, function, meth_o, meth_varargs, module, stdlib, types};

struct PicklerType {
    cls: Py<PyType>,
    base: Py<PyType>,
    base_dump: Py<PyAny>,
    /// `_pickle.Pickler.__dict__["dispatch_table"]`, the C member descriptor.
    dispatch_member: Py<PyAny>,
    /// Byte offset of that member in a pickler instance.
    dispatch_offset: isize,
    default_table: Py<PyAny>,
    user_table: Py<PyDict>,
    highest_protocol: Py<PyAny>,
    /// Exact type address -> kind, for every kind decided by exact type.
    kinds: AHashMap<usize, Kind>,
    base_exception_reduce: Py<PyAny>,
    /// The classes that `kinds` points into, kept alive.
    _kind_classes: Vec<Py<PyAny>>,
}

static PICKLER: PyOnceLock<PicklerType> = PyOnceLock::new();

impl PicklerType {
    fn get(py: Python<'_>) -> &PicklerType {
        PICKLER
            .get(py)
            .expect("the Pickler class is built when the module is imported")
    }
}

/// What the hook does with an object, decided from its type alone.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Function,
    Class,
    Code,
    Cell,
    Method,
    FunctionWrapper,
    Property,
    Module,
    TypeParameter,
    GetSetDescriptor,
    MappingProxy,
    MemoryView,
    WeakSet,
    Logger,
    RootLogger,
    DictView(types::DictView),
    DataclassFieldType,
    DataclassSingleton,
    TextFile,
    /// Such as the `sys.stdout` of pytest's output capture.
    TextFileSubclass,
    Exception,
    EnumMember,
    LruCache,
    CachedProperty,
    SingleDispatchMethod,
    /// `typing.NewType` from 3.10 (a class; 3.9's NewType makes functions).
    NewType,
    ContextVar,
    WeakDictionary,
    Traceback,
    /// A builtin function: one of our reconstructors, or anything else.
    Builtin,
    Other,
}

impl Kind {
    #[inline]
    fn of(obj: &Bound<'_, PyAny>, st: &PicklerType) -> Kind {
        if ffi::is_function(obj) {
            return Kind::Function;
        }
        if obj.is_instance_of::<PyType>() {
            return Kind::Class;
        }
        let tp = obj.get_type();
        if let Some(kind) = st.kinds.get(&(tp.as_ptr() as usize)) {
            return *kind;
        }
        if obj.is_instance_of::<pyo3::types::PyModule>() {
            return Kind::Module;
        }
        if obj.is_instance_of::<pyo3::exceptions::PyBaseException>() {
            return Kind::Exception;
        }
        // io.TextIOWrapper itself is in `kinds`.
        if ffi::is_heap_type(&tp)
            && statics::text_io_wrapper(obj.py()).is_ok_and(|t| tp.is_subclass(t).unwrap_or(false))
        {
            return Kind::TextFileSubclass;
        }
        // Only an enum's class has a metaclass of its own (EnumType): one
        // pointer comparison for every other object.
        if !tp.get_type().is(obj.py().get_type::<PyType>())
            && statics::enum_class(obj.py()).is_ok_and(|e| tp.is_subclass(e).unwrap_or(false))
        {
            return Kind::EnumMember;
        }
        Kind::Other
    }
}

/// The exact classes behind each kind decided by exact type.
fn kind_classes(py: Python<'_>) -> PyResult<Vec<(Bound<'_, PyAny>, Kind)>> {
    let attr = |module: &str, name: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
        Ok(py.import(module)?.getattr(name).ok())
    };
    let mut found = Vec::new();
    let specs: &[(&str, &str, Kind)] = &[
        ("types", "CodeType", Kind::Code),
        ("types", "CellType", Kind::Cell),
        ("types", "MethodType", Kind::Method),
        ("builtins", "classmethod", Kind::FunctionWrapper),
        ("builtins", "staticmethod", Kind::FunctionWrapper),
        ("abc", "abstractclassmethod", Kind::FunctionWrapper),
        ("abc", "abstractstaticmethod", Kind::FunctionWrapper),
        ("builtins", "property", Kind::Property),
        ("abc", "abstractproperty", Kind::Property),
        ("typing", "TypeVar", Kind::TypeParameter),
        ("typing", "ParamSpec", Kind::TypeParameter),
        ("typing", "TypeVarTuple", Kind::TypeParameter),
        ("types", "GetSetDescriptorType", Kind::GetSetDescriptor),
        ("types", "MappingProxyType", Kind::MappingProxy),
        ("builtins", "memoryview", Kind::MemoryView),
        ("weakref", "WeakSet", Kind::WeakSet),
        ("logging", "Logger", Kind::Logger),
        ("logging", "RootLogger", Kind::RootLogger),
        ("dataclasses", "_FIELD_BASE", Kind::DataclassFieldType),
        ("dataclasses", "_MISSING_TYPE", Kind::DataclassSingleton),
        ("dataclasses", "_KW_ONLY_TYPE", Kind::DataclassSingleton),
        ("io", "TextIOWrapper", Kind::TextFile),
        ("functools", "_lru_cache_wrapper", Kind::LruCache),
        ("functools", "cached_property", Kind::CachedProperty),
        (
            "functools",
            "singledispatchmethod",
            Kind::SingleDispatchMethod,
        ),
        ("typing", "NewType", Kind::NewType),
        ("contextvars", "ContextVar", Kind::ContextVar),
        ("weakref", "WeakValueDictionary", Kind::WeakDictionary),
        ("weakref", "WeakKeyDictionary", Kind::WeakDictionary),
        ("types", "TracebackType", Kind::Traceback),
    ];
    for (module, name, kind) in specs {
        if let Some(cls) = attr(module, name)? {
            found.push((cls, *kind));
        }
    }
    for (view, cls) in types::dict_view_classes(py)? {
        found.push((cls, Kind::DictView(view)));
    }
    let builtin_function = py.import("builtins")?.getattr("len")?.get_type();
    found.push((builtin_function.into_any(), Kind::Builtin));
    Ok(found)
}

/// Exactly a tuple, list, dict, set or frozenset: the containers the hook
/// is called for most.
#[inline]
fn is_plain_container(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_exact_instance_of::<PyTuple>()
        || obj.is_exact_instance_of::<PyDict>()
        || obj.is_exact_instance_of::<PyList>()
        || obj.is_exact_instance_of::<pyo3::types::PySet>()
        || obj.is_exact_instance_of::<pyo3::types::PyFrozenSet>()
}

/// `Pickler.reducer_override(obj)`: called by the C pickler for every object
/// it does not write by itself (not for int, str, list, dict, ...).
fn reducer_override<'py>(
    pickler: &Bound<'py, PyAny>,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    if is_plain_container(obj) {
        // The C pickler writes these itself and never consults a dispatch
        // table for them; upstream's hook leaves them alone too.
        return Ok(py.NotImplemented().into_bound(py));
    }
    let st = PicklerType::get(py);
    let kind = Kind::of(obj, st);
    if let Some(table) = ffi::read_object_member(pickler, st.dispatch_offset) {
        // The C pickler consults this table itself for what we return NotImplemented for.
        if kind == Kind::Other {
            return Ok(py.NotImplemented().into_bound(py));
        }
        if let Some(reduce) = crate::lookup::mapping_get(&table, obj.get_type().as_any())? {
            return reduce.call1((obj,));
        }
    } else {
        let user_table = st.user_table.bind(py);
        if !user_table.is_empty() {
            if let Some(reduce) = user_table.get_item(obj.get_type())? {
                return reduce.call1((obj,));
            }
        }
    }
    match kind {
        Kind::Function => function::reduce_function(pickler, obj),
        Kind::Class => class::reduce_class(obj),
        Kind::Code => code::reduce_code(obj),
        Kind::Cell => types::reduce_cell(obj),
        Kind::Method => types::reduce_method(obj),
        Kind::FunctionWrapper => types::reduce_function_wrapper(obj),
        Kind::Property => types::reduce_property(obj),
        Kind::Module => module::reduce_module(obj),
        Kind::TypeParameter => types::reduce_type_parameter(obj),
        Kind::GetSetDescriptor => types::reduce_getset_descriptor(obj),
        Kind::MappingProxy => types::reduce_mappingproxy(obj),
        Kind::MemoryView => types::reduce_memoryview(obj),
        Kind::WeakSet => types::reduce_weakset(obj),
        Kind::Logger => types::reduce_logger(obj, false),
        Kind::RootLogger => types::reduce_logger(obj, true),
        Kind::DictView(view) => types::reduce_dict_view(obj, view),
        Kind::DataclassFieldType => types::reduce_dataclass_field_type(obj),
        Kind::DataclassSingleton => types::reduce_dataclass_singleton(obj),
        Kind::TextFile => types::reduce_text_file(obj),
        Kind::TextFileSubclass => types::reduce_standard_stream(obj),
        Kind::Exception => match types::reduce_exception(obj, st.base_exception_reduce.bind(py))? {
            Some(reduced) => Ok(reduced),
            None => Ok(py.NotImplemented().into_bound(py)),
        },
        Kind::Builtin => types::reduce_reconstructor(obj),
        Kind::EnumMember => types::reduce_enum_member(obj),
        Kind::LruCache => stdlib::reduce_lru_cache(obj),
        Kind::CachedProperty => stdlib::reduce_cached_property(obj),
        Kind::SingleDispatchMethod => stdlib::reduce_singledispatchmethod(obj),
        Kind::NewType => stdlib::reduce_new_type(obj),
        Kind::ContextVar => stdlib::reduce_context_var(obj),
        Kind::WeakDictionary => stdlib::reduce_weak_dictionary(obj),
        Kind::Traceback => types::reduce_traceback(obj),
        Kind::Other => match class::reduce_instance_of_dynamic_class(obj, || {
            protocol_of(pickler).ok().flatten()
        })? {
            Some(reduced) => Ok(reduced),
            None => Ok(py.NotImplemented().into_bound(py)),
        },
    }
}

/// Where `__init__` keeps the protocol (the C pickler's own field is not
/// readable), in the pickler's `__dict__`.
const PROTOCOL_ATTRIBUTE: &str = "_cloudpickle_rs_protocol";

/// The protocol a pickler writes, when our `__init__` recorded it.
fn protocol_of(pickler: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
    let py = pickler.py();
    let Ok(dict) = ffi::instance_dict(pickler) else {
        return Ok(None);
    };
    Ok(match dict.get_item(intern!(py, PROTOCOL_ATTRIBUTE))? {
        Some(protocol) => protocol.extract().ok(),
        None => None,
    })
}

/// `compat` is taken by `Pickler.__new__` (it picks the class); `__init__`
/// accepts it so that both see the same arguments.
const INIT_PARAMS: [&str; 4] = ["file", "protocol", "buffer_callback", "compat"];
const INIT_POSITIONAL: usize = 3;

/// Binds `__init__(self, file, protocol=None, buffer_callback=None)`'s arguments.
fn bind_init_args<'py>(
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<[Option<Bound<'py, PyAny>>; 4]> {
    if args.len() > INIT_POSITIONAL {
        return Err(PyTypeError::new_err(format!(
            "__init__() takes from 2 to 4 positional arguments but {} were given",
            args.len() + 1
        )));
    }
    let mut bound: [Option<Bound<'py, PyAny>>; 4] = [None, None, None, None];
    for (slot, value) in bound.iter_mut().zip(args.iter()) {
        *slot = Some(value);
    }
    for (key, value) in kwargs.into_iter().flat_map(|k| k.iter()) {
        let key = key.cast::<PyString>()?.to_str()?.to_owned();
        let Some(index) = INIT_PARAMS.iter().position(|p| *p == key) else {
            return Err(PyTypeError::new_err(format!(
                "__init__() got an unexpected keyword argument '{key}'"
            )));
        };
        if bound[index].replace(value).is_some() {
            return Err(PyTypeError::new_err(format!(
                "__init__() got multiple values for argument '{key}'"
            )));
        }
    }
    if bound[0].is_none() {
        return Err(PyTypeError::new_err(
            "__init__() missing 1 required positional argument: 'file'",
        ));
    }
    Ok(bound)
}

/// `Pickler.__init__(file, protocol=None, buffer_callback=None)`: protocol
/// None means `DEFAULT_PROTOCOL` (the highest), as in cloudpickle.
fn pickler_init<'py>(
    pickler: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = pickler.py();
    let st = PicklerType::get(py);
    let [file, protocol, buffer_callback, _compat] = bind_init_args(args, kwargs)?;
    let none = || py.None().into_bound(py);
    let protocol = protocol
        .filter(|p| !p.is_none())
        .unwrap_or_else(|| st.highest_protocol.bind(py).clone());
    let base_args = PyTuple::new(
        py,
        [
            file.unwrap_or_else(none),
            protocol,
            pyo3::types::PyBool::new(py, true).to_owned().into_any(),
            buffer_callback.unwrap_or_else(none),
        ],
    )?;
    ffi::call_base_init(st.base.bind(py), pickler, &base_args)?;
    let written: i64 = match base_args.get_item(1)?.extract::<i64>() {
        Ok(p) if p < 0 => st.highest_protocol.bind(py).extract()?,
        Ok(p) => p,
        Err(_) => 0,
    };
    ffi::instance_dict(pickler)?.set_item(intern!(py, PROTOCOL_ATTRIBUTE), written)?;
    // The base copied the class-level default table into the slot: empty the
    // slot again, the hook and the C fast path cover the default (see module doc).
    if ffi::read_object_member(pickler, st.dispatch_offset)
        .is_some_and(|t| t.is(st.default_table.bind(py)))
    {
        st.dispatch_member
            .bind(py)
            .call_method1(intern!(py, "__delete__"), (pickler,))?;
    }
    Ok(none())
}

const RECURSION_MESSAGE: &str = "Could not pickle object as excessively deep recursion required.";

/// `Pickler.dump(obj)`: the C pickler's, with excessive recursion reported
/// as `pickle.PicklingError`, as cloudpickle does.
fn pickler_dump<'py>(
    pickler: &Bound<'py, PyAny>,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    match PicklerType::get(py)
        .base_dump
        .bind(py)
        .call1((pickler, obj))
    {
        Err(e) if e.is_instance_of::<PyRecursionError>(py) => {
            let err = PicklingError::new_err(RECURSION_MESSAGE);
            err.set_cause(py, Some(e));
            Err(err)
        }
        Err(e) => {
            explain_failure(&e, obj, pickler);
            Err(e)
        }
        ok => ok,
    }
}

/// Lets `cloudpickle_rs._diagnose.annotate(exc, obj, pickler)` add to the
/// error where the unpicklable object was reached from `obj`. Runs only on
/// the failure path; a failure of its own is dropped, keeping `error` as is.
fn explain_failure(error: &PyErr, obj: &Bound<'_, PyAny>, pickler: &Bound<'_, PyAny>) {
    let py = obj.py();
    let annotate = || -> PyResult<()> {
        statics::annotate_failure(py)?.call1((error.value(py), obj, pickler))?;
        Ok(())
    };
    let _ = annotate();
}

meth_o!(reducer_override_c, reducer_override);
meth_o!(dump_c, pickler_dump);
meth_varargs!(init_c, pickler_init);

/// The class attribute `dispatch_table`: on the class, the default
/// `ChainMap`; on an instance, the table assigned to it (or the default);
/// assigning or deleting on an instance sets the C pickler's own slot.
#[pyclass(frozen, module = "cloudpickle_rs._native")]
pub struct DispatchTableDescriptor;

#[pymethods]
impl DispatchTableDescriptor {
    fn __get__<'py>(
        &self,
        py: Python<'py>,
        instance: Option<Bound<'py, PyAny>>,
        _owner: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let st = PicklerType::get(py);
        if let Some(instance) =
            instance.filter(|i| !i.is_none() && i.is_instance(st.cls.bind(py)).unwrap_or(false))
        {
            if let Some(table) = ffi::read_object_member(&instance, st.dispatch_offset) {
                return Ok(table);
            }
        }
        Ok(st.default_table.bind(py).clone())
    }

    fn __set__(
        &self,
        py: Python<'_>,
        instance: Bound<'_, PyAny>,
        table: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let member = PicklerType::get(py).dispatch_member.bind(py);
        member.call_method1(intern!(py, "__set__"), (instance, table))?;
        Ok(())
    }

    fn __delete__(&self, py: Python<'_>, instance: Bound<'_, PyAny>) -> PyResult<()> {
        let member = PicklerType::get(py).dispatch_member.bind(py);
        member.call_method1(intern!(py, "__delete__"), (instance,))?;
        Ok(())
    }
}

const PICKLER_DOC: &str = "Pickler(file, protocol=None, buffer_callback=None)\n\n\
A pickle.Pickler that also pickles lambdas, nested functions, and functions of\n\
__main__ or of modules registered by value, by value (as cloudpickle does).";

fn addr(obj: &Bound<'_, PyAny>) -> usize {
    obj.as_ptr() as usize
}

/// Creates `class Pickler(_pickle.Pickler)` and attaches the native methods.
pub fn create_pickler_class<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyType>> {
    let base = statics::c_pickler(py)?.cast::<PyType>()?.clone();
    let dispatch_member = base.getattr("__dict__")?.get_item("dispatch_table")?;
    let dispatch_offset = ffi::object_member_offset(&dispatch_member, c"dispatch_table")?;
    let user_table = PyDict::new(py);
    let default_table =
        statics::chain_map(py)?.call1((&user_table, statics::copyreg_dispatch_table(py)?))?;

    let namespace = PyDict::new(py);
    namespace.set_item("__module__", "cloudpickle_rs")?;
    namespace.set_item("__qualname__", "Pickler")?;
    namespace.set_item("__doc__", PICKLER_DOC)?;
    namespace.set_item("dispatch_table", Bound::new(py, DispatchTableDescriptor)?)?;
    namespace.set_item("dispatch", &default_table)?;
    let cls = py
        .get_type::<PyType>()
        .call1(("Pickler", (&base,), namespace))?
        .cast_into::<PyType>()?;
    add_methods(&cls)?;

    let classes = kind_classes(py)?;
    let kinds = classes
        .iter()
        .map(|(cls, kind)| (addr(cls), *kind))
        .collect();
    let state = PicklerType {
        cls: cls.clone().unbind(),
        base_dump: base.getattr("dump")?.unbind(),
        base: base.unbind(),
        dispatch_member: dispatch_member.unbind(),
        dispatch_offset,
        default_table: default_table.unbind(),
        user_table: user_table.unbind(),
        highest_protocol: py.import("pickle")?.getattr("HIGHEST_PROTOCOL")?.unbind(),
        kinds,
        base_exception_reduce: py
            .get_type::<pyo3::exceptions::PyBaseException>()
            .getattr("__reduce__")?
            .unbind(),
        _kind_classes: classes.into_iter().map(|(cls, _)| cls.unbind()).collect(),
    };
    let _ = PICKLER.set(py, state);
    Ok(PicklerType::get(py).cls.bind(py).clone())
}

/// `Pickler.__new__`: `Pickler(file, ..., compat=True)` makes a
/// `CompatPickler`, whose output loads with upstream cloudpickle 3.x alone.
/// Other arguments are left to `__init__` (subclasses have their own).
#[pyfunction]
#[pyo3(signature = (cls, *_args, compat = false, **_kwargs))]
fn pickler_new<'py>(
    cls: &Bound<'py, PyType>,
    _args: &Bound<'py, PyTuple>,
    compat: bool,
    _kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    let st = PicklerType::get(py);
    let cls = if compat {
        compat_class(cls)?
    } else {
        cls.clone()
    };
    st.base
        .bind(py)
        .call_method1(intern!(py, "__new__"), (cls,))
}

/// The class `compat=True` instantiates in place of `cls`.
fn compat_class<'py>(cls: &Bound<'py, PyType>) -> PyResult<Bound<'py, PyType>> {
    let py = cls.py();
    let compat = statics::compat_pickler(py)?.cast::<PyType>()?.clone();
    if cls.is_subclass(&compat)? {
        return Ok(cls.clone());
    }
    if cls.is(PicklerType::get(py).cls.bind(py)) {
        return Ok(compat);
    }
    Err(PyTypeError::new_err(format!(
        "compat=True needs cloudpickle_rs.Pickler itself or a subclass of \
         cloudpickle_rs.CompatPickler, not {}",
        cls.qualname()?
    )))
}

fn add_methods(cls: &Bound<'_, PyType>) -> PyResult<()> {
    let py = cls.py();
    let new = wrap_pyfunction!(pickler_new, py)?;
    let staticmethod = py.import("builtins")?.getattr("staticmethod")?;
    cls.setattr("__new__", staticmethod.call1((new,))?)?;
    const REDUCER_DOC: &CStr = c"reducer_override(obj)\n--\n\nReduce functions, classes, code objects, cells, methods and modules as cloudpickle does; NotImplemented for everything else.";
    const INIT_DOC: &CStr = c"Initialize self. See help(type(self)) for accurate signature.";
    const DUMP_DOC: &CStr =
        c"dump(obj)\n--\n\nWrite a pickled representation of obj to the open file.";
    ffi::add_method(
        cls,
        c"reducer_override",
        REDUCER_DOC,
        MethodImpl::O(reducer_override_c),
    )?;
    ffi::add_method(cls, c"dump", DUMP_DOC, MethodImpl::O(dump_c))?;
    ffi::add_method(cls, c"__init__", INIT_DOC, MethodImpl::Varargs(init_c))?;
    Ok(())
}

fn new_pickler<'py>(
    py: Python<'py>,
    file: &Bound<'py, PyAny>,
    protocol: Option<Bound<'py, PyAny>>,
    buffer_callback: Option<Bound<'py, PyAny>>,
    compat: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let cls = if compat {
        statics::compat_pickler(py)?
    } else {
        PicklerType::get(py).cls.bind(py)
    };
    cls.call1((file, protocol, buffer_callback))
}

/// Serialize obj as bytes streamed into file (see cloudpickle.dump);
/// `compat=True` writes what upstream cloudpickle 3.x alone can load.
#[pyfunction]
#[pyo3(signature = (obj, file, protocol = None, buffer_callback = None, *, compat = false))]
pub fn dump<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    file: &Bound<'py, PyAny>,
    protocol: Option<Bound<'py, PyAny>>,
    buffer_callback: Option<Bound<'py, PyAny>>,
    compat: bool,
) -> PyResult<()> {
    let pickler = new_pickler(py, file, protocol, buffer_callback, compat)?;
    pickler_dump(&pickler, obj)?;
    Ok(())
}

/// Serialize obj as a bytes object (see cloudpickle.dumps);
/// `compat=True` writes what upstream cloudpickle 3.x alone can load.
#[pyfunction]
#[pyo3(signature = (obj, protocol = None, buffer_callback = None, *, compat = false))]
pub fn dumps<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    protocol: Option<Bound<'py, PyAny>>,
    buffer_callback: Option<Bound<'py, PyAny>>,
    compat: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if !compat && buffer_callback.as_ref().is_none_or(|b| b.is_none()) {
        if let Some(index) = reusable_index(py, protocol.as_ref()) {
            return dumps_reusing(py, obj, index);
        }
    }
    let file = statics::bytes_io(py)?.call0()?;
    let pickler = new_pickler(py, &file, protocol, buffer_callback, compat)?;
    pickler_dump(&pickler, obj)?;
    file.call_method0(intern!(py, "getvalue"))
}

/// A pickler that `dumps` keeps between calls (one per protocol), writing
/// its output as chunks into a list: creating a pickler, its output file and
/// their bound methods costs more than pickling a small closure.
struct ReusablePickler {
    pickler: Py<PyAny>,
    chunks: Py<PyList>,
}

/// Output size above which a reusable pickler is not kept (the C pickler's
/// frame size target).
const REUSE_LIMIT: usize = 64 * 1024;

/// Idle reusable picklers by protocol. A `dumps` takes its pickler out while
/// it runs, so a nested or concurrent `dumps` makes a fresh one instead.
static REUSABLE: parking_lot::Mutex<[Option<ReusablePickler>; 6]> =
    parking_lot::Mutex::new([None, None, None, None, None, None]);

/// The protocol slot for `protocol` (None: the highest), when it is a valid
/// protocol number; anything else takes the ordinary path and its errors.
fn reusable_index(py: Python<'_>, protocol: Option<&Bound<'_, PyAny>>) -> Option<usize> {
    let highest = PicklerType::get(py)
        .highest_protocol
        .bind(py)
        .extract::<i64>()
        .ok()?;
    let requested = match protocol {
        None => highest,
        Some(p) if p.is_none() => highest,
        Some(p) if p.is_exact_instance_of::<pyo3::types::PyInt>() => p.extract::<i64>().ok()?,
        Some(_) => return None,
    };
    let resolved = if requested < 0 { highest } else { requested };
    usize::try_from(resolved)
        .ok()
        .filter(|&i| i < 6 && resolved <= highest)
}

fn new_reusable_pickler(py: Python<'_>, index: usize) -> PyResult<ReusablePickler> {
    let chunks = PyList::empty(py);
    let sink = py.import("types")?.getattr("SimpleNamespace")?.call(
        (),
        Some(&[("write", chunks.getattr("append")?)].into_py_dict(py)?),
    )?;
    let pickler = PicklerType::get(py).cls.bind(py).call1((sink, index))?;
    Ok(ReusablePickler {
        pickler: pickler.unbind(),
        chunks: chunks.unbind(),
    })
}

/// `dumps` with the reusable pickler of protocol `index`: dump, join the
/// chunks, then forget everything the dump left behind (memo, globals_ref).
fn dumps_reusing<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    index: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let taken = REUSABLE.lock()[index].take();
    let reusable = match taken {
        Some(r) => r,
        None => new_reusable_pickler(py, index)?,
    };
    let pickler = reusable.pickler.bind(py);
    let chunks = reusable.chunks.bind(py);
    let dumped = pickler_dump(pickler, obj);
    let output = match chunks.len() {
        1 => chunks.get_item(0),
        _ => PyBytes::new(py, b"").call_method1(intern!(py, "join"), (chunks,)),
    };
    let reset = || -> PyResult<()> {
        chunks.call_method0(intern!(py, "clear"))?;
        pickler.call_method0(intern!(py, "clear_memo"))?;
        let dict = ffi::instance_dict(pickler)?;
        let protocol = dict.get_item(intern!(py, PROTOCOL_ATTRIBUTE))?;
        dict.clear();
        if let Some(protocol) = protocol {
            dict.set_item(intern!(py, PROTOCOL_ATTRIBUTE), protocol)?;
        }
        Ok(())
    };
    // After a failed dump the pickler is dropped rather than trusted again;
    // after a large one too: its output buffer keeps the largest size it
    // reached, and every later dump would allocate that much again.
    let small = output
        .as_ref()
        .is_ok_and(|o| o.len().is_ok_and(|n| n <= REUSE_LIMIT));
    // (Resetting only what is kept: a dropped pickler frees its memo whole.)
    let keep = dumped.is_ok() && small && reset().is_ok();
    dumped?;
    if keep {
        let mut slots = REUSABLE.lock();
        if slots[index].is_none() {
            slots[index] = Some(reusable);
        }
    }
    output
}
