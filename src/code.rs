//! Code objects: the global names they reference (cached per code object)
//! and their reduction to `types.CodeType` arguments, which differ by version.

use ahash::AHashMap;
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyFrozenSet, PyList, PyString, PyTuple, PyWeakrefReference};

use crate::ffi;
use crate::reconstruct::Reconstructors;
use crate::statics;

/// The CPython minor version code objects are tied to, written into every
/// pickled code object so that a mismatch is reported by name on load.
pub fn python_version(py: Python<'_>) -> &Bound<'_, PyTuple> {
    static VERSION: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
    VERSION
        .get_or_init(py, || {
            let v = py.version_info();
            PyTuple::new(py, [v.major, v.minor])
                .expect("small tuple")
                .unbind()
        })
        .bind(py)
}

struct GlobalOps {
    load: u8,
    store: u8,
    delete: u8,
    extended_arg: u8,
}

fn global_ops(py: Python<'_>) -> PyResult<&'static GlobalOps> {
    static OPS: PyOnceLock<GlobalOps> = PyOnceLock::new();
    OPS.get_or_try_init(py, || {
        let opmap = statics::opmap(py)?;
        let op = |name: &str| -> PyResult<u8> { opmap.get_item(name)?.extract() };
        Ok(GlobalOps {
            load: op("LOAD_GLOBAL")?,
            store: op("STORE_GLOBAL")?,
            delete: op("DELETE_GLOBAL")?,
            extended_arg: op("EXTENDED_ARG")?,
        })
    })
}

/// Names read, written or deleted as globals by `code`'s own instructions, in
/// order of first use (a deterministic order, unlike a set's).
fn walk_global_ops<'py>(
    code: &Bound<'py, PyAny>,
    out: &mut Vec<Bound<'py, PyString>>,
) -> PyResult<()> {
    let py = code.py();
    let ops = global_ops(py)?;
    let bytecode = code
        .getattr(intern!(py, "co_code"))?
        .cast_into::<PyBytes>()?;
    let names = code
        .getattr(intern!(py, "co_names"))?
        .cast_into::<PyTuple>()?;
    let mut extended: usize = 0;
    for unit in bytecode.as_bytes().chunks_exact(2) {
        let (op, arg) = (unit[0], unit[1] as usize | extended);
        extended = if op == ops.extended_arg { arg << 8 } else { 0 };
        if op != ops.load && op != ops.store && op != ops.delete {
            continue;
        }
        // From 3.11 the low bit of LOAD_GLOBAL's argument is a "push NULL" flag.
        let index = if cfg!(Py_3_11) && op == ops.load {
            arg >> 1
        } else {
            arg
        };
        if let Ok(name) = names.get_item(index) {
            let name = name.cast_into::<PyString>()?;
            if !out.iter().any(|seen| seen.is(&name)) {
                out.push(name);
            }
        }
    }
    Ok(())
}

fn extract_global_names<'py>(code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let py = code.py();
    let mut names = Vec::new();
    walk_global_ops(code, &mut names)?;
    // A nested `def` or lambda is a code constant; its globals count as ours.
    for constant in code
        .getattr(intern!(py, "co_consts"))?
        .cast_into::<PyTuple>()?
        .iter()
    {
        if ffi::is_code(&constant) {
            for name in global_names(&constant)?.iter() {
                let name = name.cast_into::<PyString>()?;
                if !names
                    .iter()
                    .any(|seen| PyAnyMethods::eq(seen.as_any(), &name).unwrap_or(false))
                {
                    names.push(name);
                }
            }
        }
    }
    PyTuple::new(py, names)
}

/// What is derived from a code object, computed once per code object.
#[derive(Clone, Copy)]
enum Derived {
    GlobalNames = 0,
    Reduction = 1,
    MadeAttributes = 2,
}

struct CacheEntry {
    code: Py<PyWeakrefReference>,
    derived: [Option<Py<PyAny>>; 3],
}

/// Code object address -> what was derived from it. The weak reference tells
/// a live entry from one whose code object died and whose address was reused.
/// Python code never runs while the lock is held.
static CACHE: Mutex<Option<AHashMap<usize, CacheEntry>>> = Mutex::new(None);
static PRUNE_AT: Mutex<usize> = Mutex::new(1024);

fn cached<'py>(code: &Bound<'py, PyAny>, what: Derived) -> Option<Bound<'py, PyAny>> {
    let py = code.py();
    let guard = CACHE.lock();
    let entry = guard.as_ref()?.get(&(code.as_ptr() as usize))?;
    if !entry
        .code
        .bind(py)
        .upgrade()
        .is_some_and(|live| live.is(code))
    {
        return None;
    }
    entry.derived[what as usize]
        .as_ref()
        .map(|v| v.bind(py).clone())
}

fn remember(code: &Bound<'_, PyAny>, what: Derived, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = code.py();
    let weak = PyWeakrefReference::new(code)?.unbind();
    let mut stale = Vec::new();
    {
        let mut guard = CACHE.lock();
        let cache = guard.get_or_insert_with(AHashMap::new);
        let key = code.as_ptr() as usize;
        let entry = cache.entry(key).or_insert_with(|| CacheEntry {
            code: weak.clone_ref(py),
            derived: [None, None, None],
        });
        if !entry
            .code
            .bind(py)
            .upgrade()
            .is_some_and(|live| live.is(code))
        {
            stale.push(std::mem::replace(
                entry,
                CacheEntry {
                    code: weak,
                    derived: [None, None, None],
                },
            ));
        }
        entry.derived[what as usize] = Some(value.clone().unbind());
        let mut prune_at = PRUNE_AT.lock();
        if cache.len() >= *prune_at {
            let dead: Vec<usize> = cache
                .iter()
                .filter(|(_, e)| e.code.bind(py).upgrade().is_none())
                .map(|(k, _)| *k)
                .collect();
            stale.extend(dead.into_iter().filter_map(|k| cache.remove(&k)));
            *prune_at = (cache.len() * 2).max(1024);
        }
    }
    // Released outside the lock: dropping the last reference to a value may free objects.
    drop(stale);
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
        Ok(first) if first.is_instance_of::<PyString>() => first,
        _ => py.None().into_bound(py),
    };
    let made = PyTuple::new(py, [name, qualname, doc])?;
    remember(code, Derived::MadeAttributes, made.as_any())?;
    Ok(made)
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
    let items = PyList::new(py, keyed.into_iter().map(|(_, item)| item))?.unbind();
    Ok(Bound::new(py, SortedFrozenSet { items })?.into_any())
}

/// `co_consts` with frozensets replaced by their sorted stand-ins.
fn deterministic_consts<'py>(consts: Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyTuple>> {
    if !consts.iter().any(|c| c.is_instance_of::<PyFrozenSet>()) {
        return Ok(consts);
    }
    let items = consts
        .iter()
        .map(|c| match c.cast::<PyFrozenSet>() {
            Ok(set) => sorted_frozenset(set),
            Err(_) => Ok(c.clone()),
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(consts.py(), items)
}

/// A new tuple of interned strings: identity inside a code object's name
/// tuples then never depends on how the sender happened to build them.
fn interned_tuple<'py>(
    code: &Bound<'py, PyAny>,
    attr: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    let tuple = code.getattr(attr)?.cast_into::<PyTuple>()?;
    Ok(PyTuple::new(code.py(), tuple.iter().map(ffi::intern))?.into_any())
}

/// The arguments of `types.CodeType(...)` for the running version.
fn code_args<'py>(code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let py = code.py();
    let get = |name: &Bound<'py, PyString>| code.getattr(name);
    let consts = deterministic_consts(get(intern!(py, "co_consts"))?.cast_into()?)?.into_any();
    let mut args = vec![
        get(intern!(py, "co_argcount"))?,
        get(intern!(py, "co_posonlyargcount"))?,
        get(intern!(py, "co_kwonlyargcount"))?,
        get(intern!(py, "co_nlocals"))?,
        get(intern!(py, "co_stacksize"))?,
        get(intern!(py, "co_flags"))?,
        get(intern!(py, "co_code"))?,
        consts,
        interned_tuple(code, intern!(py, "co_names"))?,
        interned_tuple(code, intern!(py, "co_varnames"))?,
        ffi::intern(get(intern!(py, "co_filename"))?),
        ffi::intern(get(intern!(py, "co_name"))?),
    ];
    #[cfg(Py_3_11)]
    args.push(ffi::intern(get(intern!(py, "co_qualname"))?));
    args.push(get(intern!(py, "co_firstlineno"))?);
    #[cfg(Py_3_10)]
    args.push(get(intern!(py, "co_linetable"))?);
    #[cfg(not(Py_3_10))]
    args.push(get(intern!(py, "co_lnotab"))?);
    #[cfg(Py_3_11)]
    args.push(get(intern!(py, "co_exceptiontable"))?);
    args.push(interned_tuple(code, intern!(py, "co_freevars"))?);
    args.push(interned_tuple(code, intern!(py, "co_cellvars"))?);
    PyTuple::new(py, args)
}

/// `make_code((major, minor), args)`: rebuilt with `types.CodeType(*args)`.
/// Code objects are immutable, so the reduction is computed once per code object.
pub fn reduce_code<'py>(code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = code.py();
    if let Some(reduced) = cached(code, Derived::Reduction) {
        return Ok(reduced);
    }
    let args = PyTuple::new(
        py,
        [
            python_version(py).as_any().clone(),
            code_args(code)?.into_any(),
        ],
    )?;
    let reduced = PyTuple::new(
        py,
        [
            Reconstructors::get(py).make_code.bind(py).clone(),
            args.into_any(),
        ],
    )?
    .into_any();
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
    let here = python_version(py);
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
    let bytecode = args.get_item(BYTECODE_ARG).ok();
    if let Some(bytecode) = bytecode.as_ref().and_then(|b| b.cast::<PyBytes>().ok()) {
        check_bytecode(bytecode.as_bytes(), opcode_table(py)?)?;
    }
    statics::code_type(py)?.call1(args)
}

/// Where `co_code` sits among `types.CodeType`'s arguments (3.9 to 3.13).
const BYTECODE_ARG: usize = 6;

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
        let first_instrumented: usize = match opcode.getattr("MIN_INSTRUMENTED_OPCODE") {
            Ok(value) => value.extract()?,
            Err(_) => 256,
        };
        let mut table = OpcodeTable {
            base: [false; 256],
            caches: [0; 256],
        };
        for (name, value) in opmap.cast::<PyDict>()?.iter() {
            let value: usize = value.extract()?;
            if value < first_instrumented && !name.eq("ENTER_EXECUTOR")? {
                table.base[value] = true;
            }
        }
        // A list indexed by opcode up to 3.12, a dict keyed by name from 3.13.
        if let Ok(entries) = opcode.getattr("_inline_cache_entries") {
            if let Ok(entries) = entries.cast::<PyDict>() {
                for (name, count) in entries.iter() {
                    if let Some(value) = opmap
                        .get_item(&name)
                        .ok()
                        .and_then(|v| v.extract::<usize>().ok())
                    {
                        table.caches[value] = count.extract()?;
                    }
                }
            } else {
                for (value, count) in entries.try_iter()?.enumerate().take(256) {
                    table.caches[value] = count?.extract()?;
                }
            }
        }
        Ok(table)
    })
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
