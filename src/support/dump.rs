//! The dump in progress on this thread: what reducers may remember for the
//! rest of one `Pickler.dump` and no longer. Each dump gets a serial number
//! never used before, so what was remembered in another dump (an earlier
//! one, or a digest made inside this one) is never taken for this dump's.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Copy)]
struct Dump {
    serial: u64,
    /// Bits set by [`first_time`].
    seen: u32,
}

thread_local! {
    static DUMP: Cell<Option<Dump>> = const { Cell::new(None) };
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

/// While alive, a dump is in progress on this thread (`Pickler.dump`); or,
/// made by [`InProgress::none`], none is (a digest made inside a dump must
/// not depend on it, nor change it). Dropping it gives the thread back the
/// dump it interrupted.
pub struct InProgress(Option<Dump>);

impl InProgress {
    pub fn start() -> Self {
        let started = Dump {
            serial: SERIALS.fetch_add(1, Ordering::Relaxed),
            seen: 0,
        };
        InProgress(DUMP.with(|dump| dump.replace(Some(started))))
    }

    pub fn none() -> Self {
        InProgress(DUMP.with(|dump| dump.replace(None)))
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        DUMP.with(|dump| dump.set(self.0));
    }
}
