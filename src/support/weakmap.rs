//! Maps keyed by an object's address (code objects, classes), for values
//! derived from objects that cannot carry them. Each entry holds a weak
//! reference, which tells a live entry from one whose object died and whose
//! address was reused. Used under a lock: what a change removes comes back
//! as [`Removed`], to be dropped after the lock is released (dropping the
//! last reference to a value may free objects and run Python code).

use ahash::AHashMap;
use pyo3::prelude::*;
use pyo3::types::PyWeakrefReference;

struct Entry<V> {
    object: Py<PyWeakrefReference>,
    value: V,
}

/// Entries removed from a [`WeakMap`]; drop them once the lock is released.
#[must_use = "drop removed entries after releasing the lock"]
pub struct Removed<V>(#[allow(dead_code)] Vec<Entry<V>>);

pub struct WeakMap<V> {
    entries: AHashMap<usize, Entry<V>>,
    /// Size at which the next insertion drops the entries of dead objects.
    prune_at: usize,
}

/// The smallest size at which a map is pruned.
const PRUNE_FLOOR: usize = 1024;

impl<V> Default for WeakMap<V> {
    fn default() -> Self {
        WeakMap {
            entries: AHashMap::new(),
            prune_at: PRUNE_FLOOR,
        }
    }
}

fn is_entry_of<V>(entry: &Entry<V>, obj: &Bound<'_, PyAny>) -> bool {
    entry
        .object
        .bind(obj.py())
        .upgrade()
        .is_some_and(|live| live.is(obj))
}

impl<V> WeakMap<V> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The value recorded for `obj`, if `obj` itself (not a dead object at
    /// its address) has one.
    pub fn get(&self, obj: &Bound<'_, PyAny>) -> Option<&V> {
        self.entries
            .get(&(obj.as_ptr() as usize))
            .filter(|entry| is_entry_of(entry, obj))
            .map(|entry| &entry.value)
    }

    /// Records `value` for `obj`. `weak` is `obj`'s weak reference, which the
    /// caller made before taking the lock (making one allocates, which may
    /// collect garbage and run Python code).
    pub fn insert(
        &mut self,
        obj: &Bound<'_, PyAny>,
        weak: Py<PyWeakrefReference>,
        value: V,
    ) -> Removed<V> {
        let mut removed = self.prune_if_large(obj.py());
        removed.extend(self.entries.insert(
            obj.as_ptr() as usize,
            Entry {
                object: weak,
                value,
            },
        ));
        Removed(removed)
    }

    /// Drops the entries of dead objects once the map has doubled since the
    /// last time, so that pruning costs O(1) per insertion on average.
    fn prune_if_large(&mut self, py: Python<'_>) -> Vec<Entry<V>> {
        if self.entries.len() < self.prune_at {
            return Vec::new();
        }
        let dead: Vec<usize> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.object.bind(py).upgrade().is_none())
            .map(|(key, _)| *key)
            .collect();
        let removed = dead
            .into_iter()
            .filter_map(|key| self.entries.remove(&key))
            .collect();
        self.prune_at = (self.entries.len() * 2).max(PRUNE_FLOOR);
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::WeakMap;
    use pyo3::prelude::*;
    use pyo3::types::PyWeakrefReference;

    fn new_object(py: Python<'_>) -> Bound<'_, PyAny> {
        py.eval(c"type('T', (), {})()", None, None).unwrap()
    }

    #[test]
    fn a_value_belongs_to_its_object_only() {
        Python::attach(|py| {
            let mut map = WeakMap::default();
            let (a, b) = (new_object(py), new_object(py));
            let weak = PyWeakrefReference::new(&a).unwrap().unbind();
            drop(map.insert(&a, weak, "a"));
            assert_eq!(map.get(&a), Some(&"a"));
            assert_eq!(map.get(&b), None);
        });
    }

    #[test]
    fn entries_of_dead_objects_go_once_the_map_grows() {
        Python::attach(|py| {
            let mut map = WeakMap::default();
            for i in 0..2000 {
                let obj = new_object(py);
                let weak = PyWeakrefReference::new(&obj).unwrap().unbind();
                drop(map.insert(&obj, weak, i));
            }
            assert!(map.len() < 1100, "{} entries left", map.len());
        });
    }
}
