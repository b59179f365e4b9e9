//! One module per pickled kind: its wire layout at the top, then its
//! reducer (the pickling side), then its reconstructors (the loading side).
//! Kinds depend on `support`, `reconstructors` and `ffi`, and on each other
//! only downward: `function` uses `code` and `stdlib`; no other kind uses
//! another.

pub mod class;
pub mod code;
pub mod exception;
pub mod function;
pub mod misc;
pub mod module;
pub mod stdlib;
pub mod typevar;
