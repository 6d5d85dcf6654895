//! The claim word of a per-CPU mailbox.
//!
//! EDK2 keeps a `Busy` spin lock per CPU: the BSP acquires it to dispatch,
//! the AP releases it when the procedure returned. We keep the same idea in
//! one 32-bit word with two extra states so that a timed-out call
//! (SPEC §2.7) can hand the result slot back to the BSP without a race:
//!
//! ```text
//!   FREE --try_claim (BSP)--> CLAIMED --begin_finish (AP)--> FINISHING --finish (AP)--> FREE
//!                               |
//!                               +--abandon (BSP, timeout)--> ABANDONED --finish (AP)--> FREE
//!                               |                               |
//!                               +--mark_lost (BSP, SMI exit)----+--> LOST --finish (AP)--> FREE
//! ```
//! Exactly one of `begin_finish` and `abandon`/`mark_lost` wins; the winner
//! owns the caller's status word for this call. LOST also tells the AP
//! that the SMI it was dispatched in has ended without it (SPEC §6.3 step
//! 4): the verdict travels in the same word, so there is no window where
//! the AP could miss it.

use super::atomic::{AtomicU32, Ordering};

const FREE: u32 = 0;
const CLAIMED: u32 = 1;
const FINISHING: u32 = 2;
const ABANDONED: u32 = 3;
const LOST: u32 = 4;

/// Result of [`BusyFlag::begin_finish`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Finish {
    /// The AP publishes its result.
    Won,
    /// The call timed out: discard the result, stay in the dispatch loop.
    Abandoned,
    /// The BSP ended the SMI without this AP: discard and leave.
    Lost,
}

/// Result of [`BusyFlag::abandon`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Abandon {
    /// The BSP won: the AP will discard its late result.
    Abandoned,
    /// The AP is writing its result right now; wait for [`BusyFlag::is_free`].
    Finishing,
    /// The AP already finished.
    AlreadyFree,
    /// An earlier timeout already abandoned it (or it is already lost).
    AlreadyAbandoned,
}

#[repr(C)]
pub struct BusyFlag(AtomicU32);

impl BusyFlag {
    pub fn new() -> Self {
        BusyFlag(AtomicU32::new(FREE))
    }

    /// BSP: take the mailbox for a new call.
    pub fn try_claim(&self) -> bool {
        // Acquire on success pairs with the Release of `finish`: the AP has
        // stopped reading the mailbox and its last results are visible
        // before the BSP writes new mailbox contents.
        self.0
            .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// BSP: give back a claim that was never handed to the AP.
    pub fn unclaim(&self) {
        // Release: nothing the BSP wrote into the mailbox is meant for
        // anyone, but keep the word's hand-offs uniformly release/acquire.
        self.0.store(FREE, Ordering::Release)
    }

    /// Whether no call is in flight on this mailbox.
    pub fn is_free(&self) -> bool {
        // Acquire pairs with `finish`: a BSP that sees FREE also sees the
        // status and token updates the AP made before it.
        self.0.load(Ordering::Acquire) == FREE
    }

    /// Whether the BSP gave up on the current call (checked by the AP
    /// before it starts the procedure).
    pub fn is_abandoned(&self) -> bool {
        // Relaxed: a stale "not abandoned" only means the AP runs a
        // procedure whose result it will then discard in `begin_finish`.
        matches!(self.0.load(Ordering::Relaxed), ABANDONED | LOST)
    }

    /// Whether the BSP ended an SMI without this AP (still running).
    pub fn is_lost(&self) -> bool {
        // Acquire pairs with the Release of `mark_lost`.
        self.0.load(Ordering::Acquire) == LOST
    }

    /// AP: claim the right to publish the result.
    pub fn begin_finish(&self) -> Finish {
        // Relaxed on success: the AP already acquired the mailbox through
        // its run semaphore; this CAS only decides ownership of the result
        // slot against `abandon`/`mark_lost`, and both sides then publish
        // with Release stores (`finish`) or own the slot alone. Acquire on
        // failure pairs with `mark_lost`'s Release (the SMI-exit verdict).
        match self
            .0
            .compare_exchange(CLAIMED, FINISHING, Ordering::Relaxed, Ordering::Acquire)
        {
            Ok(_) => Finish::Won,
            Err(LOST) => Finish::Lost,
            Err(_) => Finish::Abandoned,
        }
    }

    /// AP: the call is over (results published or discarded).
    pub fn finish(&self) {
        // Release: publishes the status write and token completion that
        // precede it to the BSP's Acquire in `is_free`/`try_claim`.
        self.0.store(FREE, Ordering::Release)
    }

    /// BSP: give up on the call after its deadline.
    pub fn abandon(&self) -> Abandon {
        // Acquire on failure: seeing FREE must also show the AP's results.
        // Relaxed on success: the BSP then writes the result slot itself
        // and the AP will not touch it (it fails `begin_finish`).
        match self
            .0
            .compare_exchange(CLAIMED, ABANDONED, Ordering::Relaxed, Ordering::Acquire)
        {
            Ok(_) => Abandon::Abandoned,
            Err(FINISHING) => Abandon::Finishing,
            Err(ABANDONED | LOST) => Abandon::AlreadyAbandoned,
            Err(_) => Abandon::AlreadyFree,
        }
    }

    /// BSP at SMI exit: the AP's call outlived the exit timeout. Returns
    /// `Abandoned` when the BSP now owns the status word, `AlreadyAbandoned`
    /// when an earlier timeout owns it (the AP is lost in both cases),
    /// `Finishing`/`AlreadyFree` when the AP is done after all (not lost).
    pub fn mark_lost(&self) -> Abandon {
        let mut current = CLAIMED;
        loop {
            // Release on success: the AP that reads LOST (Acquire in
            // `begin_finish`/`is_lost`) sees the SMI-exit state before it.
            // Acquire on failure: seeing FREE shows the AP's results.
            match self
                .0
                .compare_exchange(current, LOST, Ordering::Release, Ordering::Acquire)
            {
                Ok(CLAIMED) => return Abandon::Abandoned,
                Ok(_) => return Abandon::AlreadyAbandoned,
                Err(ABANDONED) => current = ABANDONED,
                Err(LOST) => return Abandon::AlreadyAbandoned,
                Err(FINISHING) => return Abandon::Finishing,
                Err(_) => return Abandon::AlreadyFree,
            }
        }
    }

    /// Check-in (SPEC §6.2 step 5): the mailbox is free for this SMI.
    pub fn reset_free(&self) {
        // Release: same publication as `finish`.
        self.0.store(FREE, Ordering::Release)
    }
}

impl Default for BusyFlag {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn claim_finish_cycle() {
        let b = BusyFlag::new();
        assert!(b.is_free());
        assert!(b.try_claim());
        assert!(!b.try_claim());
        assert!(!b.is_free());
        assert_eq!(b.begin_finish(), Finish::Won);
        assert_eq!(b.abandon(), Abandon::Finishing);
        assert_eq!(b.mark_lost(), Abandon::Finishing);
        b.finish();
        assert!(b.is_free());
        assert_eq!(b.abandon(), Abandon::AlreadyFree);
    }

    #[test]
    fn abandon_wins_then_ap_discards() {
        let b = BusyFlag::new();
        assert!(b.try_claim());
        assert_eq!(b.abandon(), Abandon::Abandoned);
        assert_eq!(b.abandon(), Abandon::AlreadyAbandoned);
        assert!(b.is_abandoned());
        assert!(!b.try_claim(), "a timed-out AP stays busy");
        assert_eq!(b.begin_finish(), Finish::Abandoned);
        b.finish();
        assert!(b.try_claim());
        b.unclaim();
        assert!(b.is_free());
    }

    #[test]
    fn lost_from_claimed_or_abandoned() {
        let b = BusyFlag::new();
        assert_eq!(b.mark_lost(), Abandon::AlreadyFree);
        assert!(b.try_claim());
        assert_eq!(b.mark_lost(), Abandon::Abandoned);
        assert!(b.is_lost() && b.is_abandoned() && !b.try_claim());
        assert_eq!(b.abandon(), Abandon::AlreadyAbandoned);
        assert_eq!(b.begin_finish(), Finish::Lost);
        b.finish();
        assert!(b.try_claim());
        assert_eq!(b.abandon(), Abandon::Abandoned);
        assert_eq!(b.mark_lost(), Abandon::AlreadyAbandoned);
        assert!(b.is_lost());
        assert_eq!(b.begin_finish(), Finish::Lost);
    }
}
