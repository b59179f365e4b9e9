//! The dump in progress on this thread: what reducers may remember for the
//! rest of one `Pickler.dump` and no longer. Each dump gets a serial number
//! never used before, so what was remembered in another dump (an earlier
//! one, or a digest made inside this one) is never taken for this dump's.
//! It also holds the state copies the pickler has yet to write
//! ([`empty_once_written`]).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::ffi;

#[derive(Clone, Copy)]
struct Dump {
    serial: u64,
    /// Bits set by [`first_time`].
    seen: u32,
    /// Whether the C pickler calls our hook itself, so that a reduction it
    /// got from us is held by nobody else but its `save()`; known once asked.
    hook_is_direct: Option<bool>,
}

/// A reduction and the state dict made for it, to be emptied once written.
type Written = (Py<PyAny>, Py<PyDict>);

thread_local! {
    static DUMP: Cell<Option<Dump>> = const { Cell::new(None) };
    static TO_EMPTY: RefCell<Vec<Written>> = const { RefCell::new(Vec::new()) };
}

static SERIALS: AtomicU64 = AtomicU64::new(1);

/// The serial number of the dump in progress on this thread, if any.
pub fn serial() -> Option<u64> {
    DUMP.with(|dump| dump.get().map(|d| d.serial))
}

/// Whether none of `bits` was set yet in the dump in progress, setting them;
/// false outside a dump.
pub fn first_time(bits: u32) -> bool {
    DUMP.with(|dump| match dump.get() {
        Some(mut current) if current.seen & bits == 0 => {
            current.seen |= bits;
            dump.set(Some(current));
            true
        }
        _ => false,
    })
}

/// Empties `copy`, a state dict made for `reduction` (which the hook returns
/// to the C pickler), once the pickler has written it.
///
/// The pickler's memo keeps every state it wrote until the dump ends, so that
/// an object met again is written as a reference; a copy made for one
/// reduction is never met again, and emptied it keeps only its shell alive.
/// The pickler holds a reduction from our hook's return until it has written
/// all of it, state included: a reduction only this list still holds is
/// done with. Reductions nest as the objects do, so the ones done with are
/// always on top. Not when a Python `reducer_override` stands between the
/// pickler and us (it may hand the state on in a tuple of its own), nor
/// when someone else (a `persistent_id`) kept the copy.
///
/// `hook_is_direct` tells, the first time in a dump, whether the C pickler
/// calls our hook itself.
pub fn empty_once_written(
    reduction: &Bound<'_, PyAny>,
    copy: &Bound<'_, PyDict>,
    hook_is_direct: impl FnOnce() -> bool,
) {
    if !direct_in_this_dump(hook_is_direct) {
        return;
    }
    let py = reduction.py();
    // Entries leave the list before their copy is emptied: emptying may
    // free objects whose `__del__` pickles again.
    let next_done = || {
        TO_EMPTY.with(|to_empty| {
            let mut to_empty = to_empty.borrow_mut();
            match to_empty.last() {
                Some((done, _)) if ffi::reference_count(done.bind(py)) == 1 => to_empty.pop(),
                _ => None,
            }
        })
    };
    while let Some((done, written)) = next_done() {
        drop(done);
        let written = written.into_bound(py);
        // Held by `written` and the pickler's memo only.
        if ffi::reference_count(&written) <= 2 {
            written.clear();
        }
    }
    TO_EMPTY.with(|to_empty| {
        to_empty
            .borrow_mut()
            .push((reduction.clone().unbind(), copy.clone().unbind()));
    });
}

/// Whether a dump is in progress and its pickler calls our hook itself.
fn direct_in_this_dump(hook_is_direct: impl FnOnce() -> bool) -> bool {
    match DUMP.with(Cell::get) {
        None => false,
        Some(Dump {
            hook_is_direct: Some(known),
            ..
        }) => known,
        Some(_) => {
            let direct = hook_is_direct();
            DUMP.with(|dump| {
                if let Some(mut current) = dump.get() {
                    current.hook_is_direct = Some(direct);
                    dump.set(Some(current));
                }
            });
            direct
        }
    }
}

/// While alive, a dump is in progress on this thread (`Pickler.dump`); or,
/// made by [`InProgress::none`], none is (a digest made inside a dump must
/// not depend on it, nor change it). Dropping it gives the thread back the
/// dump it interrupted.
pub struct InProgress {
    interrupted: Option<Dump>,
    /// The interrupted dump's copies to empty, when this one starts a dump
    /// (outside a dump, [`empty_once_written`] leaves the list alone).
    its_copies: Option<Vec<Written>>,
}

impl InProgress {
    pub fn start() -> Self {
        let started = Dump {
            serial: SERIALS.fetch_add(1, Ordering::Relaxed),
            seen: 0,
            hook_is_direct: None,
        };
        InProgress {
            interrupted: DUMP.with(|dump| dump.replace(Some(started))),
            its_copies: Some(TO_EMPTY.with(RefCell::take)),
        }
    }

    pub fn none() -> Self {
        InProgress {
            interrupted: DUMP.with(|dump| dump.replace(None)),
            its_copies: None,
        }
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        DUMP.with(|dump| dump.set(self.interrupted));
        if let Some(its_copies) = self.its_copies.take() {
            let ended = TO_EMPTY.with(|to_empty| to_empty.replace(its_copies));
            drop(ended); // outside the borrow: releasing may run a `__del__`
        }
    }
}
