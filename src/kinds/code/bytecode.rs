//! What a code object's bytecode says: the global names it reads, writes or
//! deletes, the names an annotation scope reads from its class namespace,
//! and whether this CPython could have compiled it at all.

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PySet, PyString, PyTuple};

use crate::ffi;
use crate::support::{lookup, statics};

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
pub(super) struct UniqueNames<'py> {
    pub(super) order: Vec<Bound<'py, PyString>>,
    seen: Bound<'py, PySet>,
}

impl<'py> UniqueNames<'py> {
    pub(super) fn new(py: Python<'py>) -> PyResult<Self> {
        Ok(Self {
            order: Vec::new(),
            seen: PySet::empty(py)?,
        })
    }

    pub(super) fn push(&mut self, name: Bound<'py, PyString>) -> PyResult<()> {
        if !self.seen.contains(&name)? {
            self.seen.add(&name)?;
            self.order.push(name);
        }
        Ok(())
    }
}

/// Names read, written or deleted as globals by `code`'s own instructions, in
/// order of first use (a deterministic order, unlike a set's).
pub(super) fn walk_global_ops<'py>(
    code: &Bound<'py, PyAny>,
    out: &mut UniqueNames<'py>,
) -> PyResult<()> {
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

/// The code objects among `code`'s constants (its nested functions and lambdas).
pub(super) fn nested_codes<'py>(code: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
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
pub(super) fn walk_class_namespace_reads<'py>(
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
/// Refuses `bytecode` that this CPython could not have compiled (see [`check_bytecode`]).
pub(super) fn check(py: Python<'_>, bytecode: &[u8]) -> PyResult<()> {
    check_bytecode(bytecode, opcode_table(py)?)
}

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
