//! Every raw CPython call the crate makes lives here; the rest of the crate
//! works with `Bound` values only.

use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use pyo3::exceptions::{PySystemError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyCode, PyDict, PyFunction, PyString, PyTuple, PyType};

/// `PyMemberDescrObject` as CPython lays it out on every supported version
/// (pyo3-ffi types `d_member` as `PyGetSetDef` before 3.11, which is wrong).
#[repr(C)]
struct MemberDescr {
    common: ffi::PyDescrObject,
    member: *mut ffi::PyMemberDef,
}

const T_OBJECT_EX: c_int = 16;

/// Where a `T_OBJECT_EX` member of a type lives in its instances; only
/// [`member_offset`] makes one, so [`MemberOffset::read`] trusts the offset.
pub struct MemberOffset {
    offset: isize,
    /// The type that declares the member.
    owner: Py<PyType>,
}

/// Finds the member `name` declared by `owner` (its member descriptor in
/// `owner.__dict__`), checking that it is an object member.
pub fn member_offset(owner: &Bound<'_, PyType>, name: &CStr) -> PyResult<MemberOffset> {
    let py = owner.py();
    let descr = owner.getattr(pyo3::intern!(py, "__dict__"))?.get_item(
        name.to_str()
            .map_err(|e| PySystemError::new_err(e.to_string()))?,
    )?;
    let member_type = py.import("types")?.getattr("MemberDescriptorType")?;
    if !descr.get_type().is(&member_type) {
        return Err(PySystemError::new_err(format!(
            "{descr} is not a member descriptor"
        )));
    }
    // SAFETY: `descr` was just checked to be a `member_descriptor`, whose C
    // struct is `MemberDescr`; the PyMemberDef it points to is static data of
    // the defining type and outlives the descriptor.
    let member = unsafe { &*(*(descr.as_ptr() as *const MemberDescr)).member };
    // SAFETY: a member descriptor's `name` is a NUL-terminated static string.
    let member_name = unsafe { CStr::from_ptr(member.name) };
    if member_name != name || member.type_code != T_OBJECT_EX || member.offset <= 0 {
        return Err(PySystemError::new_err(format!(
            "unexpected layout of {}",
            owner.qualname()?
        )));
    }
    Ok(MemberOffset {
        offset: member.offset,
        owner: owner.clone().unbind(),
    })
}

impl MemberOffset {
    pub fn clone_ref(&self, py: Python<'_>) -> MemberOffset {
        MemberOffset {
            offset: self.offset,
            owner: self.owner.clone_ref(py),
        }
    }

    /// The member's value in `obj`, or None when it is unset or `obj` is not
    /// an instance of the type that declares it.
    #[inline]
    pub fn read<'py>(&self, obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        let owner = self.owner.as_ptr().cast::<ffi::PyTypeObject>();
        // SAFETY: `obj` and `owner` are live objects; the check reads type data.
        if unsafe { ffi::PyObject_TypeCheck(obj.as_ptr(), owner) } == 0 {
            return None;
        }
        // SAFETY: `obj` is an instance of `owner` (checked), which declares an
        // object member at `offset`, so the slot holds a PyObject* or NULL.
        // (The offset comes from CPython's member table: pointer-aligned.)
        #[allow(clippy::cast_ptr_alignment)]
        unsafe {
            let slot = (obj.as_ptr() as *const u8)
                .offset(self.offset)
                .cast::<*mut ffi::PyObject>();
            Bound::from_borrowed_ptr_or_opt(obj.py(), *slot)
        }
    }
}

/// Runs `body` with the GIL-bound token, turning errors and panics into a set
/// Python exception and a NULL return.
///
/// The token is assumed, which costs nothing, but `PyO3` does not count the
/// thread as attached then: a `Py` dropped in `body` is released later, from
/// `PyO3`'s pool of deferred releases. [`counted_trampoline`] counts it.
#[inline]
fn trampoline(body: impl FnOnce(Python<'_>) -> PyResult<*mut ffi::PyObject>) -> *mut ffi::PyObject {
    // SAFETY: only called from CPython method slots, which run attached to the interpreter.
    run(unsafe { Python::assume_attached() }, body)
}

/// [`trampoline`] with the thread counted as attached for the call, so that
/// everything `body` and the hooks it leads to drop is released at once.
fn counted_trampoline(
    body: impl FnOnce(Python<'_>) -> PyResult<*mut ffi::PyObject>,
) -> *mut ffi::PyObject {
    // SAFETY: only called from CPython method slots, which run attached to an
    // initialised interpreter.
    unsafe { Python::attach_unchecked(|py| run(py, body)) }
}

#[inline]
fn run(
    py: Python<'_>,
    body: impl FnOnce(Python<'_>) -> PyResult<*mut ffi::PyObject>,
) -> *mut ffi::PyObject {
    match catch_unwind(AssertUnwindSafe(|| body(py))) {
        Ok(Ok(ptr)) => ptr,
        Ok(Err(err)) => {
            err.restore(py);
            ptr::null_mut()
        }
        Err(_) => {
            PySystemError::new_err("cloudpickle_rs: internal panic").restore(py);
            ptr::null_mut()
        }
    }
}

/// A `METH_O` method of a class, in safe Rust (see [`add_meth_o`]).
pub trait MethO {
    const NAME: &'static CStr;
    const DOC: &'static CStr;
    /// Whether the call goes through [`counted_trampoline`]: for a method
    /// that leads to many others (`dump`), not for one called per object.
    const COUNTED: bool = false;
    fn call<'py>(slf: &Bound<'py, PyAny>, arg: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>>;
}

/// A `METH_VARARGS` | `METH_KEYWORDS` method, in safe Rust (see [`add_meth_varargs`]).
pub trait MethVarargs {
    const NAME: &'static CStr;
    const DOC: &'static CStr;
    fn call<'py>(
        slf: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>>;
}

unsafe extern "C" fn meth_o<M: MethO>(
    slf: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let body = |py: Python<'_>| {
        // SAFETY: CPython calls a METH_O method with borrowed, non-NULL `self`
        // and argument, attached to the interpreter.
        let (slf, arg) = unsafe {
            (
                Bound::from_borrowed_ptr(py, slf),
                Bound::from_borrowed_ptr(py, arg),
            )
        };
        M::call(&slf, &arg).map(Bound::into_ptr)
    };
    if M::COUNTED {
        counted_trampoline(body)
    } else {
        trampoline(body)
    }
}

unsafe extern "C" fn meth_varargs<M: MethVarargs>(
    slf: *mut ffi::PyObject,
    args: *mut ffi::PyObject,
    kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    trampoline(|py| {
        // SAFETY: CPython's METH_VARARGS|METH_KEYWORDS convention: borrowed
        // `self`, an args tuple and a kwargs dict or NULL.
        let (slf, args, kwargs) = unsafe {
            (
                Bound::from_borrowed_ptr(py, slf),
                Bound::from_borrowed_ptr(py, args).cast_into_unchecked::<PyTuple>(),
                Bound::from_borrowed_ptr_or_opt(py, kwargs)
                    .map(|k| k.cast_into_unchecked::<PyDict>()),
            )
        };
        M::call(&slf, &args, kwargs.as_ref()).map(Bound::into_ptr)
    })
}

/// Attaches `M` to `cls` as a real method descriptor (`PyDescr_NewMethod`):
/// unlike a builtin function stored on a class, it binds `self`, and CPython
/// checks that `self` is an instance of `cls` before calling it.
pub fn add_meth_o<M: MethO>(cls: &Bound<'_, PyType>) -> PyResult<()> {
    let meth = ffi::PyMethodDefPointer {
        PyCFunction: meth_o::<M>,
    };
    add_method(cls, M::NAME, M::DOC, meth, ffi::METH_O)
}

/// [`add_meth_o`] for a `METH_VARARGS` | `METH_KEYWORDS` method.
pub fn add_meth_varargs<M: MethVarargs>(cls: &Bound<'_, PyType>) -> PyResult<()> {
    let meth = ffi::PyMethodDefPointer {
        PyCFunctionWithKeywords: meth_varargs::<M>,
    };
    add_method(
        cls,
        M::NAME,
        M::DOC,
        meth,
        ffi::METH_VARARGS | ffi::METH_KEYWORDS,
    )
}

fn add_method(
    cls: &Bound<'_, PyType>,
    name: &'static CStr,
    doc: &'static CStr,
    ml_meth: ffi::PyMethodDefPointer,
    ml_flags: c_int,
) -> PyResult<()> {
    // CPython keeps a pointer to the PyMethodDef for the descriptor's whole
    // life: leak one small allocation per method (a handful, once per process).
    let def: &'static mut ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
        ml_name: name.as_ptr().cast::<c_char>(),
        ml_meth,
        ml_flags,
        ml_doc: doc.as_ptr().cast::<c_char>(),
    }));
    // SAFETY: `cls` is a live type object and `def` is 'static.
    let descr = unsafe {
        Bound::from_owned_ptr_or_err(
            cls.py(),
            ffi::PyDescr_NewMethod(cls.as_ptr().cast::<ffi::PyTypeObject>(), def),
        )?
    };
    let name = name
        .to_str()
        .map_err(|e| PySystemError::new_err(e.to_string()))?;
    cls.setattr(name, descr)
}

/// Calls the `tp_init` slot of `base` on `obj`, as `base.__init__(obj, *args)` would.
pub fn call_base_init(
    base: &Bound<'_, PyType>,
    obj: &Bound<'_, PyAny>,
    args: &Bound<'_, PyTuple>,
) -> PyResult<()> {
    // SAFETY: `base` is a live type object; reading its slot is plain data.
    let init = unsafe { (*base.as_ptr().cast::<ffi::PyTypeObject>()).tp_init };
    let init = init.ok_or_else(|| PySystemError::new_err("base type has no tp_init"))?;
    // SAFETY: both are live objects; the check reads type data.
    if unsafe { ffi::PyObject_TypeCheck(obj.as_ptr(), base.as_ptr().cast::<ffi::PyTypeObject>()) }
        == 0
    {
        return Err(PyTypeError::new_err(format!(
            "expected an instance of {}",
            base.qualname()?
        )));
    }
    // SAFETY: `obj` is an instance of `base` (checked) and `args` a tuple.
    let rc = unsafe { init(obj.as_ptr(), args.as_ptr(), ptr::null_mut()) };
    if rc < 0 {
        return Err(PyErr::fetch(obj.py()));
    }
    Ok(())
}

/// `obj` as a function, when it is exactly one (`types.FunctionType`).
#[inline]
pub fn as_function<'a, 'py>(obj: &'a Bound<'py, PyAny>) -> Option<&'a Bound<'py, PyFunction>> {
    obj.cast::<PyFunction>().ok()
}

/// `obj` as a code object.
pub fn as_code<'a, 'py>(obj: &'a Bound<'py, PyAny>) -> Option<&'a Bound<'py, PyCode>> {
    obj.cast::<PyCode>().ok()
}

pub fn is_cell(obj: &Bound<'_, PyAny>) -> bool {
    obj.get_type().as_ptr() == (&raw mut ffi::PyCell_Type).cast::<ffi::PyObject>()
}

/// A class's `tp_flags`.
fn type_flags(cls: &Bound<'_, PyType>) -> std::ffi::c_ulong {
    // SAFETY: `cls` is a live type object; reading its flags is plain data.
    unsafe { ffi::PyType_GetFlags(cls.as_ptr().cast::<ffi::PyTypeObject>()) }
}

/// Whether a class was created at run time (a Python class) rather than
/// being static (a builtin or an extension's static type).
pub fn is_heap_type(cls: &Bound<'_, PyType>) -> bool {
    type_flags(cls) & ffi::Py_TPFLAGS_HEAPTYPE != 0
}

/// Whether a class was made by a class statement or `type(...)`: a heap type
/// that C code did not mark immutable (as it marks its own classes, e.g.
/// 3.12's `typing.TypeVar`).
pub fn is_python_class(cls: &Bound<'_, PyType>) -> bool {
    is_heap_type(cls) && type_flags(cls) & IMMUTABLE_TYPE == 0
}

/// `Py_TPFLAGS_IMMUTABLETYPE` (3.10+; a bit unused before).
const IMMUTABLE_TYPE: std::ffi::c_ulong = 1 << 8;

/// A heap type's own dict (its `tp_dict`); None for a static type.
pub fn heap_type_dict<'py>(cls: &Bound<'py, PyType>) -> Option<Bound<'py, PyDict>> {
    if !is_heap_type(cls) {
        return None;
    }
    // SAFETY: `cls` is a live heap type, whose `tp_dict` is its own dict (set
    // when the type was made, for the type's lifetime, NULL only before
    // PyType_Ready); the borrowed pointer becomes an owned reference at once.
    unsafe {
        let dict = (*cls.as_ptr().cast::<ffi::PyTypeObject>()).tp_dict;
        Bound::from_borrowed_ptr_or_opt(cls.py(), dict).map(|d| d.cast_into_unchecked())
    }
}

/// `vars(cls).get("__module__")` for a heap type, read from its dict
/// without an attribute lookup (which costs a descriptor call per object on
/// the hook's path for instances).
pub fn heap_type_module<'py>(cls: &Bound<'py, PyType>) -> PyResult<Option<Bound<'py, PyAny>>> {
    match heap_type_dict(cls) {
        Some(dict) => dict.get_item(pyo3::intern!(cls.py(), "__module__")),
        None => Ok(None),
    }
}

/// A heap type's `__qualname__`, read from the type object (no lookup).
pub fn heap_type_qualname<'py>(cls: &Bound<'py, PyType>) -> Option<Bound<'py, PyString>> {
    if !is_heap_type(cls) {
        return None;
    }
    // SAFETY: a heap type's object is a PyHeapTypeObject, whose `ht_qualname`
    // is a str that setting `__qualname__` replaces (never NULL once made);
    // the borrowed pointer becomes an owned reference at once.
    unsafe {
        let qualname = (*cls.as_ptr().cast::<ffi::PyHeapTypeObject>()).ht_qualname;
        Bound::from_borrowed_ptr_or_opt(cls.py(), qualname)
            .and_then(|q| q.cast_into::<PyString>().ok())
    }
}

/// What identifies a type and everything a hook decision about its
/// instances reads from it: its address, its version tag (a new one, never
/// reused, whenever the type is modified; 0 until first assigned) and its
/// qualified name's object. None while the type has no version tag.
pub fn type_signature(cls: &Bound<'_, PyType>) -> Option<[usize; 3]> {
    let raw = cls.as_ptr().cast::<ffi::PyTypeObject>();
    // SAFETY: `cls` is a live type object; these reads are plain data.
    let tag = unsafe { (*raw).tp_version_tag };
    if tag == 0 {
        return None;
    }
    let qualname = if is_heap_type(cls) {
        // SAFETY: a heap type is a PyHeapTypeObject; the pointer is only compared.
        unsafe { (*raw.cast::<ffi::PyHeapTypeObject>()).ht_qualname as usize }
    } else {
        0
    };
    Some([raw as usize, tag as usize, qualname])
}

/// Tells CPython that `cls`'s dict was changed directly (not through
/// `setattr`), so that its attribute caches are dropped.
pub fn type_modified(cls: &Bound<'_, PyType>) {
    // SAFETY: `cls` is a live type object.
    unsafe { ffi::PyType_Modified(cls.as_ptr().cast::<ffi::PyTypeObject>()) }
}

/// The function's `__globals__` (never NULL for a function).
pub fn function_globals<'py>(func: &Bound<'py, PyFunction>) -> Bound<'py, PyDict> {
    // SAFETY: `func` is a function object, whose globals is always a dict.
    unsafe {
        Bound::from_borrowed_ptr(func.py(), ffi::PyFunction_GetGlobals(func.as_ptr()))
            .cast_into_unchecked()
    }
}

/// The function's `__closure__` tuple, or None.
pub fn function_closure<'py>(func: &Bound<'py, PyFunction>) -> Option<Bound<'py, PyTuple>> {
    // SAFETY: `func` is a function object; its closure is a tuple or NULL.
    unsafe {
        Bound::from_borrowed_ptr_or_opt(func.py(), ffi::PyFunction_GetClosure(func.as_ptr()))
            .map(|c| c.cast_into_unchecked())
    }
}

/// A function's attributes as stored, read without the attribute getters:
/// those raise an audit event per access (3.11+) and create empty
/// `__annotations__` and `__dict__` dicts when read.
pub struct FunctionParts<'py> {
    pub code: Bound<'py, PyAny>,
    pub name: Bound<'py, PyAny>,
    pub qualname: Bound<'py, PyAny>,
    /// `__defaults__`: None or a tuple.
    pub defaults: Bound<'py, PyAny>,
    /// `__kwdefaults__`: None or a dict.
    pub kwdefaults: Bound<'py, PyAny>,
    /// Whether `__annotations__` was ever set (a tuple on 3.10 until first read;
    /// on 3.14, NULL until `__annotations__` is first read or assigned).
    pub has_annotations: bool,
    /// `__annotate__` (3.14, PEP 649), the function that computes the
    /// annotations, when there is one; always None before 3.14.
    pub annotate: Option<Bound<'py, PyAny>>,
    /// `__dict__`, if it was ever created.
    pub dict: Option<Bound<'py, PyAny>>,
    pub module: Bound<'py, PyAny>,
    pub doc: Bound<'py, PyAny>,
}

/// Reads the parts of a function.
pub fn function_parts<'py>(func: &Bound<'py, PyFunction>) -> FunctionParts<'py> {
    let py = func.py();
    let raw = func.as_ptr().cast::<ffi::PyFunctionObject>();
    let none = || py.None().into_bound(py);
    // SAFETY: `func` is a function object, so `raw` points to a live
    // PyFunctionObject for as long as `func` is borrowed. Code, name and
    // qualname are never NULL; the other fields are NULL when unset. Each
    // pointer is turned into a new strong reference before use.
    unsafe {
        let opt = |p: *mut ffi::PyObject| Bound::from_borrowed_ptr_or_opt(py, p);
        #[cfg(Py_3_14)]
        let annotate = opt((*raw).func_annotate).filter(|a| !a.is_none());
        #[cfg(not(Py_3_14))]
        let annotate = None;
        FunctionParts {
            code: Bound::from_borrowed_ptr(py, (*raw).func_code),
            name: Bound::from_borrowed_ptr(py, (*raw).func_name),
            qualname: Bound::from_borrowed_ptr(py, (*raw).func_qualname),
            defaults: opt((*raw).func_defaults).unwrap_or_else(none),
            kwdefaults: opt((*raw).func_kwdefaults).unwrap_or_else(none),
            has_annotations: !(*raw).func_annotations.is_null(),
            annotate,
            dict: opt((*raw).func_dict),
            module: opt((*raw).func_module).unwrap_or_else(none),
            doc: opt((*raw).func_doc).unwrap_or_else(none),
        }
    }
}

/// Restores lazy annotations (3.14) as CPython stores them: `__annotate__`,
/// and the dict it already produced when `annotations` is given. (Assigning
/// either attribute clears the other, so the dict is written directly.)
#[cfg(Py_3_14)]
pub fn set_function_annotate(
    func: &Bound<'_, PyFunction>,
    annotate: &Bound<'_, PyAny>,
    annotations: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    // The setter checks that `annotate` is callable and clears the annotations.
    func.setattr(pyo3::intern!(func.py(), "__annotate__"), annotate)?;
    if let Some(annotations) = annotations {
        let raw = func.as_ptr().cast::<ffi::PyFunctionObject>();
        // SAFETY: `func` is a function and `annotations` an exact or
        // derived dict, as `func_annotations` requires; the slot's previous
        // value (NULL after the setter, in practice) is released after the
        // new one is in place.
        unsafe {
            let previous =
                std::mem::replace(&mut (*raw).func_annotations, annotations.clone().into_ptr());
            ffi::Py_XDECREF(previous);
        }
    }
    Ok(())
}

/// Builds a function as `types.FunctionType` does, with a qualified name,
/// once `closure` fits the code's free variables.
pub fn new_function<'py>(
    code: &Bound<'py, PyCode>,
    globals: &Bound<'py, PyDict>,
    qualname: Option<&Bound<'py, PyString>>,
    closure: Option<&Bound<'py, PyTuple>>,
) -> PyResult<Bound<'py, PyFunction>> {
    check_closure(code, closure)?;
    let qualname = qualname.map_or(ptr::null_mut(), Bound::as_ptr);
    // SAFETY: `code` is a code object, `globals` a dict, `qualname` a str or
    // NULL; the call returns a new function or NULL with an exception set.
    let func: Bound<'py, PyFunction> = unsafe {
        Bound::from_owned_ptr_or_err(
            code.py(),
            ffi::PyFunction_NewWithQualName(code.as_ptr(), globals.as_ptr(), qualname),
        )?
        .cast_into_unchecked()
    };
    if let Some(closure) = closure {
        // SAFETY: `func` is a function and `closure` a tuple of one cell per
        // free variable of its code (checked above).
        check(code.py(), unsafe {
            ffi::PyFunction_SetClosure(func.as_ptr(), closure.as_ptr())
        })?;
    }
    Ok(func)
}

/// Checks that `closure` fits the free variables of `code`: CPython trusts
/// a function's closure to hold exactly one cell per free variable.
fn check_closure(code: &Bound<'_, PyCode>, closure: Option<&Bound<'_, PyTuple>>) -> PyResult<()> {
    let freevars = code
        .getattr(pyo3::intern!(code.py(), "co_freevars"))?
        .len()?;
    let given = closure.map_or(0, pyo3::types::PyTupleMethods::len);
    if given != freevars {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "code object needs a closure of {freevars} cells, got {given}"
        )));
    }
    if let Some(item) = closure
        .into_iter()
        .flat_map(pyo3::types::PyTupleMethods::iter)
        .find(|c| !is_cell(c))
    {
        return Err(PyTypeError::new_err(format!(
            "closure items must be cells, not {}",
            item.get_type().name()?
        )));
    }
    Ok(())
}

/// Sets `__defaults__` (None or a tuple) or `__kwdefaults__` (None or a dict).
pub fn set_function_defaults(
    func: &Bound<'_, PyFunction>,
    defaults: &Bound<'_, PyAny>,
    keyword: bool,
) -> PyResult<()> {
    let fits = defaults.is_none()
        || if keyword {
            defaults.is_instance_of::<PyDict>()
        } else {
            defaults.is_instance_of::<PyTuple>()
        };
    if !fits {
        return Err(PyTypeError::new_err(if keyword {
            "__kwdefaults__ must be None or a dict"
        } else {
            "__defaults__ must be None or a tuple"
        }));
    }
    let value = defaults.as_ptr();
    // SAFETY: `func` is a function and `value` None or of the type its
    // setter takes (checked).
    let rc = unsafe {
        if keyword {
            ffi::PyFunction_SetKwDefaults(func.as_ptr(), value)
        } else {
            ffi::PyFunction_SetDefaults(func.as_ptr(), value)
        }
    };
    check(func.py(), rc)
}

/// Makes a new empty cell.
pub fn new_cell<'py>(
    py: Python<'py>,
    contents: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let value = contents.map_or(ptr::null_mut(), Bound::as_ptr);
    // SAFETY: `value` is a valid object or NULL (an empty cell).
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyCell_New(value)) }
}

/// Reads a cell's contents; None for an empty cell.
pub fn cell_contents<'py>(cell: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    if !is_cell(cell) {
        return Err(PyTypeError::new_err("expected a cell"));
    }
    // SAFETY: `cell` is a cell object; PyCell_Get returns a new reference, or
    // NULL without an exception for an empty cell.
    Ok(unsafe { Bound::from_owned_ptr_or_opt(cell.py(), ffi::PyCell_Get(cell.as_ptr())) })
}

/// Fills a cell.
pub fn set_cell(cell: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if !is_cell(cell) {
        return Err(PyTypeError::new_err("expected a cell"));
    }
    // SAFETY: `cell` is a cell and `value` a valid object.
    check(cell.py(), unsafe {
        ffi::PyCell_Set(cell.as_ptr(), value.as_ptr())
    })
}

/// How many references to `obj` exist (CPython's reference count).
pub fn reference_count(obj: &Bound<'_, PyAny>) -> isize {
    // SAFETY: `obj` is a live object and we are attached to the interpreter.
    unsafe { ffi::Py_REFCNT(obj.as_ptr()) }
}

/// `obj.__dict__` read from the instance itself (made on first use), without
/// looking the attribute up through the type.
pub fn instance_dict<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    // SAFETY: `obj` is live; PyObject_GenericGetDict returns a new reference,
    // or NULL with an exception set when the instance has no `__dict__` slot.
    let dict = unsafe {
        Bound::from_owned_ptr_or_err(
            obj.py(),
            ffi::PyObject_GenericGetDict(obj.as_ptr(), std::ptr::null_mut()),
        )?
    };
    dict.cast_into::<PyDict>().map_err(Into::into)
}

/// `sys.modules`, as the import system sees it.
pub fn sys_modules(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    // SAFETY: returns a borrowed reference to the interpreter's module dict, or
    // NULL (without an exception) during interpreter shutdown.
    let modules = unsafe { Bound::from_borrowed_ptr_or_opt(py, ffi::PyImport_GetModuleDict()) };
    modules
        .ok_or_else(|| PySystemError::new_err("sys.modules is gone"))?
        .cast_into::<PyDict>()
        .map_err(Into::into)
}

/// A new str of one character that is not CPython's shared object for it
/// (str constructors return that singleton for characters below 256).
pub fn unshared_char(py: Python<'_>, c: char) -> PyResult<Bound<'_, PyString>> {
    let code = c as u32;
    // SAFETY: PyUnicode_New returns a new, uninitialized str of length 1 able
    // to hold characters up to `code` (a valid code point, from a `char`), or
    // NULL with an exception set; it is filled before anyone else sees it.
    unsafe {
        let s = Bound::from_owned_ptr_or_err(py, ffi::PyUnicode_New(1, code as ffi::Py_UCS4))?;
        if ffi::PyUnicode_WriteChar(s.as_ptr(), 0, code as ffi::Py_UCS4) < 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(s.cast_into_unchecked())
    }
}

/// Interns a string in place so that equal names are one object in the
/// pickle's memo whatever their identity in the sender.
pub fn intern(s: Bound<'_, PyAny>) -> Bound<'_, PyAny> {
    if !s.get_type().is(s.py().get_type::<pyo3::types::PyString>()) {
        return s;
    }
    let py = s.py();
    let mut ptr = s.into_ptr();
    // SAFETY: `ptr` is an owned reference to an exact str; InternInPlace may
    // swap it for the interned one, transferring our reference.
    unsafe {
        ffi::PyUnicode_InternInPlace(&raw mut ptr);
        Bound::from_owned_ptr(py, ptr)
    }
}

fn check(py: Python<'_>, rc: c_int) -> PyResult<()> {
    if rc < 0 {
        Err(PyErr::fetch(py))
    } else {
        Ok(())
    }
}

/// `func(*args[skip:])`, without building the shorter tuple.
pub fn call_tail<'py>(
    func: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
    skip: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let len = args.len();
    if skip > len {
        return Err(PySystemError::new_err("call_tail: skip past the end"));
    }
    // SAFETY: a tuple's items are one array of `len` object pointers, which
    // the tuple (borrowed for the whole call) keeps alive; `skip <= len`, so
    // the pointer stays within or one past that array and `len - skip` items
    // follow it. The callee only reads them (no PY_VECTORCALL_ARGUMENTS_OFFSET).
    let result = unsafe {
        let items = (*args.as_ptr().cast::<ffi::PyTupleObject>())
            .ob_item
            .as_ptr()
            .add(skip);
        ffi::PyObject_Vectorcall(func.as_ptr(), items, len - skip, ptr::null_mut())
    };
    // SAFETY: PyObject_Vectorcall returns a new reference, or NULL with an
    // exception set.
    unsafe { Bound::from_owned_ptr_or_err(func.py(), result) }
}

/// How many values of ours a code object can carry ([`code_slot`]).
pub const CODE_SLOTS: usize = 8;

/// The values of ours a code object carries, in its extra data (PEP 523's
/// `co_extra`, meant for this): strong references, released with the code
/// object.
type CodeSlots = [*mut ffi::PyObject; CODE_SLOTS];

/// Frees a code object's [`CodeSlots`]; CPython calls it when the code
/// object is deallocated (the GIL held) or its extra data replaced.
unsafe extern "C" fn free_code_slots(extra: *mut std::ffi::c_void) {
    // SAFETY: `extra` is a `Box<CodeSlots>` that `set_code_slot` leaked into
    // the code object, handed back once, and each non-NULL slot holds a
    // strong reference.
    let slots = unsafe { Box::from_raw(extra.cast::<CodeSlots>()) };
    for object in slots.iter().filter(|object| !object.is_null()) {
        // SAFETY: see above; the GIL is held while a code object is freed.
        unsafe { ffi::Py_DECREF(*object) };
    }
}

/// Our index into every code object's extra data, requested once; None
/// when the interpreter has no index left (then nothing is kept).
fn code_extra_index() -> Option<ffi::Py_ssize_t> {
    static INDEX: std::sync::OnceLock<ffi::Py_ssize_t> = std::sync::OnceLock::new();
    // SAFETY: called with the GIL held (from `code_slot`/`set_code_slot`);
    // the free function is a plain `extern "C"` function of this module.
    let index = *INDEX
        .get_or_init(|| unsafe { ffi::PyUnstable_Eval_RequestCodeExtraIndex(free_code_slots) });
    (index >= 0).then_some(index)
}

/// The slots `code` (an exact code object) carries, or NULL.
fn code_slots(code: &Bound<'_, PyAny>, index: ffi::Py_ssize_t) -> *mut CodeSlots {
    let mut extra: *mut std::ffi::c_void = ptr::null_mut();
    // SAFETY: `code` is an exact code object (checked by the callers) and
    // `index` was handed out by the interpreter; a failure leaves NULL.
    let status = unsafe { ffi::PyUnstable_Code_GetExtra(code.as_ptr(), index, &raw mut extra) };
    if status < 0 {
        // SAFETY: GetExtra failed with an exception set, which is dropped.
        unsafe { ffi::PyErr_Clear() };
        return ptr::null_mut();
    }
    extra.cast()
}

/// Slot `slot` of `code`'s values of ours, if set.
pub fn code_slot<'py>(code: &Bound<'py, PyAny>, slot: usize) -> Option<Bound<'py, PyAny>> {
    if slot >= CODE_SLOTS || !code.is_exact_instance_of::<PyCode>() {
        return None;
    }
    let slots = code_slots(code, code_extra_index()?);
    if slots.is_null() {
        return None;
    }
    // SAFETY: non-NULL extra data at our index is a live `CodeSlots` of this
    // code object (`set_code_slot`), read with the GIL held; a non-NULL slot
    // is a strong reference, borrowed here and turned into a new one.
    unsafe {
        let object = (*slots)[slot];
        (!object.is_null()).then(|| Bound::from_borrowed_ptr(code.py(), object))
    }
}

/// Sets slot `slot` of `code`'s values of ours to `value` (nothing happens
/// for an object that is not exactly a code object).
pub fn set_code_slot(code: &Bound<'_, PyAny>, slot: usize, value: &Bound<'_, PyAny>) {
    let Some(index) = code_extra_index() else {
        return;
    };
    if slot >= CODE_SLOTS || !code.is_exact_instance_of::<PyCode>() {
        return;
    }
    let mut slots = code_slots(code, index);
    if slots.is_null() {
        let fresh: Box<CodeSlots> = Box::new([ptr::null_mut(); CODE_SLOTS]);
        slots = Box::into_raw(fresh);
        // SAFETY: `code` is an exact code object and `index` ours; the code
        // object owns the box from now on and frees it with `free_code_slots`.
        let status = unsafe { ffi::PyUnstable_Code_SetExtra(code.as_ptr(), index, slots.cast()) };
        if status < 0 {
            // SAFETY: SetExtra failed (out of memory) without taking the box.
            unsafe {
                ffi::PyErr_Clear();
                drop(Box::from_raw(slots));
            }
            return;
        }
    }
    // SAFETY: `slots` is this code object's live `CodeSlots`, written with the
    // GIL held; the slot takes a new reference and releases the one it held.
    unsafe {
        let old = std::mem::replace(&mut (*slots)[slot], value.clone().into_ptr());
        ffi::Py_XDECREF(old);
    }
}
