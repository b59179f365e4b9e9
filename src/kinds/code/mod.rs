//! Code objects: the global names they reference (cached per code object,
//! read from the bytecode in `bytecode`), and their reduction.
//!
//! Wire layout: `make_code(*code_args)`: a blob (`blob`: the numbers and
//! byte tables, with the format and CPython version) and a tuple of the
//! objects (constants, then names, variable names, free and cell
//! variables, file name, name and qualified name). Loading rebuilds
//! `types.CodeType(*code_fields)` of the running version from them.

mod blob;
mod bytecode;
mod made;

use std::sync::OnceLock;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBytes, PyCode, PyDict, PyFrozenSet, PyInt, PyList, PyModule, PyString, PyTuple,
};

use crate::ffi;
use crate::format;
use crate::layout;
use crate::reconstructors::{self, Reconstructor};
use crate::support::{names, statics};

layout! {
    /// `make_code`'s arguments.
    pub mod code_args {
        /// Bytes: the format, the CPython version, the numbers and byte
        /// tables (see `blob`).
        BLOB = "blob",
        /// The constants and names, as objects (see `blob::code_counts`).
        OBJECTS = "objects",
    }
}

layout! {
    /// `types.CodeType`'s arguments on 3.11 and later.
    pub mod code_fields_3_11 {
        ARGCOUNT = "argcount",
        POSONLYARGCOUNT = "posonlyargcount",
        KWONLYARGCOUNT = "kwonlyargcount",
        NLOCALS = "nlocals",
        STACKSIZE = "stacksize",
        FLAGS = "flags",
        CODE = "code",
        CONSTS = "consts",
        NAMES = "names",
        VARNAMES = "varnames",
        FILENAME = "filename",
        NAME = "name",
        QUALNAME = "qualname",
        FIRSTLINENO = "firstlineno",
        LINETABLE = "linetable",
        EXCEPTIONTABLE = "exceptiontable",
        FREEVARS = "freevars",
        CELLVARS = "cellvars",
    }
}

layout! {
    /// `types.CodeType`'s arguments on 3.10.
    pub mod code_fields_3_10 {
        ARGCOUNT = "argcount",
        POSONLYARGCOUNT = "posonlyargcount",
        KWONLYARGCOUNT = "kwonlyargcount",
        NLOCALS = "nlocals",
        STACKSIZE = "stacksize",
        FLAGS = "flags",
        CODE = "code",
        CONSTS = "consts",
        NAMES = "names",
        VARNAMES = "varnames",
        FILENAME = "filename",
        NAME = "name",
        FIRSTLINENO = "firstlineno",
        LINETABLE = "linetable",
        FREEVARS = "freevars",
        CELLVARS = "cellvars",
    }
}

layout! {
    /// `types.CodeType`'s arguments on 3.9.
    pub mod code_fields_3_9 {
        ARGCOUNT = "argcount",
        POSONLYARGCOUNT = "posonlyargcount",
        KWONLYARGCOUNT = "kwonlyargcount",
        NLOCALS = "nlocals",
        STACKSIZE = "stacksize",
        FLAGS = "flags",
        CODE = "code",
        CONSTS = "consts",
        NAMES = "names",
        VARNAMES = "varnames",
        FILENAME = "filename",
        NAME = "name",
        FIRSTLINENO = "firstlineno",
        LNOTAB = "lnotab",
        FREEVARS = "freevars",
        CELLVARS = "cellvars",
    }
}

#[cfg(all(Py_3_10, not(Py_3_11)))]
pub use code_fields_3_10 as code_fields;
/// `types.CodeType`'s arguments on the running version.
#[cfg(Py_3_11)]
pub use code_fields_3_11 as code_fields;
#[cfg(not(Py_3_10))]
pub use code_fields_3_9 as code_fields;

/// Adds `make_code` and the code layouts (of every version: the inspector
/// reads pickles of other versions) to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    reconstructors::add(m, Reconstructor::MakeCode, wrap_pyfunction!(make_code, m)?)?;
    m.add_class::<SortedFrozenSet>()?;
    m.add_function(wrap_pyfunction!(code_fields_of_blob, m)?)?;
    format::export(m, "code_args", &code_args::FIELD_NAMES)?;
    format::export(m, "code_ints", &blob::code_ints::FIELD_NAMES)?;
    format::export(m, "code_counts", &blob::code_counts::FIELD_NAMES)?;
    format::export(m, "code_fields_3.9", &code_fields_3_9::FIELD_NAMES)?;
    format::export(m, "code_fields_3.10", &code_fields_3_10::FIELD_NAMES)?;
    format::export(m, "code_fields_3.11", &code_fields_3_11::FIELD_NAMES)
}

/// The running CPython's `(major, minor)`, which code objects are tied to
/// (`Python::version_info` formats and parses a string at every call).
fn running_version(py: Python<'_>) -> (u8, u8) {
    static VERSION: OnceLock<(u8, u8)> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let v = py.version_info();
        (v.major, v.minor)
    })
}

/// [`running_version`] as a tuple (`_native.PYTHON_VERSION`).
pub fn python_version(py: Python<'_>) -> PyResult<&Bound<'_, PyTuple>> {
    static VERSION: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
    VERSION
        .get_or_try_init(py, || {
            let (major, minor) = running_version(py);
            PyTuple::new(py, [major, minor]).map(Bound::unbind)
        })
        .map(|version| version.bind(py))
}

fn extract_global_names<'py>(code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let py = code.py();
    let mut names = bytecode::UniqueNames::new(py)?;
    bytecode::walk_global_ops(code, &mut names)?;
    // A nested `def` or lambda is a code constant; its globals count as ours.
    for constant in bytecode::nested_codes(code)? {
        for name in global_names(&constant)?.iter() {
            names.push(name.cast_into::<PyString>()?)?;
        }
    }
    // Canonical (see `support::names`): they are written as referenced globals' names.
    let names = names
        .order
        .into_iter()
        .map(|name| names::canonical(name.into_any()))
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(py, names)
}

/// For an annotation scope (3.12+: `__annotate__`, a type parameter's bound,
/// a type alias's value, in a class body), `(i, names)`: its closure's cell
/// `i` is `__classdict__`, which holds the class's whole namespace, and
/// `names` are the ones it reads from it. None for any other code.
pub fn class_namespace_reads<'py>(
    code: &Bound<'py, PyAny>,
) -> PyResult<Option<(usize, Bound<'py, PyTuple>)>> {
    let py = code.py();
    let found = if let Some(found) = cached(code, Derived::ClassNamespace) {
        found
    } else {
        let freevars = code
            .getattr(intern!(py, "co_freevars"))?
            .cast_into::<PyTuple>()?;
        let mut index = None;
        for (i, name) in freevars.iter().enumerate() {
            if name.eq(intern!(py, "__classdict__"))? {
                index = Some(i);
                break;
            }
        }
        let found = match index {
            Some(index) => {
                let mut names = bytecode::UniqueNames::new(py)?;
                bytecode::walk_class_namespace_reads(code, &mut names)?;
                (index, PyTuple::new(py, names.order)?)
                    .into_pyobject(py)?
                    .into_any()
            }
            None => py.None().into_bound(py),
        };
        remember(code, Derived::ClassNamespace, &found);
        found
    };
    if found.is_none() {
        return Ok(None);
    }
    Ok(Some(found.extract()?))
}

/// What is derived from a code object, computed once per code object.
#[derive(Clone, Copy)]
enum Derived {
    GlobalNames = 0,
    Reduction = 1,
    MadeAttributes = 2,
    ClassNamespace = 3,
    /// None when the code object is its own canonical one (a code object
    /// must not keep itself alive).
    Canonical = 4,
}

const DERIVED: usize = 5;

const _: () = assert!(DERIVED <= ffi::CODE_SLOTS, "a code object carries them");

/// What was derived from `code`, if kept: code objects carry it (`ffi::code_slot`).
fn cached<'py>(code: &Bound<'py, PyAny>, what: Derived) -> Option<Bound<'py, PyAny>> {
    ffi::code_slot(code, what as usize)
}

fn remember(code: &Bound<'_, PyAny>, what: Derived, value: &Bound<'_, PyAny>) {
    ffi::set_code_slot(code, what as usize, value);
}

/// The global names referenced by `code` and its nested code objects.
pub fn global_names<'py>(code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    if let Some(names) = cached(code, Derived::GlobalNames) {
        return Ok(names.cast_into()?);
    }
    let names = extract_global_names(code)?;
    remember(code, Derived::GlobalNames, names.as_any());
    Ok(names)
}

/// `(name, qualname, doc)` that a function made from `code` gets: its
/// `co_name`, its `co_qualname` (3.11+; the name before), and its first
/// constant when that is a str (the docstring), else None.
pub fn made_attributes<'py>(code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    if let Some(made) = cached(code, Derived::MadeAttributes) {
        return Ok(made.cast_into()?);
    }
    let py = code.py();
    let name = code.getattr(intern!(py, "co_name"))?;
    let qualname = if cfg!(Py_3_11) {
        code.getattr(intern!(py, "co_qualname"))?
    } else {
        name.clone()
    };
    let consts = code
        .getattr(intern!(py, "co_consts"))?
        .cast_into::<PyTuple>()?;
    let doc = match consts.get_item(0) {
        Ok(first) if first.is_instance_of::<PyString>() && has_docstring(code)? => first,
        _ => py.None().into_bound(py),
    };
    let made = PyTuple::new(py, [name, qualname, doc])?;
    remember(code, Derived::MadeAttributes, made.as_any());
    Ok(made)
}

/// Whether a function made from `code` takes its first constant as its
/// docstring: from 3.14 only when the compiler says so (`CO_HAS_DOCSTRING`),
/// before whenever that constant is a str.
fn has_docstring(code: &Bound<'_, PyAny>) -> PyResult<bool> {
    const CO_HAS_DOCSTRING: u32 = 0x400_0000;
    if !cfg!(Py_3_14) {
        return Ok(true);
    }
    let flags: u32 = code.getattr(intern!(code.py(), "co_flags"))?.extract()?;
    Ok(flags & CO_HAS_DOCSTRING != 0)
}

/// A frozenset constant pickled with its items sorted, so that a code object
/// holding `x in {"a", "b"}` pickles to the same bytes under any hash seed.
#[pyclass(frozen, module = "cloudpickle_rs._native")]
pub struct SortedFrozenSet {
    items: Py<PyList>,
}

#[pymethods]
impl SortedFrozenSet {
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(
            py,
            [
                py.get_type::<PyFrozenSet>().into_any(),
                PyTuple::new(py, [self.items.bind(py)])?.into_any(),
            ],
        )
    }
}

fn sorted_frozenset<'py>(set: &Bound<'py, PyFrozenSet>) -> PyResult<Bound<'py, PyAny>> {
    let py = set.py();
    let mut keyed = Vec::with_capacity(set.len());
    for item in set.iter() {
        let key = (
            item.get_type().qualname()?.to_string(),
            item.repr()?.to_string(),
        );
        keyed.push((key, item));
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let items = keyed
        .into_iter()
        .map(|(_, item)| deterministic_const(item))
        .collect::<PyResult<Vec<_>>>()?;
    let items = PyList::new(py, items)?.unbind();
    Ok(Bound::new(py, SortedFrozenSet { items })?.into_any())
}

/// A code object's constant as it travels: a frozenset as its sorted
/// stand-in, a name-like str as its canonical copy (CPython interns those
/// in every new code object), a tuple with its items treated alike.
fn deterministic_const(constant: Bound<'_, PyAny>) -> PyResult<Bound<'_, PyAny>> {
    if let Ok(text) = constant.cast_exact::<PyString>() {
        if names::is_name_like(text) {
            return names::canonical(constant);
        }
    } else if let Ok(tuple) = constant.cast_exact::<PyTuple>() {
        return Ok(deterministic_consts(tuple)?.into_any());
    } else if let Ok(set) = constant.cast::<PyFrozenSet>() {
        return sorted_frozenset(set);
    } else if constant.is_exact_instance_of::<PyCode>() {
        return canonical(&constant);
    }
    Ok(constant)
}

/// [`deterministic_const`] of each item of a tuple of constants.
fn deterministic_consts<'py>(consts: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyTuple>> {
    let items = consts
        .iter()
        .map(deterministic_const)
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(consts.py(), items)
}

/// `code.co_<field>`, for a field named as in the blob's layouts.
fn co_field<'py>(code: &Bound<'py, PyAny>, field: &str) -> PyResult<Bound<'py, PyAny>> {
    code.getattr(PyString::intern(code.py(), &format!("co_{field}")))
}

/// `(blob, objects)`, the arguments of `make_code` for `code`.
fn encode_code<'py>(code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    use blob::{code_counts as count, code_ints as int};
    let py = code.py();
    let version = running_version(py);
    let mut ints = [0; int::LEN];
    for (value, name) in ints.iter_mut().zip(int::FIELD_NAMES) {
        *value = co_field(code, name)?.extract()?;
    }
    let owned = blob::table_names(version)
        .iter()
        .map(|name| Ok(co_field(code, name)?.cast_into::<PyBytes>()?))
        .collect::<PyResult<Vec<_>>>()?;
    let mut tables: [&[u8]; blob::MAX_TABLES] = [&[]; blob::MAX_TABLES];
    for (table, bytes) in tables.iter_mut().zip(&owned) {
        *table = bytes.as_bytes();
    }
    let consts = deterministic_consts(&code.getattr(intern!(py, "co_consts"))?.cast_into()?)?;
    let mut objects: Vec<Bound<'py, PyAny>> = consts.iter().collect();
    let mut counts = [0; count::LEN];
    counts[count::CONSTS] = objects.len();
    for (i, name) in count::FIELD_NAMES.iter().enumerate().skip(1) {
        let run = co_field(code, name)?.cast_into::<PyTuple>()?;
        counts[i] = run.len();
        for item in run.iter() {
            objects.push(names::canonical(item)?);
        }
    }
    for name in blob::trailing_names(version) {
        objects.push(names::canonical(co_field(code, name)?)?);
    }
    let encoded = blob::Blob {
        format: format::VERSION,
        version,
        ints,
        counts,
        tables,
    }
    .encode();
    let mut args: [Option<Bound<'py, PyAny>>; code_args::LEN] = Default::default();
    args[code_args::BLOB] = Some(made::interned_blob(py, &encoded).into_any());
    args[code_args::OBJECTS] = Some(PyTuple::new(py, objects)?.into_any());
    format::tuple(py, args)
}

/// `make_code(*code_args)` of the [`canonical`] code object for `code`.
pub fn reduce_code<'py>(code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    reconstructors::numbered_if_first(Reconstructor::MakeCode, reduction(&canonical(code)?)?)
}

/// `make_code(*code_args)` through its stand-in, computed once per code
/// object (code is immutable).
fn reduction<'py>(code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if let Some(reduced) = cached(code, Derived::Reduction) {
        return Ok(reduced);
    }
    let reduced = reconstructors::reduce_to_stand_in(Reconstructor::MakeCode, encode_code(code)?)?;
    remember(code, Derived::Reduction, &reduced);
    Ok(reduced)
}

/// The code object pickles write in place of `code`: the first one seen
/// (pickled or loaded) with the same blob and objects. A receiver makes
/// one code object of equal ones (`made`), so a sender writing them as one
/// gives the same bytes before and after a round trip, and a smaller pickle.
pub fn canonical<'py>(code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if let Some(found) = cached(code, Derived::Canonical) {
        return Ok(if found.is_none() { code.clone() } else { found });
    }
    let args = reduction(code)?.get_item(1)?.cast_into::<PyTuple>()?;
    let blob = args.get_item(code_args::BLOB)?.cast_into::<PyBytes>()?;
    let objects = args.get_item(code_args::OBJECTS)?.cast_into::<PyTuple>()?;
    let found = made::canonical(blob.as_bytes(), &objects, code)?;
    let kept = if found.is(code) {
        code.py().None().into_bound(code.py())
    } else {
        found.clone()
    };
    remember(code, Derived::Canonical, &kept);
    Ok(found)
}

/// The most names that end the objects beside a blob (`blob::trailing_names`).
const MAX_TRAILING: usize = 3;

/// A blob read with the objects beside it: every field by its name.
struct Decoded<'py> {
    version: (u8, u8),
    ints: [i64; blob::code_ints::LEN],
    /// By `blob::table_names(version)`.
    tables: [Option<Bound<'py, PyBytes>>; blob::MAX_TABLES],
    /// By `blob::code_counts`.
    runs: [Option<Bound<'py, PyTuple>>; blob::code_counts::LEN],
    /// By `blob::trailing_names(version)`.
    trailing: [Option<Bound<'py, PyAny>>; MAX_TRAILING],
}

fn corrupted(what: &str) -> PyErr {
    PyValueError::new_err(format!("make_code: a corrupted code object: {what}"))
}

/// Decodes `blob_bytes` with its `objects`; refuses another format version.
fn decode<'py>(
    blob_bytes: &Bound<'py, PyBytes>,
    objects: &Bound<'py, PyTuple>,
) -> PyResult<Decoded<'py>> {
    let py = blob_bytes.py();
    let found = blob::Blob::decode(blob_bytes.as_bytes()).map_err(|e| corrupted(&e))?;
    format::check_version(found.format)?;
    if objects.len() != found.objects() {
        return Err(corrupted(&format!(
            "{} objects for a blob that lists {}",
            objects.len(),
            found.objects()
        )));
    }
    let mut decoded = Decoded {
        version: found.version,
        ints: found.ints,
        tables: Default::default(),
        runs: Default::default(),
        trailing: Default::default(),
    };
    let tables = blob::table_names(found.version).len();
    for (made, table) in decoded.tables.iter_mut().zip(&found.tables[..tables]) {
        *made = Some(PyBytes::new(py, table));
    }
    let mut at = 0;
    for (run, &count) in decoded.runs.iter_mut().zip(&found.counts) {
        *run = Some(objects.get_slice(at, at + count));
        at += count;
    }
    for (name, i) in decoded.trailing.iter_mut().zip(at..objects.len()) {
        *name = Some(objects.get_item(i)?);
    }
    Ok(decoded)
}

impl<'py> Decoded<'py> {
    /// The arguments of `types.CodeType` on this CPython ([`code_fields`]).
    fn code_type_args(self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        use blob::code_ints as int;
        use code_fields as at;
        let mut fields: [Option<Bound<'py, PyAny>>; at::LEN] = Default::default();
        let int = |i: usize| Some(PyInt::new(py, self.ints[i]).into_any());
        fields[at::ARGCOUNT] = int(int::ARGCOUNT);
        fields[at::POSONLYARGCOUNT] = int(int::POSONLYARGCOUNT);
        fields[at::KWONLYARGCOUNT] = int(int::KWONLYARGCOUNT);
        fields[at::NLOCALS] = int(int::NLOCALS);
        fields[at::STACKSIZE] = int(int::STACKSIZE);
        fields[at::FLAGS] = int(int::FLAGS);
        fields[at::FIRSTLINENO] = int(int::FIRSTLINENO);
        let [code, line_table, exception_table] = self.tables.map(|t| t.map(Bound::into_any));
        fields[at::CODE] = code;
        #[cfg(Py_3_10)]
        {
            fields[at::LINETABLE] = line_table;
        }
        #[cfg(not(Py_3_10))]
        {
            fields[at::LNOTAB] = line_table;
        }
        let [consts, names, varnames, freevars, cellvars] =
            self.runs.map(|run| run.map(Bound::into_any));
        fields[at::CONSTS] = consts;
        fields[at::NAMES] = names;
        fields[at::VARNAMES] = varnames;
        fields[at::FREEVARS] = freevars;
        fields[at::CELLVARS] = cellvars;
        let [filename, name, qualname] = self.trailing;
        fields[at::FILENAME] = filename;
        fields[at::NAME] = name;
        #[cfg(Py_3_11)]
        {
            fields[at::EXCEPTIONTABLE] = exception_table;
            fields[at::QUALNAME] = qualname;
        }
        #[cfg(not(Py_3_11))]
        let _ = (exception_table, qualname);
        format::tuple(py, fields)
    }
}

/// The load side of [`reduce_code`]: refuses a blob of another format or
/// CPython minor version, and bytecode this CPython cannot have compiled;
/// wrong types are left to `types.CodeType` to report. A code object made
/// from the same blob and objects before is reused (`made`).
#[pyfunction]
pub fn make_code<'py>(
    blob: &Bound<'py, PyBytes>,
    objects: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = blob.py();
    let (found, digest) = made::find(blob.as_bytes(), objects)?;
    if let Some(code) = found {
        return Ok(code);
    }
    let decoded = decode(blob, objects)?;
    let here = running_version(py);
    if decoded.version != here {
        return Err(statics::UnpicklingError::new_err(format!(
            "this pickle holds Python code compiled by CPython {}.{}; it cannot be loaded by CPython {}.{}: \
             functions and classes pickled by value need the same minor version on both sides",
            decoded.version.0, decoded.version.1, here.0, here.1,
        )));
    }
    let Some(bytecode) = &decoded.tables[0] else {
        return Err(corrupted("it has no bytecode"));
    };
    bytecode::check(py, bytecode.as_bytes())?;
    let code = statics::code_type(py)?.call1(decoded.code_type_args(py)?)?;
    if let Some(digest) = digest {
        made::keep(digest, blob.as_bytes(), objects, &code);
    }
    Ok(code)
}

/// `_native._code_fields(blob, objects)`: what a pickled code object holds,
/// by field name (and its `format` and CPython `version`), whatever the
/// version: the inspector's view. Decoding runs no code of the pickle.
#[pyfunction]
#[pyo3(name = "_code_fields")]
pub fn code_fields_of_blob<'py>(
    blob: &Bound<'py, PyBytes>,
    objects: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyDict>> {
    let py = blob.py();
    let decoded = decode(blob, objects)?;
    let fields = PyDict::new(py);
    fields.set_item("format", format::VERSION)?;
    fields.set_item("version", decoded.version)?;
    for (name, value) in blob::code_ints::FIELD_NAMES.iter().zip(decoded.ints) {
        fields.set_item(name, value)?;
    }
    for (name, table) in blob::table_names(decoded.version)
        .iter()
        .zip(decoded.tables)
    {
        fields.set_item(name, table)?;
    }
    for (name, run) in blob::code_counts::FIELD_NAMES.iter().zip(decoded.runs) {
        fields.set_item(name, run)?;
    }
    for (name, value) in blob::trailing_names(decoded.version)
        .iter()
        .zip(decoded.trailing)
    {
        fields.set_item(name, value)?;
    }
    Ok(fields)
}
