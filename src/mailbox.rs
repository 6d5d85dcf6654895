//! One mailbox per CPU (EDK2 `SMM_CPU_DATA_BLOCK`'s Procedure, Parameter,
//! Token, Status and Busy), on its own cache line.
//!
//! Hand-off protocol (SPEC §2.2, §6.4 step 3):
//! 1. BSP: [`BusyFlag::try_claim`], fill the fields with Relaxed stores,
//!    release the AP's run semaphore (Release — publishes the fields).
//! 2. AP: takes its run semaphore (Acquire — sees the fields), runs the
//!    procedure, then — if it wins [`BusyFlag::begin_finish`] — stores the
//!    status, completes the token, and finally [`BusyFlag::finish`]es
//!    (Release — the BSP that sees FREE sees the status and the token).

use core::ffi::c_void;

use crate::efi::Status;
use crate::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use crate::sync::{BusyFlag, Finish};
use crate::tokens::Token;

/// What kind of procedure the mailbox holds.
pub const KIND_PROCEDURE2: u32 = 0;
/// The old void `EFI_AP_PROCEDURE` of MmStartupThisAp (SPEC §4: the library
/// wraps it instead of calling it through the wrong pointer type).
pub const KIND_LEGACY: u32 = 1;

/// A call as the BSP posts it.
#[derive(Clone, Copy)]
pub struct Call {
    pub procedure: usize,
    pub argument: *mut c_void,
    pub kind: u32,
    /// Caller's status word, or null.
    pub status: *mut Status,
    /// Token slot + 1, or 0 for a call without token.
    pub token: u32,
}

#[repr(C)]
pub struct Mailbox {
    pub busy: BusyFlag,
    kind: AtomicU32,
    procedure: AtomicUsize,
    argument: AtomicUsize,
    status: AtomicUsize,
    token: AtomicU32,
}

impl Mailbox {
    pub fn new() -> Self {
        Mailbox {
            busy: BusyFlag::new(),
            kind: AtomicU32::new(KIND_PROCEDURE2),
            procedure: AtomicUsize::new(0),
            argument: AtomicUsize::new(0),
            status: AtomicUsize::new(0),
            token: AtomicU32::new(0),
        }
    }

    /// BSP, after a successful claim: write the call. The caller then
    /// releases the AP's run semaphore, which publishes these stores.
    pub fn post(&self, call: &Call) {
        // Relaxed: published by the Release increment of the AP's run
        // semaphore that follows, and read by the AP after its Acquire.
        self.kind.store(call.kind, Ordering::Relaxed);
        self.procedure.store(call.procedure, Ordering::Relaxed);
        self.argument
            .store(call.argument as usize, Ordering::Relaxed);
        self.status.store(call.status as usize, Ordering::Relaxed);
        self.token.store(call.token, Ordering::Relaxed);
    }

    /// Token slot + 1 of the call in flight (0 = none). Read by the BSP only
    /// while the mailbox is claimed (it wrote the value itself).
    pub fn token(&self) -> u32 {
        // Relaxed: written by this same CPU (the BSP) in `post`.
        self.token.load(Ordering::Relaxed)
    }

    /// The caller's status word of the call in flight (BSP side, timeouts).
    pub fn status_target(&self) -> *mut Status {
        // Relaxed: written by this same CPU (the BSP) in `post`.
        self.status.load(Ordering::Relaxed) as *mut Status
    }

    /// AP: run the posted call and publish its result.
    ///
    /// `token_at` maps a slot + 1 to its token. Returns `true` when the BSP
    /// ended the SMI without this AP while it ran (it must leave at once).
    pub fn run<'a>(&self, token_at: impl Fn(u32) -> Option<&'a Token>) -> bool {
        if self.busy.is_abandoned() {
            // The BSP timed the call out before we started it: it was told
            // EFI_TIMEOUT, so the procedure must not run now.
            let lost = self.busy.is_lost();
            self.busy.finish();
            return lost;
        }
        // Relaxed: ordered after the Acquire of our run semaphore (module doc).
        let kind = self.kind.load(Ordering::Relaxed);
        let procedure = self.procedure.load(Ordering::Relaxed);
        let argument = self.argument.load(Ordering::Relaxed) as *mut c_void;
        let status = run_procedure(kind, procedure, argument);
        let verdict = self.busy.begin_finish();
        if verdict == Finish::Won {
            // Relaxed: see above.
            let target = self.status.load(Ordering::Relaxed) as *mut Status;
            if !target.is_null() {
                // SAFETY: the BSP validated the caller's CPUStatus pointer as
                // non-null and the caller keeps it valid until the call
                // completes (MM MP contract). We won `begin_finish`, so the
                // BSP has not reported a timeout for this call and will not
                // write this word itself.
                unsafe { target.write_volatile(status) };
            }
            if let Some(token) = token_at(self.token.load(Ordering::Relaxed)) {
                token.complete_one(status);
            }
        }
        self.busy.finish();
        verdict == Finish::Lost
    }
}

impl Default for Mailbox {
    fn default() -> Self {
        Self::new()
    }
}

/// Call a procedure of the given kind. A zero procedure is never posted
/// (the BSP rejects NULL), but is treated as "nothing to run".
fn run_procedure(kind: u32, procedure: usize, argument: *mut c_void) -> Status {
    if procedure == 0 {
        return Status::SUCCESS;
    }
    if kind == KIND_LEGACY {
        // SAFETY: the BSP stored a non-null `EFI_AP_PROCEDURE` (a function
        // pointer of exactly this type) converted to usize for KIND_LEGACY.
        let f: unsafe extern "efiapi" fn(*mut c_void) = unsafe { core::mem::transmute(procedure) };
        // SAFETY: calling the caller's procedure with the caller's argument
        // is the service contract of MmStartupThisAp.
        unsafe { f(argument) };
        Status::SUCCESS
    } else {
        // SAFETY: the BSP stored a non-null `EFI_AP_PROCEDURE2` converted to
        // usize for KIND_PROCEDURE2.
        let f: unsafe extern "efiapi" fn(*mut c_void) -> Status =
            unsafe { core::mem::transmute(procedure) };
        // SAFETY: calling the caller's procedure with the caller's argument
        // is the service contract of DispatchProcedure/BroadcastProcedure.
        unsafe { f(argument) }
    }
}
