//! The names of the modules registered to be pickled by value.

use std::sync::atomic::{AtomicBool, Ordering};

use ahash::AHashSet;
use parking_lot::RwLock;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyModule, PySet};

static BY_VALUE: RwLock<Option<AHashSet<String>>> = RwLock::new(None);
/// Lets the hot path skip the lock while nothing is registered (the usual case).
static ANY_REGISTERED: AtomicBool = AtomicBool::new(false);

/// Whether `module_name` or one of its parent packages is registered.
pub fn is_registered(module_name: &str) -> bool {
    if !ANY_REGISTERED.load(Ordering::Acquire) {
        return false;
    }
    let guard = BY_VALUE.read();
    let Some(names) = guard.as_ref() else {
        return false;
    };
    let mut name = module_name;
    loop {
        if names.contains(name) {
            return true;
        }
        match name.rfind('.') {
            Some(dot) => name = &name[..dot],
            None => return false,
        }
    }
}

fn module_name(module: &Bound<'_, PyAny>) -> PyResult<String> {
    if !module.is_instance_of::<PyModule>() {
        return Err(PyValueError::new_err(format!(
            "Input should be a module object, got {} instead",
            module.str()?
        )));
    }
    module
        .getattr(pyo3::intern!(module.py(), "__name__"))?
        .extract()
}

/// Register a module so that its functions and classes are pickled by value.
#[pyfunction]
pub fn register_pickle_by_value(module: &Bound<'_, PyAny>) -> PyResult<()> {
    let name = module_name(module)?;
    let sys_modules = module.py().import("sys")?.getattr("modules")?;
    if !sys_modules.contains(&name)? {
        return Err(PyValueError::new_err(format!(
            "{} was not imported correctly, have you used an `import` statement to access it?",
            module.str()?
        )));
    }
    BY_VALUE
        .write()
        .get_or_insert_with(AHashSet::new)
        .insert(name);
    ANY_REGISTERED.store(true, Ordering::Release);
    Ok(())
}

/// Unregister a module so that its functions and classes are pickled by reference again.
#[pyfunction]
pub fn unregister_pickle_by_value(module: &Bound<'_, PyAny>) -> PyResult<()> {
    let name = module_name(module)?;
    let mut guard = BY_VALUE.write();
    let names = guard.get_or_insert_with(AHashSet::new);
    if !names.remove(&name) {
        return Err(PyValueError::new_err(format!(
            "{} is not registered for pickle by value",
            module.str()?
        )));
    }
    ANY_REGISTERED.store(!names.is_empty(), Ordering::Release);
    Ok(())
}

/// A copy of the set of module names registered for pickling by value.
#[pyfunction]
pub fn list_registry_pickle_by_value(py: Python<'_>) -> PyResult<Bound<'_, PySet>> {
    let guard = BY_VALUE.read();
    match guard.as_ref() {
        Some(names) => PySet::new(py, names.iter()),
        None => PySet::empty(py),
    }
}

// ---------------------------------------------------------------------------
// The tracker: objects pickled by value that must keep their identity on the
// receiving side (classes, TypeVars). Each gets a tracker id derived from its
// definition (see crate::digest), so the same definition pickles to the same
// bytes in every run; loading two pickles of one id in one process yields one
// object.

use std::fmt::Write as _;

use ahash::AHashMap;
use parking_lot::Mutex;
use pyo3::types::PyWeakrefReference;

struct Tracked {
    object: Py<PyWeakrefReference>,
    id: String,
}

#[derive(Default)]
struct Tracker {
    /// Object address -> its id; the weak reference tells a live entry from a reused address.
    by_object: AHashMap<usize, Tracked>,
    /// Id -> the object loaded or pickled under it.
    by_id: AHashMap<String, Py<PyWeakrefReference>>,
}

static TRACKER: Mutex<Option<Tracker>> = Mutex::new(None);

fn alive<'py>(py: Python<'py>, weak: &Py<PyWeakrefReference>) -> Option<Bound<'py, PyAny>> {
    weak.bind(py).upgrade()
}

impl Tracker {
    fn id_of(&self, obj: &Bound<'_, PyAny>) -> Option<String> {
        let entry = self.by_object.get(&(obj.as_ptr() as usize))?;
        alive(obj.py(), &entry.object)
            .filter(|o| o.is(obj))
            .map(|_| entry.id.clone())
    }

    /// Records `obj` (whose weak reference the caller made before taking the
    /// lock: allocating may collect garbage and run Python code, which must
    /// not happen while the lock is held).
    fn track(
        &mut self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        weak: Py<PyWeakrefReference>,
        id: String,
    ) {
        self.by_id.insert(id.clone(), weak.clone_ref(py));
        self.by_object
            .insert(obj.as_ptr() as usize, Tracked { object: weak, id });
        if self.by_object.len() % 1024 == 0 {
            self.by_object.retain(|_, t| alive(py, &t.object).is_some());
            self.by_id.retain(|_, w| alive(py, w).is_some());
        }
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
        tracker
            .by_id
            .get(id)
            .and_then(|w| alive(py, w))
            .is_some_and(|o| !o.is(obj))
    });
    tracker.track(py, obj, weak, id.clone());
    drop(guard);
    share_with_upstream(obj, &id)?;
    Ok(id)
}

/// On load: the object already known under `id`, else `obj`, now tracked.
pub fn lookup_or_track<'py>(obj: Bound<'py, PyAny>, id: &str) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let weak = PyWeakrefReference::new(&obj)?.unbind();
    let mut guard = TRACKER.lock();
    let tracker = guard.get_or_insert_with(Tracker::default);
    if let Some(known) = tracker.by_id.get(id).and_then(|w| alive(py, w)) {
        return Ok(known);
    }
    tracker.track(py, &obj, weak, id.to_owned());
    drop(guard);
    share_with_upstream(&obj, id)?;
    Ok(obj)
}

/// The modules of upstream cloudpickle and of the copies engines vendor,
/// each holding a class tracker.
const UPSTREAM_TRACKERS: [&str; 5] = [
    "cloudpickle.cloudpickle",
    "joblib.externals.cloudpickle.cloudpickle",
    "ray.cloudpickle.cloudpickle",
    "pyspark.cloudpickle.cloudpickle",
    "srsly.cloudpickle.cloudpickle",
];

/// Tells upstream cloudpickle (and each vendored copy) in this process the
/// id of a class or TypeVar: a worker that loaded it and sends results with
/// upstream (loky's "cloudpickle" pickler, a Dask worker without install())
/// writes that id, and a sender that loads them with upstream's
/// reconstructors (a vendored copy's) gets its own class back.
fn share_with_upstream(obj: &Bound<'_, PyAny>, id: &str) -> PyResult<()> {
    let modules = crate::lookup::sys_modules(obj.py())?;
    for name in UPSTREAM_TRACKERS {
        if let Some(upstream) = modules.get_item(name)? {
            share_with(&upstream, obj, id)?;
        }
    }
    Ok(())
}

fn share_with(upstream: &Bound<'_, PyAny>, obj: &Bound<'_, PyAny>, id: &str) -> PyResult<()> {
    let py = obj.py();
    let attr = |name| crate::lookup::getattr_opt(upstream, name);
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

/// The live object tracked under `id`, if any.
pub fn tracked<'py>(py: Python<'py>, id: &str) -> Option<Bound<'py, PyAny>> {
    let guard = TRACKER.lock();
    guard.as_ref()?.by_id.get(id).and_then(|w| alive(py, w))
}

/// `_native._tracked(id)`: the class (or TypeVar) this process knows under
/// the tracker id `id`, else None; the restricted loader asks it before a
/// class is made, so that a pickle cannot change a class it did not make.
#[pyfunction]
#[pyo3(name = "_tracked")]
pub fn tracked_by_id<'py>(py: Python<'py>, id: &str) -> Option<Bound<'py, PyAny>> {
    tracked(py, id)
}
