//! mm-mp: the multi-processor core of EDK2's SMM CPU driver as a `no_std`
//! library with a C API (BEHAVIOUR.md §11): EFI_MM_MP_PROTOCOL, the SMI
//! rendezvous, EFI_SMM_CPU_SERVICE_PROTOCOL and CPU hot-plug,
//! gMmst->MmStartupThisAp, SmmCpuSyncLib-compatible
//! semaphores. All state lives in memory the caller supplies.
//!
//! Layers (docs/ARCHITECTURE.md): `efi` → `sync` → `memory` → `platform`
//! → core (`mailbox`, `broadcast`, `tokens`, `cpus`, `cpu_service`, `instance`, `dispatch`,
//! `rendezvous`) → `ffi`.
#![no_std]
#![allow(clippy::missing_safety_doc)]

// Host builds (tests, loom, anything not built with panic = "abort") link
// std for its panic runtime; firmware builds are pure core.
#[cfg(any(test, loom, not(panic = "abort")))]
extern crate std;

pub mod broadcast;
pub mod cpu_service;
pub mod cpus;
pub mod dispatch;
pub mod efi;
#[allow(non_snake_case)]
pub mod ffi;
pub mod instance;
pub mod mailbox;
pub mod memory;
pub mod platform;
pub mod rendezvous;
pub mod stats;
pub mod sync;
pub mod sync_lib;
pub mod tokens;

pub use efi::Status;
pub use instance::Instance;
pub use rendezvous::Poll;
