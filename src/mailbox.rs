//! One mailbox per CPU (EDK2 `SMM_CPU_DATA_BLOCK`'s Procedure, Parameter,
//! Token, Status and Busy), split over two cache lines by writer: the
//! request line ([`Mailbox`]: the call and its tag, written by the BSP) and
//! the completion word ([`BusyFlag`], written by the AP; see its module for
//! the states).
//!
//! Hand-off protocol (BEHAVIOUR.md §2.2, §6.4 step 3):
//! 1. BSP: check the mailbox is free ([`Channel::try_claim`]: the last
//!    call's tag is DONE), fill the fields with Relaxed stores, store the
//!    new tag (Release — publishes the fields). The AP's run semaphore is
//!    not involved: it carries only the rendezvous barriers.
//! 2. AP: sees the new tag (Acquire — sees the fields), runs the
//!    procedure, then — if it wins [`BusyFlag::begin_finish`] — stores the
//!    status, completes the token, and finally [`BusyFlag::finish`]es
//!    (Release — the BSP that sees DONE sees the status and the token).
//!
//! Per hand-off each side reads the line the other wrote once and writes
//! its own line once, as in a bare cache-line ping-pong
//! (docs/ARCHITECTURE.md, "Rules from the measurements"; docs/PERFORMANCE.md [1]).

use core::ffi::c_void;

use crate::broadcast::MailboxPosts;
use crate::cpus::CpuState;
use crate::efi::Status;
use crate::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use crate::sync::{Abandon, BusyFlag, Finish, Start};
use crate::tokens::Token;

/// What kind of procedure the mailbox holds.
pub const KIND_PROCEDURE2: u32 = 0;
/// The old void `EFI_AP_PROCEDURE` of MmStartupThisAp (BEHAVIOUR.md §4: the library
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

/// The request line: written by the BSP only (and by `MmMpInitialize`).
#[repr(C)]
pub struct Mailbox {
    /// Tag of the last call posted (wrapping count).
    tag: AtomicU32,
    /// Tag of the last call the BSP timed out or gave up on (the AP skips
    /// it without running it if it has not started it yet).
    dropped: AtomicU32,
    kind: AtomicU32,
    procedure: AtomicUsize,
    argument: AtomicUsize,
    status: AtomicUsize,
    token: AtomicU32,
}

impl Mailbox {
    pub fn new() -> Self {
        Mailbox {
            tag: AtomicU32::new(0),
            dropped: AtomicU32::new(u32::MAX),
            kind: AtomicU32::new(KIND_PROCEDURE2),
            procedure: AtomicUsize::new(0),
            argument: AtomicUsize::new(0),
            status: AtomicUsize::new(0),
            token: AtomicU32::new(0),
        }
    }
}

impl Default for Mailbox {
    fn default() -> Self {
        Self::new()
    }
}

/// Permission to post one call: the mailbox was free (only the BSP posts,
/// so it stays free until the BSP uses the claim). Dropping it unused
/// gives nothing back because taking it wrote nothing.
#[must_use]
pub struct Claim(u32);

/// One CPU's mailbox: its request line, its completion word and the
/// BSP's notes about it (`CpuState::posted`, `CpuState::known_done`).
#[derive(Clone, Copy)]
pub struct Channel<'a> {
    pub request: &'a Mailbox,
    pub busy: &'a BusyFlag,
    pub posted: &'a AtomicU32,
    pub known_done: &'a AtomicU32,
    /// The BSP's count of calls posted to mailboxes (what a broadcast
    /// checks before it looks at mailboxes).
    pub posts: &'a MailboxPosts,
}

impl<'a> Channel<'a> {
    #[inline(always)]
    pub fn new(
        request: &'a Mailbox,
        busy: &'a BusyFlag,
        state: &'a CpuState,
        posts: &'a MailboxPosts,
    ) -> Self {
        Channel {
            request,
            busy,
            posted: &state.posted,
            known_done: &state.known_done,
            posts,
        }
    }

    /// Tag of the last call posted.
    #[inline(always)]
    fn tag(&self, order: Ordering) -> u32 {
        self.request.tag.load(order)
    }

    /// BSP: the last call's tag, from the BSP's copy (reading the request
    /// line would pull it away from the AP that polls it). Relaxed: written
    /// by this BSP, or by the BSP of an earlier SMI, whose stores the SMI
    /// boundary orders before this one's (end-of-SMI Release stores, entry
    /// Acquire loads).
    #[inline(always)]
    fn own_tag(&self) -> u32 {
        self.posted.load(Ordering::Relaxed)
    }

    /// Whether no call is in flight on this mailbox (BSP side).
    #[inline(always)]
    pub fn is_free(&self) -> bool {
        let tag = self.own_tag();
        // Relaxed: BSP scratch, as `own_tag`. A call seen done stays done
        // until the next post (only the BSP posts), so the busy flag, a
        // line the AP owns, is read only while a call may still run.
        self.known_done.load(Ordering::Relaxed) == tag || self.is_done(tag)
    }

    /// BSP: take the mailbox for a new call if it is free.
    #[inline(always)]
    pub fn try_claim(&self) -> Option<Claim> {
        let tag = self.own_tag();
        self.is_free().then_some(Claim(tag.wrapping_add(1)))
    }

    /// BSP: write the call and publish it. The AP may start at once.
    #[inline(always)]
    pub fn post(&self, claim: Claim, call: &Call) {
        let r = self.request;
        // Relaxed: published by the Release store of the tag that follows,
        // and read by the AP after its Acquire load of the tag.
        r.kind.store(call.kind, Ordering::Relaxed);
        r.procedure.store(call.procedure, Ordering::Relaxed);
        r.argument.store(call.argument as usize, Ordering::Relaxed);
        r.status.store(call.status as usize, Ordering::Relaxed);
        r.token.store(call.token, Ordering::Relaxed);
        // Release: publishes the fields above to the AP's Acquire load.
        r.tag.store(claim.0, Ordering::Release);
        // Relaxed: the BSP's own copy (see `own_tag`).
        self.posted.store(claim.0, Ordering::Relaxed);
        self.posts.note();
    }

    /// BSP: whether call `tag` is over. A wait loop polls this, not
    /// [`Channel::is_free`]: it reads only the line the AP writes (a spin
    /// loop that also reads a line the other CPU is reading costs a
    /// pipeline flush per snoop; docs/ARCHITECTURE.md, "Rules from the
    /// measurements").
    #[inline(always)]
    pub fn is_done(&self, tag: u32) -> bool {
        let done = self.busy.is_free(tag);
        if done {
            // Relaxed: BSP scratch (see `is_free`).
            self.known_done.store(tag, Ordering::Relaxed);
        }
        done
    }

    /// BSP: the tag of the call in flight (or of the last one posted).
    #[inline(always)]
    pub fn current(&self) -> u32 {
        self.own_tag()
    }

    /// Token slot + 1 of the last call posted (0 = none). BSP side.
    pub fn token(&self) -> u32 {
        // Relaxed: written in `post` by this BSP or an earlier SMI's (see
        // `own_tag`); the AP never writes the request line.
        self.request.token.load(Ordering::Relaxed)
    }

    /// The caller's status word of the last call posted (BSP side, timeouts).
    pub fn status_target(&self) -> *mut Status {
        // Relaxed: as `token`.
        self.request.status.load(Ordering::Relaxed) as *mut Status
    }

    /// BSP: give up on the call in flight after its deadline.
    #[inline(always)]
    pub fn abandon(&self) -> Abandon {
        let tag = self.own_tag();
        let verdict = self.busy.abandon(tag);
        if verdict == Abandon::Abandoned {
            self.drop_call(tag);
        }
        verdict
    }

    /// BSP at SMI exit: the call in flight outlived the exit timeout.
    pub fn mark_lost(&self) -> Abandon {
        let tag = self.own_tag();
        let verdict = self.busy.mark_lost(tag);
        if verdict == Abandon::Abandoned {
            self.drop_call(tag);
        }
        verdict
    }

    /// Tell an AP that has not started call `tag` not to run it. The busy
    /// flag already says so; this copy sits on the line the AP reads the
    /// call from, so the AP need not read its busy flag before it runs a
    /// call (that read would pull the line away from the BSP polling it).
    fn drop_call(&self, tag: u32) {
        // Release: the AP that sees the mark (Acquire) sees the busy
        // flag's new state, which the BSP changed before.
        self.request.dropped.store(tag, Ordering::Release);
    }

    /// Whether the call in flight was given up for the end of an SMI.
    pub fn is_lost(&self) -> bool {
        self.busy.is_lost()
    }

    /// AP, at check-in: the mailbox is free for this SMI (BEHAVIOUR.md §6.2 step 5).
    /// Nearly always it is already; then nothing is written (a store would
    /// pull the line from the BSP that read it last, on the entry's path).
    pub fn reset_free(&self) {
        // Acquire: the tag may come from a BSP of an earlier SMI.
        let tag = self.tag(Ordering::Acquire);
        if self.busy.done_tag() != Some(tag) {
            self.busy.reset_free(tag)
        }
    }

    /// AP: the tag of the last call posted (Acquire: with its fields).
    #[inline(always)]
    pub fn posted(&self) -> u32 {
        // Acquire pairs with the Release store in `post`: the fields of the
        // call are visible once its tag is.
        self.tag(Ordering::Acquire)
    }

    /// AP: the tag of the last call this AP is done with, or `None` while
    /// one is posted and not yet finished (or discarded) by it.
    pub fn completed(&self) -> Option<u32> {
        self.busy.done_tag()
    }

    /// AP: the tag of a posted call this AP has not finished, if any.
    pub fn pending(&self) -> Option<u32> {
        // Acquire pairs with the Release store in `post`: the fields of the
        // call are visible once its tag is.
        let tag = self.tag(Ordering::Acquire);
        self.busy.is_pending(tag).then_some(tag)
    }

    /// AP: run call `tag` (from [`Channel::pending`]) and publish its result.
    ///
    /// `token_at` maps a slot + 1 to its token. Returns `true` when the BSP
    /// ended the SMI without this AP while it ran (it must leave at once).
    // One copy for the dispatch loop's spin and its step (the AP side of
    // the hand-off is not an EFIAPI boundary: the call costs no saves).
    #[inline(never)]
    pub fn run(&self, tag: u32, token_at: impl Fn(u32) -> Option<&'a Token>) -> bool {
        let r = self.request;
        // Acquire pairs with `drop_call`. A stale "not dropped" only means
        // the AP runs a procedure whose result `begin_finish` discards.
        if r.dropped.load(Ordering::Acquire) == tag {
            if let Start::Discarded(lost) = self.busy.start(tag) {
                // The BSP timed the call out before we started it: it was
                // told EFI_TIMEOUT, so the procedure must not run now.
                return lost;
            }
        }
        // Relaxed: ordered after the Acquire load of the tag (`pending`).
        let kind = r.kind.load(Ordering::Relaxed);
        let procedure = r.procedure.load(Ordering::Relaxed);
        let argument = r.argument.load(Ordering::Relaxed) as *mut c_void;
        let status = run_procedure(kind, procedure, argument);
        match self.busy.begin_finish(tag) {
            Finish::Won => {}
            Finish::Abandoned => return false,
            Finish::Lost => return true,
        }
        // Relaxed: see above.
        let target = r.status.load(Ordering::Relaxed) as *mut Status;
        if !target.is_null() {
            // SAFETY: the BSP validated the caller's CPUStatus pointer as
            // non-null and the caller keeps it valid until the call
            // completes (MM MP contract). We won `begin_finish`, so the BSP
            // has not reported a timeout for this call and will not write
            // this word itself.
            unsafe { target.write_volatile(status) };
        }
        if let Some(token) = token_at(r.token.load(Ordering::Relaxed)) {
            token.complete_one(status);
        }
        self.busy.finish(tag);
        false
    }
}

/// Call a procedure of the given kind. A zero procedure is never posted
/// (the BSP rejects NULL), but is treated as "nothing to run".
pub(crate) fn run_procedure(kind: u32, procedure: usize, argument: *mut c_void) -> Status {
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
