//! The tracker: objects pickled by value that must keep their identity on
//! the receiving side (classes, type parameters). Each gets a tracker id
//! derived from its definition (see `support::digest`), so the same
//! definition pickles to the same bytes in every run; loading two pickles of
//! one id in one process yields one object.

use std::fmt::Write as _;

use ahash::AHashMap;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyWeakrefReference;

use crate::support::lookup;
use crate::support::weakmap::WeakMap;

#[derive(Default)]
struct Tracker {
    /// Object -> its id.
    by_object: WeakMap<String>,
    /// Id -> the object loaded or pickled under it.
    by_id: AHashMap<String, Py<PyWeakrefReference>>,
}

static TRACKER: Mutex<Option<Tracker>> = Mutex::new(None);

fn alive<'py>(py: Python<'py>, weak: &Py<PyWeakrefReference>) -> Option<Bound<'py, PyAny>> {
    weak.bind(py).upgrade()
}

impl Tracker {
    fn id_of(&self, obj: &Bound<'_, PyAny>) -> Option<String> {
        self.by_object.get(obj).cloned()
    }

    fn known<'py>(&self, py: Python<'py>, id: &str) -> Option<Bound<'py, PyAny>> {
        self.by_id.get(id).and_then(|w| alive(py, w))
    }

    /// Records `obj` under `id` (`weak`, its weak reference, made by the
    /// caller before taking the lock: allocating may collect garbage and run
    /// Python code, which must not happen while the lock is held). Returns
    /// what it removed, to drop once the lock is released.
    fn track(
        &mut self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        weak: Py<PyWeakrefReference>,
        id: String,
    ) -> (impl Sized, Vec<Py<PyWeakrefReference>>) {
        let mut dead = Vec::new();
        if self.by_id.len() >= 2 * self.by_object.len() + 1024 {
            let gone: Vec<String> = self
                .by_id
                .iter()
                .filter(|(_, w)| alive(py, w).is_none())
                .map(|(id, _)| id.clone())
                .collect();
            dead.extend(gone.iter().filter_map(|id| self.by_id.remove(id)));
        }
        dead.extend(self.by_id.insert(id.clone(), weak.clone_ref(py)));
        (self.by_object.insert(obj, weak, id), dead)
    }
}

/// `base`, or `base-2`, `base-3`... the first that `taken` says no to: two
/// distinct live objects of one definition never share an id.
pub fn first_free_id(base: &str, taken: impl Fn(&str) -> bool) -> String {
    let mut id = base.to_owned();
    let mut n = 1;
    while taken(&id) {
        n += 1;
        id.clear();
        let _ = write!(id, "{base}-{n}");
    }
    id
}

/// The tracker id of `obj`: the one it already has, else `base` (a digest of
/// its definition), suffixed when another live object already holds it.
pub fn tracker_id_for(
    obj: &Bound<'_, PyAny>,
    base: impl FnOnce() -> PyResult<String>,
) -> PyResult<String> {
    let py = obj.py();
    if let Some(id) = TRACKER.lock().as_ref().and_then(|t| t.id_of(obj)) {
        return Ok(id);
    }
    let base = base()?;
    let weak = PyWeakrefReference::new(obj)?.unbind();
    let mut guard = TRACKER.lock();
    let tracker = guard.get_or_insert_with(Tracker::default);
    if let Some(id) = tracker.id_of(obj) {
        return Ok(id);
    }
    let id = first_free_id(&base, |id| {
        tracker.known(py, id).is_some_and(|o| !o.is(obj))
    });
    let removed = tracker.track(py, obj, weak, id.clone());
    drop(guard);
    drop(removed);
    share_with_upstream(obj, &id)?;
    Ok(id)
}

/// On load: the object already known under `id`, else `obj`, now tracked.
pub fn lookup_or_track<'py>(obj: Bound<'py, PyAny>, id: &str) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let weak = PyWeakrefReference::new(&obj)?.unbind();
    let mut guard = TRACKER.lock();
    let tracker = guard.get_or_insert_with(Tracker::default);
    if let Some(known) = tracker.known(py, id) {
        return Ok(known);
    }
    let removed = tracker.track(py, &obj, weak, id.to_owned());
    drop(guard);
    drop(removed);
    share_with_upstream(&obj, id)?;
    Ok(obj)
}

/// The live object tracked under `id`, if any.
pub fn tracked<'py>(py: Python<'py>, id: &str) -> Option<Bound<'py, PyAny>> {
    TRACKER.lock().as_ref()?.known(py, id)
}

/// `_native._tracked(id)`: the class (or type parameter) this process knows
/// under the tracker id `id`, else None; the restricted loader asks it
/// before a class is made, so that a pickle cannot change a class it did
/// not make.
#[pyfunction]
#[pyo3(name = "_tracked")]
pub fn tracked_by_id<'py>(py: Python<'py>, id: &str) -> Option<Bound<'py, PyAny>> {
    tracked(py, id)
}

/// The packages that vendor a copy of upstream cloudpickle, each with its
/// own class tracker in `<package>.cloudpickle` (exported as
/// `_native.VENDORED_CLOUDPICKLE`: `install()` switches the same ones).
pub const VENDORED_CLOUDPICKLE: [&str; 4] = [
    "ray.cloudpickle",
    "pyspark.cloudpickle",
    "joblib.externals.cloudpickle",
    "srsly.cloudpickle",
];

/// Tells upstream cloudpickle (and each vendored copy) in this process the
/// id of a class or `TypeVar`: a worker that loaded it and sends results with
/// upstream (loky's "cloudpickle" pickler, a Dask worker without `install()`)
/// writes that id, and a sender that loads them with upstream's
/// reconstructors (a vendored copy's) gets its own class back.
fn share_with_upstream(obj: &Bound<'_, PyAny>, id: &str) -> PyResult<()> {
    let modules = lookup::sys_modules(obj.py())?;
    for package in std::iter::once("cloudpickle").chain(VENDORED_CLOUDPICKLE) {
        if let Some(upstream) = modules.get_item(format!("{package}.cloudpickle"))? {
            share_with(&upstream, obj, id)?;
        }
    }
    Ok(())
}

fn share_with(upstream: &Bound<'_, PyAny>, obj: &Bound<'_, PyAny>, id: &str) -> PyResult<()> {
    let py = obj.py();
    let attr = |name| lookup::getattr_opt(upstream, name);
    let (Some(by_class), Some(by_id), Some(lock)) = (
        attr(pyo3::intern!(py, "_DYNAMIC_CLASS_TRACKER_BY_CLASS"))?,
        attr(pyo3::intern!(py, "_DYNAMIC_CLASS_TRACKER_BY_ID"))?,
        attr(pyo3::intern!(py, "_DYNAMIC_CLASS_TRACKER_LOCK"))?,
    ) else {
        return Ok(()); // our own mirror, or a cloudpickle without a tracker
    };
    lock.call_method0("acquire")?;
    let shared = by_class
        .call_method1("setdefault", (obj, id))
        .and_then(|_| by_id.call_method1("setdefault", (id, obj)));
    lock.call_method0("release")?;
    shared.map(drop)
}

#[cfg(test)]
mod tests {
    use super::first_free_id;

    #[test]
    fn the_base_id_when_it_is_free_else_the_first_free_suffix() {
        assert_eq!(first_free_id("abc", |_| false), "abc");
        let taken = ["abc", "abc-2"];
        assert_eq!(first_free_id("abc", |id| taken.contains(&id)), "abc-3");
    }
}
