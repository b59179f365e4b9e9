//! What the kinds share: lookups, the by-value registry, the tracker of
//! classes and type parameters, digests, the dump in progress, canonical
//! names, cached statics, reduce-value builders and the address-keyed weak
//! map.

pub mod digest;
pub mod dump;
pub mod lookup;
pub mod names;
pub mod reduce;
pub mod registry;
pub mod statics;
pub mod tracker;
pub mod weakmap;
