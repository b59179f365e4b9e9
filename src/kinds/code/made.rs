//! Code objects by what they are made from: a worker that receives the
//! same function for every task (what Dask, Ray and joblib send) makes its
//! code object once, and a sender writes equal code objects as one (see
//! `canonical`). Code is immutable, so one code object serves every use of
//! the same blob and objects.
//!
//! "The same objects" is strict: equal `str`, `bytes` and `int` of the same
//! exact type, floats with the same bits, tuples of such, or the very same
//! object (a nested code object found here, `None`...). `1`, `1.0`, `True`
//! and `-0.0`, `0.0` are equal to Python but not the same constant.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use ahash::{AHashMap, RandomState};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyCode, PyFloat, PyInt, PyString, PyTuple};

/// Code objects kept at most (a few MiB); the next one starts the table over.
const CAPACITY: usize = 4096;

struct Kept {
    blob: Box<[u8]>,
    objects: Py<PyTuple>,
    code: Py<PyAny>,
}

/// Digest of a blob and its objects -> what was made from them.
type Made = AHashMap<u64, Vec<Kept>>;

/// Python code never runs while the lock is held: comparing exact `str`,
/// `bytes`, `int` and `float` calls none, and what leaves the table is
/// dropped after the lock is released.
static MADE: Mutex<Option<Made>> = Mutex::new(None);

/// The code object made earlier from `blob` and the same `objects`, and the
/// digest to keep a new one under (None: these objects cannot be compared).
pub fn find<'py>(
    blob: &[u8],
    objects: &Bound<'py, PyTuple>,
) -> PyResult<(Option<Bound<'py, PyAny>>, Option<u64>)> {
    let py = objects.py();
    let Some(digest) = digest(blob, objects)? else {
        return Ok((None, None));
    };
    let guard = MADE.lock();
    if let Some(entries) = guard.as_ref().and_then(|made| made.get(&digest)) {
        for kept in entries {
            if *kept.blob == *blob && same_items(kept.objects.bind(py), objects)? {
                return Ok((Some(kept.code.bind(py).clone()), Some(digest)));
            }
        }
    }
    Ok((None, Some(digest)))
}

/// The code object kept for `blob` and the same `objects`, else `code`,
/// kept for them from now on (the pickling side of the table).
pub fn canonical<'py>(
    blob: &[u8],
    objects: &Bound<'py, PyTuple>,
    code: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let (found, digest) = find(blob, objects)?;
    if let Some(found) = found {
        return Ok(found);
    }
    if let Some(digest) = digest {
        keep(digest, blob, objects, code);
    }
    Ok(code.clone())
}

/// Blobs written before -> the bytes object they were written as: code
/// objects that differ only in their objects (the methods a loop or a
/// template made) share one blob, which a pickle then holds once.
static BLOBS: Mutex<Option<Blobs>> = Mutex::new(None);

/// A blob's bytes -> the bytes object written for them.
type Blobs = AHashMap<Box<[u8]>, Py<PyBytes>>;

/// The bytes object for `blob`, the same one for the same blob.
pub fn interned_blob<'py>(py: Python<'py>, blob: &[u8]) -> Bound<'py, PyBytes> {
    let mut guard = BLOBS.lock();
    let blobs = guard.get_or_insert_with(AHashMap::default);
    if let Some(found) = blobs.get(blob) {
        return found.bind(py).clone();
    }
    if blobs.len() >= CAPACITY {
        // Only bytes objects: dropping them under the lock runs no Python code.
        blobs.clear();
    }
    let made = PyBytes::new(py, blob);
    blobs.insert(blob.into(), made.clone().unbind());
    made
}

/// Keeps `code`, made from `blob` and `objects`, under their `digest`.
pub fn keep(digest: u64, blob: &[u8], objects: &Bound<'_, PyTuple>, code: &Bound<'_, PyAny>) {
    let dropped = {
        let mut guard = MADE.lock();
        let made = guard.get_or_insert_with(Made::default);
        let dropped = if made.len() >= CAPACITY {
            std::mem::take(made)
        } else {
            Made::default()
        };
        made.entry(digest).or_default().push(Kept {
            blob: blob.into(),
            objects: objects.clone().unbind(),
            code: code.clone().unbind(),
        });
        dropped
    };
    drop(dropped);
}

/// A digest of `blob` and `objects` that [`same`] objects share; None when
/// an object is not one [`same`] compares (it would never be found again).
fn digest(blob: &[u8], objects: &Bound<'_, PyTuple>) -> PyResult<Option<u64>> {
    static STATE: OnceLock<RandomState> = OnceLock::new();
    let mut hasher = STATE.get_or_init(RandomState::new).build_hasher();
    hasher.write(blob);
    Ok(digest_items(objects, &mut hasher)?.then(|| hasher.finish()))
}

fn digest_items(items: &Bound<'_, PyTuple>, hasher: &mut impl Hasher) -> PyResult<bool> {
    hasher.write_usize(items.len());
    for item in items.iter() {
        if !digest_item(&item, hasher)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn digest_item(item: &Bound<'_, PyAny>, hasher: &mut impl Hasher) -> PyResult<bool> {
    if item.is_none() {
        hasher.write_u8(0);
    } else if let Ok(text) = item.cast_exact::<PyString>() {
        hasher.write_u8(1);
        hasher.write_isize(text.hash()?);
    } else if let Ok(bytes) = item.cast_exact::<PyBytes>() {
        hasher.write_u8(2);
        hasher.write(bytes.as_bytes());
    } else if item.is_exact_instance_of::<PyInt>() {
        hasher.write_u8(3);
        hasher.write_isize(item.hash()?);
    } else if item.is_exact_instance_of::<PyBool>() {
        hasher.write_u8(4);
        hasher.write_u8(u8::from(item.is_truthy()?));
    } else if let Ok(float) = item.cast_exact::<PyFloat>() {
        hasher.write_u8(5);
        hasher.write_u64(float.value().to_bits());
    } else if item.is_exact_instance_of::<PyCode>() {
        hasher.write_u8(6);
        hasher.write_usize(item.as_ptr() as usize);
    } else if let Ok(tuple) = item.cast_exact::<PyTuple>() {
        hasher.write_u8(7);
        return digest_items(tuple, hasher);
    } else {
        return Ok(false);
    }
    Ok(true)
}
fn same_items(a: &Bound<'_, PyTuple>, b: &Bound<'_, PyTuple>) -> PyResult<bool> {
    if a.len() != b.len() {
        return Ok(false);
    }
    for (x, y) in a.iter().zip(b.iter()) {
        if !same(&x, &y)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether `a` and `b` are the same constant (see the module's doc).
fn same(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<bool> {
    if a.is(b) {
        return Ok(true);
    }
    if !a.get_type().is(b.get_type()) {
        return Ok(false);
    }
    if let (Ok(x), Ok(y)) = (a.cast_exact::<PyFloat>(), b.cast_exact::<PyFloat>()) {
        return Ok(x.value().to_bits() == y.value().to_bits());
    }
    if let (Ok(x), Ok(y)) = (a.cast_exact::<PyTuple>(), b.cast_exact::<PyTuple>()) {
        return same_items(x, y);
    }
    if a.is_exact_instance_of::<PyString>()
        || a.is_exact_instance_of::<PyBytes>()
        || a.is_exact_instance_of::<PyInt>()
    {
        return a.eq(b);
    }
    Ok(false)
}
