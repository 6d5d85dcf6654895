//! The atomics facade: `core` normally, `loom` when model checking.
//!
//! Everything the library shares between CPUs is one of these types, so a
//! loom run checks the very code that runs in SMM.

#[cfg(loom)]
pub use loom::sync::atomic::{
    fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

#[cfg(not(loom))]
pub use core::sync::atomic::{
    fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
