//! Tracker ids from what is written. A class (or type parameter) pickled by
//! value is tracked under an id the receiver uses to keep one object per
//! definition. The id is a digest of the pickle of the definition itself
//! (made by a separate cloudpickle-rs pickler into a hashing sink), so two
//! definitions get one id exactly when they pickle to the same bytes, and
//! the same definition gets the same id in every process.
//!
//! Inside a digest, another tracked definition is written as its id alone
//! (its id covers its definition), so each definition is pickled once, and a
//! reference back to a definition still being digested as a placeholder. A
//! definition that reaches another one still being digested (two classes
//! referring to each other) cannot be described from its own bytes: every
//! definition of that cycle gets a random id instead, unique to this
//! process, as does one reached through more than [`MAX_NESTED`] definitions
//! digested inside each other (a chain of classes, each new to this process,
//! each referring to the next).

use std::cell::RefCell;
use std::fmt::Write as _;

use parking_lot::Mutex;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyTuple};

use crate::support::{dump, statics};

/// A definition being digested on this thread.
struct InProgress {
    address: usize,
    /// Reached from a definition digested inside it: part of a cycle.
    cyclic: bool,
}

thread_local! {
    static IN_PROGRESS: RefCell<Vec<InProgress>> = const { RefCell::new(Vec::new()) };
}

/// How many definitions may be digested inside each other on one thread.
const MAX_NESTED: usize = 16;

/// Whether a digest is being made on this thread: a tracked definition is
/// then written as [`by_id`].
pub fn in_progress() -> bool {
    IN_PROGRESS.with_borrow(|stack| !stack.is_empty())
}

/// What a digest writes for a definition tracked under `id`.
pub fn by_id<'py>(py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyAny>> {
    stand_in(py, &format!("<tracked {id}>"))
}

/// `(str, (text,))`: a reduction that is only ever hashed.
fn stand_in<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    let reduction = PyTuple::new(
        py,
        [
            py.get_type::<pyo3::types::PyString>().into_any(),
            PyTuple::new(py, [text])?.into_any(),
        ],
    )?;
    Ok(reduction.into_any())
}

/// When `obj` is being digested on this thread, the reduction to write in
/// its place (and, when it is not the innermost one, every definition
/// digested inside it is marked as part of a cycle).
pub fn placeholder<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let address = obj.as_ptr() as usize;
    let found = IN_PROGRESS.with_borrow_mut(|stack| {
        let position = stack.iter().position(|d| d.address == address)?;
        let innermost = position + 1 == stack.len();
        if !innermost {
            for definition in &mut stack[position..] {
                definition.cyclic = true;
            }
        }
        Some(innermost)
    });
    let Some(innermost) = found else {
        return Ok(None);
    };
    let text = if innermost {
        "<the definition itself>"
    } else {
        "<a definition being digested>"
    };
    stand_in(obj.py(), text).map(Some)
}

/// Takes the definition off the stack however the digest ends.
struct Digesting;

impl Digesting {
    fn start(address: usize) -> Self {
        IN_PROGRESS.with_borrow_mut(|stack| {
            stack.push(InProgress {
                address,
                cyclic: false,
            });
        });
        Digesting
    }

    /// Whether the definition turned out to be part of a cycle.
    fn finish(self) -> bool {
        let cyclic = IN_PROGRESS.with_borrow(|stack| stack.last().is_some_and(|d| d.cyclic));
        drop(self);
        cyclic
    }
}

impl Drop for Digesting {
    fn drop(&mut self) {
        IN_PROGRESS.with_borrow_mut(std::vec::Vec::pop);
    }
}

/// FNV-1a, 128 bits: specified and the same in every build and process.
#[pyclass(frozen, module = "cloudpickle_rs._native")]
pub struct DigestSink {
    state: Mutex<u128>,
}

const FNV_OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
const FNV_PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

#[pymethods]
impl DigestSink {
    fn write(&self, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        // The pickler writes bytes, and large buffers as they are (a memoryview).
        let bytes = match data.cast::<PyBytes>() {
            Ok(bytes) => bytes.clone(),
            Err(_) => data
                .py()
                .get_type::<PyBytes>()
                .call1((data,))?
                .cast_into()?,
        };
        let mut state = self.state.lock();
        *state = fnv1a(*state, bytes.as_bytes());
        Ok(bytes.as_bytes().len())
    }
}

/// FNV-1a: `state` moved on by `bytes`.
fn fnv1a(mut state: u128, bytes: &[u8]) -> u128 {
    for &byte in bytes {
        state ^= u128::from(byte);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// The Pickler class of this module (looked up, not named: the pickler
/// module depends on the reducers, which depend on this one).
fn pickler_class(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static PICKLER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    PICKLER.import(py, "cloudpickle_rs._native", "Pickler")
}

/// The tracker id of `obj` from `definition`, the parts its reduction writes
/// (without the id): a digest of their pickle, or a random id when `obj` is
/// part of a cycle of definitions or the parts cannot be pickled on their
/// own (a pickler of the user's own may handle what ours cannot).
pub fn tracker_id(obj: &Bound<'_, PyAny>, definition: &Bound<'_, PyAny>) -> PyResult<String> {
    let py = obj.py();
    if IN_PROGRESS.with_borrow(|stack| stack.len() >= MAX_NESTED) {
        return random_id(py);
    }
    let digesting = Digesting::start(obj.as_ptr() as usize);
    let _outside_the_dump = dump::InProgress::none();
    let sink = Bound::new(
        py,
        DigestSink {
            state: Mutex::new(FNV_OFFSET),
        },
    )?;
    let pickled = (|| -> PyResult<()> {
        let highest = py
            .import("pickle")?
            .getattr(intern!(py, "HIGHEST_PROTOCOL"))?;
        let pickler = pickler_class(py)?.call1((&sink, highest))?;
        // The C pickler's own dump: no diagnosis of a failure here.
        statics::c_pickler(py)?
            .getattr(intern!(py, "dump"))?
            .call1((pickler, definition))?;
        Ok(())
    })();
    let cyclic = digesting.finish();
    if pickled.is_err() || cyclic {
        return random_id(py);
    }
    let digest = *sink.get().state.lock();
    Ok(format!("{digest:032x}"))
}

/// 128 random bits, as hex.
fn random_id(py: Python<'_>) -> PyResult<String> {
    let random = py
        .import("os")?
        .getattr(intern!(py, "urandom"))?
        .call1((16,))?
        .cast_into::<PyBytes>()?;
    let mut hex = String::with_capacity(32);
    for byte in random.as_bytes() {
        let _ = write!(hex, "{byte:02x}");
    }
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::{fnv1a, FNV_OFFSET};

    #[test]
    fn fnv1a_128_gives_the_published_test_vectors() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), FNV_OFFSET);
        assert_eq!(
            fnv1a(FNV_OFFSET, b"a"),
            0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964
        );
    }

    #[test]
    fn a_digest_does_not_depend_on_how_the_bytes_are_split() {
        let whole = fnv1a(FNV_OFFSET, b"cloudpickle-rs");
        let split = fnv1a(fnv1a(FNV_OFFSET, b"cloud"), b"pickle-rs");
        assert_eq!(whole, split);
        assert_ne!(whole, fnv1a(FNV_OFFSET, b"cloudpickle-rt"));
    }
}
