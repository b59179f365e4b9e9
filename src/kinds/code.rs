//! Code objects: the global names they reference (cached per code object)
//! and their reduction to `types.CodeType` arguments, which differ by version.
//!
//! Wire layout: `make_code(*code_args)`, `fields` being the arguments of
//! `types.CodeType` on the sender's version ([`code_fields`]).

use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBytes, PyFrozenSet, PyList, PyModule, PySet, PyString, PyTuple, PyWeakrefReference,
};

use crate::ffi;
use crate::format;
use crate::layout;
use crate::reconstructors::{self, Reconstructor};
use crate::support::weakmap::WeakMap;
use crate::support::{lookup, names, statics};

layout! {
    /// `make_code`'s arguments.
    pub mod code_args {
        /// `(major, minor)` of the CPython that compiled the code: another
        /// minor version refuses it by name.
        VERSION = "version",
        /// The arguments of `types.CodeType` ([`code_fields`](super::code_fields)).
        FIELDS = "fields",
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
    format::export(m, "code_args", &code_args::FIELD_NAMES)?;
    format::export(m, "code_fields_3.9", &code_fields_3_9::FIELD_NAMES)?;
    format::export(m, "code_fields_3.10", &code_fields_3_10::FIELD_NAMES)?;
    format::export(m, "code_fields_3.11", &code_fields_3_11::FIELD_NAMES)
}

/// The CPython minor version code objects are tied to, written into every
/// pickled code object so that a mismatch is reported by name on load.
pub fn python_version(py: Python<'_>) -> PyResult<&Bound<'_, PyTuple>> {
    static VERSION: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
    VERSION
        .get_or_try_init(py, || {
            let v = py.version_info();
            PyTuple::new(py, [v.major, v.minor]).map(Bound::unbind)
        })
        .map(|version| version.bind(py))
}

/// The opcodes that name globals or read the class namespace; None where the
/// running version has no such opcode.
struct NameOps {
    load_global: u8,
    store_global: Option<u8>,
    delete_global: Option<u8>,
    /// 3.12+: reads a mapping (an annotation scope's `__classdict__`), then
    /// the globals.
    load_from_dict_or_globals: Option<u8>,
    /// 3.12+: reads a mapping, then a closure cell.
    load_from_dict_or_deref: Option<u8>,
    extended_arg: u8,
}

fn name_ops(py: Python<'_>) -> PyResult<&'static NameOps> {
    static OPS: PyOnceLock<NameOps> = PyOnceLock::new();
    OPS.get_or_try_init(py, || {
        // A dict up to 3.14, a frozendict from 3.15.
        let opmap = statics::opmap(py)?;
        let op = |name: &str| -> PyResult<Option<u8>> {
            match opmap.get_item(name) {
                Ok(value) => Ok(Some(value.extract()?)),
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(py) => Ok(None),
                Err(e) => Err(e),
            }
        };
        let required = |name: &str| {
            op(name)?.ok_or_else(|| PyValueError::new_err(format!("opcode.opmap lacks {name}")))
        };
        Ok(NameOps {
            load_global: required("LOAD_GLOBAL")?,
            store_global: op("STORE_GLOBAL")?,
            delete_global: op("DELETE_GLOBAL")?,
            load_from_dict_or_globals: op("LOAD_FROM_DICT_OR_GLOBALS")?,
            load_from_dict_or_deref: op("LOAD_FROM_DICT_OR_DEREF")?,
            extended_arg: required("EXTENDED_ARG")?,
        })
    })
}

/// `(opcode, argument)` for each instruction of `bytecode`, extended
/// arguments folded in (inline caches come out as opcode 0 and are harmless).
fn instructions(bytecode: &[u8], extended_arg: u8) -> impl Iterator<Item = (u8, usize)> + '_ {
    let mut extended: usize = 0;
    bytecode.chunks_exact(2).map(move |unit| {
        let (op, arg) = (unit[0], unit[1] as usize | extended);
        extended = if op == extended_arg { arg << 8 } else { 0 };
        (op, arg)
    })
}

/// `co_code` and `co_names`.
fn bytecode_and_names<'py>(
    code: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyTuple>)> {
    let py = code.py();
    Ok((
        code.getattr(intern!(py, "co_code"))?.cast_into()?,
        code.getattr(intern!(py, "co_names"))?.cast_into()?,
    ))
}

/// Names in order of first appearance, each once.
struct UniqueNames<'py> {
    order: Vec<Bound<'py, PyString>>,
    seen: Bound<'py, PySet>,
}

impl<'py> UniqueNames<'py> {
    fn new(py: Python<'py>) -> PyResult<Self> {
        Ok(Self {
            order: Vec::new(),
            seen: PySet::empty(py)?,
        })
    }

    fn push(&mut self, name: Bound<'py, PyString>) -> PyResult<()> {
        if !self.seen.contains(&name)? {
            self.seen.add(&name)?;
            self.order.push(name);
        }
        Ok(())
    }
}

/// Names read, written or deleted as globals by `code`'s own instructions, in
/// order of first use (a deterministic order, unlike a set's).
fn walk_global_ops<'py>(code: &Bound<'py, PyAny>, out: &mut UniqueNames<'py>) -> PyResult<()> {
    let ops = name_ops(code.py())?;
    let (bytecode, names) = bytecode_and_names(code)?;
    let global_ops = [
        Some(ops.load_global),
        ops.store_global,
        ops.delete_global,
        ops.load_from_dict_or_globals,
    ];
    for (op, arg) in instructions(bytecode.as_bytes(), ops.extended_arg) {
        if !global_ops.contains(&Some(op)) {
            continue;
        }
        // From 3.11 the low bit of LOAD_GLOBAL's argument is a "push NULL" flag.
        let index = if cfg!(Py_3_11) && op == ops.load_global {
            arg >> 1
        } else {
            arg
        };
        if let Ok(name) = names.get_item(index) {
            out.push(name.cast_into::<PyString>()?)?;
        }
    }
    Ok(())
}

fn extract_global_names<'py>(code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let py = code.py();
    let mut names = UniqueNames::new(py)?;
    walk_global_ops(code, &mut names)?;
    // A nested `def` or lambda is a code constant; its globals count as ours.
    for constant in nested_codes(code)? {
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

/// The code objects among `code`'s constants (its nested functions and lambdas).
fn nested_codes<'py>(code: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let consts = code
        .getattr(intern!(code.py(), "co_consts"))?
        .cast_into::<PyTuple>()?;
    Ok(consts
        .iter()
        .filter(|c| ffi::as_code(c).is_some())
        .collect())
}

/// Names that `code` and its nested code objects look up in the mapping of
/// a `__classdict__` cell (`LOAD_FROM_DICT_OR_GLOBALS`, `LOAD_FROM_DICT_OR_DEREF`).
fn walk_class_namespace_reads<'py>(
    code: &Bound<'py, PyAny>,
    out: &mut UniqueNames<'py>,
) -> PyResult<()> {
    let py = code.py();
    let ops = name_ops(py)?;
    let (bytecode, names) = bytecode_and_names(code)?;
    for (op, arg) in instructions(bytecode.as_bytes(), ops.extended_arg) {
        let name = if Some(op) == ops.load_from_dict_or_globals {
            names.get_item(arg)?
        } else if Some(op) == ops.load_from_dict_or_deref {
            code.call_method1(intern!(py, "_varname_from_oparg"), (arg,))?
        } else {
            continue;
        };
        out.push(name.cast_into::<PyString>()?)?;
    }
    for constant in nested_codes(code)? {
        walk_class_namespace_reads(&constant, out)?;
    }
    Ok(())
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
                let mut names = UniqueNames::new(py)?;
                walk_class_namespace_reads(code, &mut names)?;
                (index, PyTuple::new(py, names.order)?)
                    .into_pyobject(py)?
                    .into_any()
            }
            None => py.None().into_bound(py),
        };
        remember(code, Derived::ClassNamespace, &found)?;
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
}

const DERIVED: usize = 4;

/// What was derived from one code object, by [`Derived`].
type DerivedValues = [Option<Py<PyAny>>; DERIVED];

/// Code object -> what was derived from it. Python code never runs while
/// the lock is held.
static CACHE: Mutex<Option<WeakMap<DerivedValues>>> = Mutex::new(None);

fn cached<'py>(code: &Bound<'py, PyAny>, what: Derived) -> Option<Bound<'py, PyAny>> {
    let guard = CACHE.lock();
    guard.as_ref()?.get(code)?[what as usize]
        .as_ref()
        .map(|v| v.bind(code.py()).clone())
}

fn remember(code: &Bound<'_, PyAny>, what: Derived, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let weak = PyWeakrefReference::new(code)?.unbind();
    let removed = {
        let mut guard = CACHE.lock();
        let cache = guard.get_or_insert_with(WeakMap::default);
        let (derived, removed) = cache.get_or_insert_with(code, weak, Default::default);
        derived[what as usize] = Some(value.clone().unbind());
        removed
    };
    drop(removed);
    Ok(())
}

/// The global names referenced by `code` and its nested code objects.
pub fn global_names<'py>(code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    if let Some(names) = cached(code, Derived::GlobalNames) {
        return Ok(names.cast_into()?);
    }
    let names = extract_global_names(code)?;
    remember(code, Derived::GlobalNames, names.as_any())?;
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
    remember(code, Derived::MadeAttributes, made.as_any())?;
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

/// A new tuple of the canonical copies of a code object's names (see
/// [`names`](crate::support::names)).
fn canonical_names<'py>(
    code: &Bound<'py, PyAny>,
    attr: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    let tuple = code.getattr(attr)?.cast_into::<PyTuple>()?;
    let items = tuple
        .iter()
        .map(names::canonical)
        .collect::<PyResult<Vec<_>>>()?;
    Ok(PyTuple::new(code.py(), items)?.into_any())
}

/// The arguments of `types.CodeType(...)` for the running version ([`code_fields`]).
fn code_fields_of<'py>(code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    use code_fields as at;
    let py = code.py();
    let get = |name: &Bound<'py, PyString>| code.getattr(name);
    let mut fields: [Option<Bound<'py, PyAny>>; at::LEN] = Default::default();
    fields[at::ARGCOUNT] = Some(get(intern!(py, "co_argcount"))?);
    fields[at::POSONLYARGCOUNT] = Some(get(intern!(py, "co_posonlyargcount"))?);
    fields[at::KWONLYARGCOUNT] = Some(get(intern!(py, "co_kwonlyargcount"))?);
    fields[at::NLOCALS] = Some(get(intern!(py, "co_nlocals"))?);
    fields[at::STACKSIZE] = Some(get(intern!(py, "co_stacksize"))?);
    fields[at::FLAGS] = Some(get(intern!(py, "co_flags"))?);
    fields[at::CODE] = Some(get(intern!(py, "co_code"))?);
    fields[at::CONSTS] =
        Some(deterministic_consts(&get(intern!(py, "co_consts"))?.cast_into()?)?.into_any());
    fields[at::NAMES] = Some(canonical_names(code, intern!(py, "co_names"))?);
    fields[at::VARNAMES] = Some(canonical_names(code, intern!(py, "co_varnames"))?);
    fields[at::FILENAME] = Some(names::canonical(get(intern!(py, "co_filename"))?)?);
    fields[at::NAME] = Some(names::canonical(get(intern!(py, "co_name"))?)?);
    #[cfg(Py_3_11)]
    {
        fields[at::QUALNAME] = Some(names::canonical(get(intern!(py, "co_qualname"))?)?);
        fields[at::EXCEPTIONTABLE] = Some(get(intern!(py, "co_exceptiontable"))?);
    }
    fields[at::FIRSTLINENO] = Some(get(intern!(py, "co_firstlineno"))?);
    #[cfg(Py_3_10)]
    {
        fields[at::LINETABLE] = Some(get(intern!(py, "co_linetable"))?);
    }
    #[cfg(not(Py_3_10))]
    {
        fields[at::LNOTAB] = Some(get(intern!(py, "co_lnotab"))?);
    }
    fields[at::FREEVARS] = Some(canonical_names(code, intern!(py, "co_freevars"))?);
    fields[at::CELLVARS] = Some(canonical_names(code, intern!(py, "co_cellvars"))?);
    format::tuple(py, fields)
}

/// `(make_code, code_args)`, computed once per code object (code is immutable).
pub fn reduce_code<'py>(code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    use code_args as at;
    let py = code.py();
    if let Some(reduced) = cached(code, Derived::Reduction) {
        return Ok(reduced);
    }
    let mut args: [Option<Bound<'py, PyAny>>; at::LEN] = Default::default();
    args[at::VERSION] = Some(python_version(py)?.as_any().clone());
    args[at::FIELDS] = Some(code_fields_of(code)?.into_any());
    let reduced = reconstructors::reduce_to(Reconstructor::MakeCode, format::tuple(py, args)?)?;
    remember(code, Derived::Reduction, &reduced)?;
    Ok(reduced)
}

/// The load side of [`reduce_code`].
#[pyfunction]
pub fn make_code<'py>(
    version: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = args.py();
    let here = python_version(py)?;
    if !version.eq(here)? {
        return Err(statics::UnpicklingError::new_err(format!(
            "this pickle holds Python code compiled by CPython {}; it cannot be loaded by CPython {}.{}: \
             functions and classes pickled by value need the same minor version on both sides",
            describe_version(version),
            py.version_info().major,
            py.version_info().minor,
        )));
    }
    // Wrong arity or types are left to `types.CodeType` to report.
    let bytecode = args.get_item(code_fields::CODE).ok();
    if let Some(bytecode) = bytecode.as_ref().and_then(|b| b.cast::<PyBytes>().ok()) {
        check_bytecode(bytecode.as_bytes(), opcode_table(py)?)?;
    }
    statics::code_type(py)?.call1(args)
}

/// What CPython knows of each opcode, read from the `opcode` module.
struct OpcodeTable {
    /// Opcodes a code object's `co_code` can hold: neither specialised nor
    /// instrumented, which CPython resolves through data a new code object lacks.
    base: [bool; 256],
    /// Inline cache units following each opcode (3.11 and later).
    caches: [u8; 256],
}

fn opcode_table(py: Python<'_>) -> PyResult<&'static OpcodeTable> {
    static TABLE: PyOnceLock<OpcodeTable> = PyOnceLock::new();
    TABLE.get_or_try_init(py, || {
        let opcode = py.import("opcode")?;
        let opmap = statics::opmap(py)?;
        let opcode_module = opcode.clone().into_any();
        let first_instrumented: usize =
            match lookup::getattr_opt(&opcode_module, intern!(py, "MIN_INSTRUMENTED_OPCODE"))? {
                Some(value) => value.extract()?,
                None => 256,
            };
        let mut table = OpcodeTable {
            base: [false; 256],
            caches: [0; 256],
        };
        for (name, value) in mapping_items(opmap)? {
            let value: usize = value.extract()?;
            if value < first_instrumented && !name.eq("ENTER_EXECUTOR")? {
                table.base[value] = true;
            }
        }
        // A list indexed by opcode up to 3.12, a mapping keyed by name from
        // 3.13 (a dict, then a frozendict from 3.15).
        if let Some(entries) =
            lookup::getattr_opt(&opcode_module, intern!(py, "_inline_cache_entries"))?
        {
            if entries.is_instance_of::<PyList>() {
                for (value, count) in entries.try_iter()?.enumerate().take(256) {
                    table.caches[value] = count?.extract()?;
                }
            } else {
                for (name, count) in mapping_items(&entries)? {
                    if let Some(value) = lookup::mapping_get(opmap, &name)? {
                        table.caches[value.extract::<usize>()?] = count.extract()?;
                    }
                }
            }
        }
        Ok(table)
    })
}

/// `(key, value)` pairs of any mapping: a dict, or a frozendict (3.15) where
/// CPython now hands those out.
fn mapping_items<'py>(
    mapping: &Bound<'py, PyAny>,
) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    mapping
        .call_method0(intern!(mapping.py(), "items"))?
        .try_iter()?
        .map(|item| item?.extract())
        .collect()
}

/// Refuses bytecode that CPython could not have compiled: from 3.11 making a
/// code object, or reading its `co_code`, walks the instructions trusting
/// each opcode's count of cache units, so an unknown opcode or caches
/// running past the end corrupt memory. Running the code is another matter:
/// loading a pickle runs whatever it ships, by design.
fn check_bytecode(bytecode: &[u8], table: &OpcodeTable) -> PyResult<()> {
    let refuse = |what: String| {
        Err(PyValueError::new_err(format!(
            "make_code: bytecode that this CPython cannot have compiled: {what}"
        )))
    };
    if bytecode.len() % 2 != 0 {
        return refuse(format!("odd length {}", bytecode.len()));
    }
    let mut at = 0;
    while at < bytecode.len() {
        let op = bytecode[at];
        if !table.base[op as usize] {
            return refuse(format!("opcode {op} at offset {at}"));
        }
        let next = at + 2 * (1 + table.caches[op as usize] as usize);
        match bytecode.get(at + 2..next) {
            None => return refuse(format!("opcode {op} at offset {at} lacks its cache units")),
            Some(cache) if cache.iter().any(|byte| *byte != 0) => {
                return refuse(format!("non-zero cache after opcode {op} at offset {at}"))
            }
            Some(_) => at = next,
        }
    }
    Ok(())
}

fn describe_version(version: &Bound<'_, PyAny>) -> String {
    match version.extract::<(u8, u8)>() {
        Ok((major, minor)) => format!("{major}.{minor}"),
        Err(_) => format!("{version}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{check_bytecode, OpcodeTable};

    /// Opcode 1 takes one inline cache unit, opcode 2 none; 3 is unknown.
    fn table() -> OpcodeTable {
        let mut table = OpcodeTable {
            base: [false; 256],
            caches: [0; 256],
        };
        table.base[1] = true;
        table.base[2] = true;
        table.caches[1] = 1;
        table
    }

    #[test]
    fn bytecode_a_compiler_could_write_passes() {
        assert!(check_bytecode(&[], &table()).is_ok());
        assert!(check_bytecode(&[2, 7, 1, 0, 0, 0, 2, 0], &table()).is_ok());
    }

    #[test]
    fn unknown_opcodes_and_odd_lengths_are_refused() {
        assert!(check_bytecode(&[3, 0], &table()).is_err());
        assert!(check_bytecode(&[2, 0, 2], &table()).is_err());
    }

    #[test]
    fn caches_past_the_end_or_not_zero_are_refused() {
        assert!(check_bytecode(&[2, 0, 1, 0], &table()).is_err());
        assert!(check_bytecode(&[1, 0, 9, 0], &table()).is_err());
    }
}
