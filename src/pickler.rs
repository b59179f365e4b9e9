//! The `Pickler` class: a Python subclass of the C `_pickle.Pickler` whose
//! `reducer_override`, `__init__` and `dump` are native method descriptors.
//!
//! Dispatch tables. `Pickler.dispatch_table` (also `Pickler.dispatch`) is
//! `ChainMap(user_table, copyreg.dispatch_table)`, as in cloudpickle, but the
//! C pickler's own `dispatch_table` slot is left empty for it: with the slot
//! set, every ordinary object would pay a mapping lookup and a raised
//! `KeyError`. The hook consults `user_table` (a plain dict, usually empty)
//! itself, and the C pickler reads `copyreg.dispatch_table` directly. A table
//! assigned to an instance, or defined by a subclass, goes into the slot as
//! usual and takes priority over everything this module reduces.

use std::ffi::CStr;

use pyo3::exceptions::{PyRecursionError, PySystemError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

use crate::ffi::{self, MemberOffset};
use crate::hook::{self, PROTOCOL_ATTRIBUTE};
use crate::kinds::function;
use crate::support::dump;
use crate::support::statics::{self, PicklingError};

struct PicklerType {
    cls: Py<PyType>,
    base: Py<PyType>,
    base_dump: Py<PyAny>,
    /// `_pickle.Pickler.__dict__["dispatch_table"]`, the C member descriptor.
    dispatch_member: Py<PyAny>,
    /// Where that member is in a pickler instance.
    dispatch_table: MemberOffset,
    default_table: Py<PyAny>,
    highest_protocol: Py<PyAny>,
}

static PICKLER: PyOnceLock<PicklerType> = PyOnceLock::new();

impl PicklerType {
    fn get(py: Python<'_>) -> PyResult<&PicklerType> {
        PICKLER
            .get(py)
            .ok_or_else(|| PySystemError::new_err("cloudpickle_rs's Pickler is not initialised"))
    }
}

/// Our Pickler class.
pub fn pickler_class(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    Ok(PicklerType::get(py)?.cls.bind(py))
}

/// The highest protocol, `pickle.HIGHEST_PROTOCOL`.
pub fn highest_protocol(py: Python<'_>) -> PyResult<i64> {
    PicklerType::get(py)?.highest_protocol.bind(py).extract()
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
    for (key, value) in kwargs
        .into_iter()
        .flat_map(pyo3::types::PyDictMethods::iter)
    {
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
    let st = PicklerType::get(py)?;
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
    // The base accepted the protocol: an int from -1 to the highest.
    let written = match base_args.get_item(1)?.extract::<i64>()? {
        p if p < 0 => st.highest_protocol.bind(py).extract()?,
        p => p,
    };
    ffi::instance_dict(pickler)?.set_item(intern!(py, PROTOCOL_ATTRIBUTE), written)?;
    // The base copied the class-level default table into the slot: empty the
    // slot again, the hook and the C fast path cover the default (see module doc).
    if st
        .dispatch_table
        .read(pickler)
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
pub fn pickler_dump<'py>(
    pickler: &Bound<'py, PyAny>,
    obj: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let in_progress = dump::InProgress::start();
    let dumped = PicklerType::get(py)?
        .base_dump
        .bind(py)
        .call1((pickler, obj));
    drop(in_progress);
    function::forget_what_the_dump_kept();
    match dumped {
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

struct ReducerOverride;
impl ffi::MethO for ReducerOverride {
    const NAME: &'static CStr = c"reducer_override";
    const DOC: &'static CStr = c"reducer_override($self, obj, /)\n--\n\nReduce functions, classes, code objects, cells, methods and modules as cloudpickle does; NotImplemented for everything else.";
    fn call<'py>(slf: &Bound<'py, PyAny>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        hook::reducer_override(slf, obj)
    }
}

struct Dump;
impl ffi::MethO for Dump {
    const NAME: &'static CStr = c"dump";
    const DOC: &'static CStr =
        c"dump($self, obj, /)\n--\n\nWrite a pickled representation of obj to the open file.";
    const COUNTED: bool = true;
    fn call<'py>(slf: &Bound<'py, PyAny>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        pickler_dump(slf, obj)
    }
}

struct Init;
impl ffi::MethVarargs for Init {
    const NAME: &'static CStr = c"__init__";
    const DOC: &'static CStr = c"Initialize self. See help(type(self)) for accurate signature.";
    fn call<'py>(
        slf: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        pickler_init(slf, args, kwargs)
    }
}

/// The class attribute `dispatch_table`: on the class, the default
/// `ChainMap`; on an instance, the table assigned to it (or the default);
/// assigning or deleting on an instance sets the C pickler's own slot.
#[pyclass(frozen, module = "cloudpickle_rs._native")]
pub struct DispatchTableDescriptor;

// The descriptor protocol's methods take `self`; the state is the class's.
#[allow(clippy::unused_self)]
#[pymethods]
impl DispatchTableDescriptor {
    fn __get__<'py>(
        &self,
        py: Python<'py>,
        instance: Option<Bound<'py, PyAny>>,
        _owner: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let st = PicklerType::get(py)?;
        if let Some(table) = instance.and_then(|i| st.dispatch_table.read(&i)) {
            return Ok(table);
        }
        Ok(st.default_table.bind(py).clone())
    }

    fn __set__(
        &self,
        py: Python<'_>,
        instance: Bound<'_, PyAny>,
        table: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let member = PicklerType::get(py)?.dispatch_member.bind(py);
        member.call_method1(intern!(py, "__set__"), (instance, table))?;
        Ok(())
    }

    fn __delete__(&self, py: Python<'_>, instance: Bound<'_, PyAny>) -> PyResult<()> {
        let member = PicklerType::get(py)?.dispatch_member.bind(py);
        member.call_method1(intern!(py, "__delete__"), (instance,))?;
        Ok(())
    }
}

const PICKLER_DOC: &str = "Pickler(file, protocol=None, buffer_callback=None)\n\n\
A pickle.Pickler that also pickles lambdas, nested functions, and functions of\n\
__main__ or of modules registered by value, by value (as cloudpickle does).";

/// Creates `class Pickler(_pickle.Pickler)` and attaches the native methods.
pub fn create_pickler_class(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    let base = statics::c_pickler(py)?.cast::<PyType>()?.clone();
    let dispatch_member = base.getattr("__dict__")?.get_item("dispatch_table")?;
    let dispatch_table = ffi::member_offset(&base, c"dispatch_table")?;
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
    let our_hook = cls.getattr("reducer_override")?.unbind();
    hook::init(
        py,
        dispatch_table.clone_ref(py),
        user_table.unbind(),
        our_hook,
    )?;
    let state = PicklerType {
        cls: cls.clone().unbind(),
        base_dump: base.getattr("dump")?.unbind(),
        base: base.unbind(),
        dispatch_member: dispatch_member.unbind(),
        dispatch_table,
        default_table: default_table.unbind(),
        highest_protocol: py.import("pickle")?.getattr("HIGHEST_PROTOCOL")?.unbind(),
    };
    let _ = PICKLER.set(py, state);
    Ok(PicklerType::get(py)?.cls.bind(py).clone())
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
    let st = PicklerType::get(py)?;
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
    if cls.is(pickler_class(py)?) {
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
    ffi::add_meth_o::<ReducerOverride>(cls)?;
    ffi::add_meth_o::<Dump>(cls)?;
    ffi::add_meth_varargs::<Init>(cls)
}

#[cfg(test)]
mod tests {
    use super::bind_init_args;
    use pyo3::prelude::*;
    use pyo3::types::{IntoPyDict, PyDict, PyTuple};

    fn bound(args: &[i64], kwargs: &[(&str, i64)]) -> PyResult<[Option<i64>; 4]> {
        Python::attach(|py| {
            let args = PyTuple::new(py, args)?;
            let kwargs = kwargs.iter().copied().into_py_dict(py)?;
            let kwargs: Option<&Bound<'_, PyDict>> = (!kwargs.is_empty()).then_some(&kwargs);
            let slots = bind_init_args(&args, kwargs)?;
            Ok(slots.map(|slot| slot.map(|value| value.extract().unwrap_or(-1))))
        })
    }

    #[test]
    fn positional_and_keyword_arguments_fill_their_parameters() {
        assert_eq!(bound(&[1], &[]).unwrap(), [Some(1), None, None, None]);
        assert_eq!(bound(&[1, 5], &[]).unwrap(), [Some(1), Some(5), None, None]);
        assert_eq!(
            bound(&[1], &[("buffer_callback", 7), ("compat", 0)]).unwrap(),
            [Some(1), None, Some(7), Some(0)]
        );
        assert_eq!(
            bound(&[], &[("file", 1)]).unwrap(),
            [Some(1), None, None, None]
        );
    }

    #[test]
    fn wrong_arguments_raise_type_error() {
        Python::attach(|py| {
            let type_error = |result: PyResult<[Option<i64>; 4]>| {
                result.is_err_and(|e| e.is_instance_of::<pyo3::exceptions::PyTypeError>(py))
            };
            assert!(type_error(bound(&[], &[])), "file is required");
            assert!(type_error(bound(&[1, 2, 3, 4], &[])), "too many positional");
            assert!(type_error(bound(&[1], &[("file", 2)])), "file given twice");
            assert!(
                type_error(bound(&[1], &[("fix_imports", 1)])),
                "unknown keyword"
            );
        });
    }
}
