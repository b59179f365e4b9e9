//! `dumps` and `dump`, and the picklers `dumps` keeps between calls.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyBytes, PyDict, PyList};

use crate::ffi;
use crate::hook::PROTOCOL_ATTRIBUTE;
use crate::pickler::{self, pickler_dump};
use crate::support::statics;

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
        pickler::pickler_class(py)?.as_any()
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
    if !compat
        && buffer_callback
            .as_ref()
            .is_none_or(pyo3::types::PyAnyMethods::is_none)
    {
        if let Some(index) = reusable_index(py, protocol.as_ref())? {
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
    /// The largest output since the memo was last replaced: what the memo
    /// table has grown for.
    grown_for: usize,
}

/// Output size above which a reusable pickler is not kept, by protocol: the
/// memo table it keeps grew for that many objects, and below protocol 4 (no
/// frames) its output buffer keeps the size of the whole largest output. From
/// protocol 4 the C pickler hands each 64 KiB frame to `write` and reuses a
/// buffer of about that size, so only the memo table is kept.
fn reuse_limit(index: usize) -> usize {
    if index >= 4 {
        256 * 1024
    } else {
        64 * 1024
    }
}

/// How much smaller than what the memo table grew for an output must be for
/// the memo to be replaced rather than cleared: the C pickler's memo table
/// never shrinks, and clearing it walks and zeroes every slot it ever grew
/// to, so one dump of many objects would slow every later small one. A
/// dump like the previous ones keeps its table (growing it again costs more).
const SHRINK_FACTOR: usize = 8;

/// Idle reusable picklers by protocol. A `dumps` takes its pickler out while
/// it runs, so a nested or concurrent `dumps` makes a fresh one instead.
static REUSABLE: parking_lot::Mutex<[Option<ReusablePickler>; SLOTS]> =
    parking_lot::Mutex::new([None, None, None, None, None, None]);

/// Protocols 0 to 5.
const SLOTS: usize = 6;

/// The protocol slot for `protocol` (None: the highest), when it is a valid
/// protocol number; anything else takes the ordinary path and its errors.
fn reusable_index(py: Python<'_>, protocol: Option<&Bound<'_, PyAny>>) -> PyResult<Option<usize>> {
    let requested = match protocol {
        Some(p) if p.is_exact_instance_of::<pyo3::types::PyInt>() => match p.extract::<i64>() {
            Ok(p) => Some(p),
            Err(_) => return Ok(None), // out of range: the ordinary path says so
        },
        Some(p) if !p.is_none() => return Ok(None),
        _ => None,
    };
    Ok(slot_for(requested, pickler::highest_protocol(py)?))
}

/// The slot of the reusable pickler for `requested` (None or negative: the
/// highest), None for a protocol the pickler would refuse.
fn slot_for(requested: Option<i64>, highest: i64) -> Option<usize> {
    let resolved = match requested {
        Some(p) if p >= 0 => p,
        _ => highest,
    };
    usize::try_from(resolved)
        .ok()
        .filter(|&i| i < SLOTS && resolved <= highest)
}

fn new_reusable_pickler(py: Python<'_>, index: usize) -> PyResult<ReusablePickler> {
    let chunks = PyList::empty(py);
    let sink = py.import("types")?.getattr("SimpleNamespace")?.call(
        (),
        Some(&[("write", chunks.getattr("append")?)].into_py_dict(py)?),
    )?;
    let pickler = pickler::pickler_class(py)?.as_any().call1((sink, index))?;
    Ok(ReusablePickler {
        pickler: pickler.unbind(),
        chunks: chunks.unbind(),
        grown_for: 0,
    })
}

/// `dumps` with the reusable pickler of protocol `index`: dump, join the
/// chunks, then forget everything the dump left behind (memo, `globals_ref`).
fn dumps_reusing<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    index: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let taken = REUSABLE.lock()[index].take();
    let mut reusable = match taken {
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
    let size = output.as_ref().ok().and_then(|o| o.len().ok());
    let grown_for = reusable.grown_for.max(size.unwrap_or(0));
    let replace_memo = size.is_some_and(|n| n.saturating_mul(SHRINK_FACTOR) < grown_for);
    let reset = || -> PyResult<()> {
        chunks.call_method0(intern!(py, "clear"))?;
        if replace_memo {
            pickler.setattr(intern!(py, "memo"), PyDict::new(py))?;
        } else {
            pickler.call_method0(intern!(py, "clear_memo"))?;
        }
        let dict = ffi::instance_dict(pickler)?;
        let protocol = dict.get_item(intern!(py, PROTOCOL_ATTRIBUTE))?;
        dict.clear();
        if let Some(protocol) = protocol {
            dict.set_item(intern!(py, PROTOCOL_ATTRIBUTE), protocol)?;
        }
        Ok(())
    };
    // After a failed dump the pickler is dropped rather than trusted again;
    // after a large one too (see `reuse_limit`).
    let small = size.is_some_and(|n| n <= reuse_limit(index));
    // (Resetting only what is kept: a dropped pickler frees its memo whole.)
    let keep = dumped.is_ok() && small && reset().is_ok();
    dumped?;
    if keep {
        reusable.grown_for = if replace_memo { 0 } else { grown_for };
        let mut slots = REUSABLE.lock();
        if slots[index].is_none() {
            slots[index] = Some(reusable);
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::slot_for;

    #[test]
    fn default_and_negative_protocols_use_the_highest_slot() {
        assert_eq!(slot_for(None, 5), Some(5));
        assert_eq!(slot_for(Some(-1), 5), Some(5));
        assert_eq!(slot_for(None, 4), Some(4));
    }

    #[test]
    fn each_valid_protocol_has_its_own_slot() {
        for p in 0..=5 {
            assert_eq!(slot_for(Some(p), 5), usize::try_from(p).ok());
        }
    }

    #[test]
    fn protocols_the_pickler_refuses_have_no_slot() {
        assert_eq!(slot_for(Some(6), 5), None);
        assert_eq!(slot_for(Some(5), 4), None);
        assert_eq!(slot_for(Some(i64::MAX), 5), None);
    }
}
