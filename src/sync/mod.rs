//! Layer 2 — the synchronisation primitives, and the one atomic facade
//! every layer imports its atomic types from.
//!
//! * [`atomic`]: one facade, `core::sync::atomic` in firmware and on the
//!   host, `loom` under `cfg(loom)` (the tokio `src/loom/` pattern).
//! * [`Semaphore`]: EDK2's counting semaphore with lock-down (BEHAVIOUR.md §6.6).
//! * [`BusyFlag`]: the completion word of a mailbox (EDK2's per-CPU `Busy`
//!   spin lock, extended with the timeout states of BEHAVIOUR.md §2.7).
//! * [`pause`]: how a CPU waits (platform `CpuPause`, else the pause
//!   instruction; a loom yield under `cfg(loom)`).
//!
//! Every ordering weaker than SeqCst is justified next to the operation.

pub mod atomic;
mod busy;
mod semaphore;
mod wait;

pub use busy::{Abandon, BusyFlag, Finish, Start};
pub use semaphore::{Semaphore, SEMAPHORE_LOCKED};
pub use wait::{pause, PauseFn};
