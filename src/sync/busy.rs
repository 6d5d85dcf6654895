//! The completion word of a per-CPU mailbox.
//!
//! EDK2 keeps a `Busy` spin lock per CPU: the BSP acquires it to dispatch,
//! the AP releases it when the procedure returned. Both CPUs write that
//! word, and the BSP writes the call next to it, so every hand-off moves
//! the mailbox's line back and forth more often than the hand-off needs.
//!
//! mm-mp splits the roles by cache line (docs/ARCHITECTURE.md, "Rules
//! from the measurements"):
//! * the BSP numbers the calls it posts to a CPU (the *tag*, a wrapping
//!   32-bit count kept in the mailbox's request line, which only the BSP
//!   writes); a call is posted by storing its tag (Release);
//! * this word, on a line of its own that the AP writes, says how far the
//!   AP got: `(tag, state)`. The BSP writes it only to time a call out.
//!
//! For the call with tag `t` (the previous one had `t - 1`):
//! ```text
//!  (t-1, DONE) --begin_finish (AP)--> (t, FINISHING) --finish (AP)--> (t, DONE)
//!      |
//!      +--abandon (BSP, timeout)--> (t, ABANDONED) --discard (AP)--> (t, DONE)
//!      |                               |
//!      +--mark_lost (BSP, SMI exit)----+--> (t, LOST) --discard (AP)--> (t, DONE)
//! ```
//! The mailbox is free when the word is `(t, DONE)` for the last posted
//! `t`; "claimed" is the BSP's own knowledge (it only posts to a free
//! mailbox), so claiming writes nothing. Exactly one of `begin_finish` and
//! `abandon`/`mark_lost` wins; the winner owns the caller's status word for
//! the call. LOST also tells the AP that the SMI it was dispatched in has
//! ended without it (BEHAVIOUR.md §6.3 step 4): the verdict travels in the same
//! word, so there is no window where the AP could miss it. The AP leaves
//! ABANDONED and LOST with a compare-exchange, so a `mark_lost` landing on
//! an abandoned call while the AP discards it is never overwritten.

use super::atomic::{AtomicU64, Ordering};

const DONE: u32 = 0;
const FINISHING: u32 = 1;
const ABANDONED: u32 = 2;
const LOST: u32 = 3;

/// The word for call `tag` in `state`.
const fn word(tag: u32, state: u32) -> u64 {
    ((tag as u64) << 32) | state as u64
}

const fn tag_of(word: u64) -> u32 {
    (word >> 32) as u32
}

const fn state_of(word: u64) -> u32 {
    word as u32
}

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

/// Result of [`BusyFlag::abandon`] and [`BusyFlag::mark_lost`].
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

/// What the AP found when it looked at a posted call ([`BusyFlag::start`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Start {
    /// Run it.
    Run,
    /// The BSP timed it out before it started (`true`: and the SMI ended
    /// without this AP). It was discarded; the mailbox is free again.
    Discarded(bool),
}

#[repr(C)]
pub struct BusyFlag(AtomicU64);

impl BusyFlag {
    /// Free, with no call posted yet (tag 0).
    pub fn new() -> Self {
        BusyFlag(AtomicU64::new(word(0, DONE)))
    }

    /// BSP: whether call `tag` (the last one posted) is over.
    #[inline(always)]
    pub fn is_free(&self, tag: u32) -> bool {
        // Acquire pairs with the Release of `finish`/`discard`: a BSP that
        // sees the call over also sees the status and token updates the AP
        // made before it, and the AP no longer reads the request line.
        self.0.load(Ordering::Acquire) == word(tag, DONE)
    }

    /// Whether the call in flight was given up for the end of an SMI.
    pub fn is_lost(&self) -> bool {
        // Acquire pairs with the Release of `mark_lost`.
        state_of(self.0.load(Ordering::Acquire)) == LOST
    }

    /// AP: whether call `tag` (read from the request line) still has to be
    /// taken care of by this AP.
    pub fn is_pending(&self, tag: u32) -> bool {
        // Relaxed: the AP is the only writer of `(tag, DONE)` for a posted
        // tag; the BSP's writes (ABANDONED/LOST) also mean "pending".
        self.0.load(Ordering::Relaxed) != word(tag, DONE)
    }

    /// AP: the tag of the last call that is over (`None` while one runs or
    /// waits to be discarded).
    pub fn done_tag(&self) -> Option<u32> {
        // Relaxed: read by the AP, the only CPU that writes DONE for a
        // posted call (and only to decide whether to look at the request).
        let w = self.0.load(Ordering::Relaxed);
        (state_of(w) == DONE).then_some(tag_of(w))
    }

    /// AP: look at call `tag` before running it; discards it when the BSP
    /// timed it out already.
    pub fn start(&self, tag: u32) -> Start {
        match self.start_word(tag) {
            Ok(_) => Start::Run,
            Err(lost) => Start::Discarded(lost),
        }
    }

    /// [`BusyFlag::start`] returning, when the call is to run, the word it
    /// found (what [`BusyFlag::begin_finish_from`] expects; a broadcast's
    /// flag need not hold the previous tag), else whether it came back lost.
    pub fn start_word(&self, tag: u32) -> Result<u64, bool> {
        // Acquire pairs with `mark_lost`'s Release (the SMI-exit verdict).
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            let state = state_of(current);
            if tag_of(current) != tag || (state != ABANDONED && state != LOST) {
                return Ok(current);
            }
            match self.discard(current, tag) {
                Ok(()) => return Err(state == LOST),
                Err(now) => current = now,
            }
        }
    }

    /// AP: leave ABANDONED/LOST for `(tag, DONE)`; `Err` with the word when
    /// the BSP changed it meanwhile (ABANDONED → LOST).
    fn discard(&self, current: u64, tag: u32) -> Result<(), u64> {
        // Release on success: as `finish` (the BSP owns the status word,
        // but a BSP that sees the call over must see it fully ended).
        // Acquire on failure: the new word may be `mark_lost`'s verdict.
        self.0
            .compare_exchange(
                current,
                word(tag, DONE),
                Ordering::Release,
                Ordering::Acquire,
            )
            .map(|_| ())
    }

    /// AP, after running call `tag`: claim the right to publish its result.
    /// The word is `(tag - 1, DONE)` unless the BSP gave the call up.
    #[inline(always)]
    pub fn begin_finish(&self, tag: u32) -> Finish {
        self.begin_finish_from(word(tag.wrapping_sub(1), DONE), tag)
    }

    /// [`BusyFlag::begin_finish`] from the word the AP expects (a
    /// broadcast's: the one [`BusyFlag::start_word`] returned).
    #[inline(always)]
    pub fn begin_finish_from(&self, expected: u64, tag: u32) -> Finish {
        // Relaxed on success: the AP acquired the call through the request
        // line's tag; this CAS only decides ownership of the result slot
        // against `abandon`/`mark_lost`, and both sides then publish with
        // Release stores (`finish`) or own the slot alone. Acquire on
        // failure pairs with `mark_lost`'s Release (the SMI-exit verdict).
        let mut current = expected;
        loop {
            match self.0.compare_exchange(
                current,
                word(tag, FINISHING),
                Ordering::Relaxed,
                Ordering::Acquire,
            ) {
                Ok(_) => return Finish::Won,
                Err(now) if tag_of(now) == tag => {
                    let mut seen = now;
                    while let Err(again) = self.discard(seen, tag) {
                        seen = again;
                    }
                    return if state_of(seen) == LOST {
                        Finish::Lost
                    } else {
                        Finish::Abandoned
                    };
                }
                // Not the word a posted call can have: only a region
                // overwritten behind our back. Take it as it is.
                Err(now) => current = now,
            }
        }
    }

    /// AP, after winning [`BusyFlag::begin_finish`]: the call is over.
    #[inline(always)]
    pub fn finish(&self, tag: u32) {
        // Release: publishes the status write and token completion that
        // precede it to the BSP's Acquire in `is_free`. Nobody else writes
        // the word in FINISHING.
        self.0.store(word(tag, DONE), Ordering::Release)
    }

    /// BSP: give up on call `tag` after its deadline.
    #[inline(always)]
    pub fn abandon(&self, tag: u32) -> Abandon {
        // Relaxed on success: the BSP then writes the result slot itself
        // and the AP will not touch it (it fails `begin_finish`).
        self.give_up(
            tag,
            ABANDONED,
            Ordering::Relaxed,
            word(tag.wrapping_sub(1), DONE),
            false,
        )
    }

    /// BSP at SMI exit: call `tag` outlived the exit timeout. Returns
    /// `Abandoned` when the BSP now owns the status word, `AlreadyAbandoned`
    /// when an earlier timeout owns it (the AP is lost in both cases),
    /// `Finishing`/`AlreadyFree` when the AP is done after all (not lost).
    pub fn mark_lost(&self, tag: u32) -> Abandon {
        // Release on success: the AP that reads LOST (Acquire in
        // `start`/`begin_finish`/`is_lost`) sees the SMI-exit state before it.
        self.give_up(
            tag,
            LOST,
            Ordering::Release,
            word(tag.wrapping_sub(1), DONE),
            false,
        )
    }

    /// [`BusyFlag::abandon`] for a broadcast's flag, which holds the tag of
    /// whatever broadcast its AP last finished (not necessarily `tag - 1`).
    pub fn abandon_any(&self, tag: u32) -> Abandon {
        // Relaxed on success: as `abandon`.
        self.give_up_any(tag, ABANDONED, Ordering::Relaxed)
    }

    /// [`BusyFlag::mark_lost`] for a broadcast's flag (see `abandon_any`).
    pub fn mark_lost_any(&self, tag: u32) -> Abandon {
        // Release on success: as `mark_lost`.
        self.give_up_any(tag, LOST, Ordering::Release)
    }

    fn give_up_any(&self, tag: u32, to: u32, success: Ordering) -> Abandon {
        // Acquire: seeing the call over must also show the AP's results.
        let now = self.0.load(Ordering::Acquire);
        let not_started = tag_of(now) != tag && state_of(now) == DONE;
        if !(not_started || to == LOST && now == word(tag, ABANDONED)) {
            return Self::verdict(now, tag);
        }
        self.give_up(tag, to, success, now, true)
    }

    /// Move call `tag` from `current` (not started, or ABANDONED when `to`
    /// is LOST) to `to`. `any_done`: any `(other tag, DONE)` word means
    /// "not started" (a broadcast's flag).
    fn give_up(
        &self,
        tag: u32,
        to: u32,
        success: Ordering,
        current: u64,
        any_done: bool,
    ) -> Abandon {
        let mut current = current;
        loop {
            // Acquire on failure: seeing DONE must also show the AP's results.
            match self
                .0
                .compare_exchange(current, word(tag, to), success, Ordering::Acquire)
            {
                Ok(w) if state_of(w) == DONE => return Abandon::Abandoned,
                Ok(_) => return Abandon::AlreadyAbandoned,
                Err(now) if to == LOST && now == word(tag, ABANDONED) => current = now,
                Err(now) if any_done && tag_of(now) != tag && state_of(now) == DONE => {
                    current = now
                }
                Err(now) => return Self::verdict(now, tag),
            }
        }
    }

    /// What a failed `abandon`/`mark_lost` of call `tag` found.
    fn verdict(now: u64, tag: u32) -> Abandon {
        if tag_of(now) != tag {
            // Not even started, yet not `(tag - 1, DONE)`: only a region
            // overwritten behind our back; report nothing to own.
            return Abandon::AlreadyFree;
        }
        match state_of(now) {
            FINISHING => Abandon::Finishing,
            ABANDONED | LOST => Abandon::AlreadyAbandoned,
            _ => Abandon::AlreadyFree,
        }
    }

    /// Check-in (BEHAVIOUR.md §6.2 step 5): the mailbox is free for this SMI, the
    /// last posted call being `tag`.
    pub fn reset_free(&self, tag: u32) {
        // Release: same publication as `finish`.
        self.0.store(word(tag, DONE), Ordering::Release)
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

    /// Run call `tag` to the end the way the AP does.
    fn ap_runs(b: &BusyFlag, tag: u32) -> Finish {
        match b.start(tag) {
            Start::Run => {
                let f = b.begin_finish(tag);
                if f == Finish::Won {
                    b.finish(tag);
                }
                f
            }
            Start::Discarded(true) => Finish::Lost,
            Start::Discarded(false) => Finish::Abandoned,
        }
    }

    #[test]
    fn post_finish_cycle() {
        let b = BusyFlag::new();
        assert!(b.is_free(0));
        assert!(!b.is_pending(0));
        // Call 1 posted.
        assert!(!b.is_free(1) && b.is_pending(1));
        assert_eq!(b.start(1), Start::Run);
        assert_eq!(b.begin_finish(1), Finish::Won);
        assert_eq!(b.abandon(1), Abandon::Finishing);
        assert_eq!(b.mark_lost(1), Abandon::Finishing);
        b.finish(1);
        assert!(b.is_free(1) && !b.is_pending(1));
        assert_eq!(b.abandon(1), Abandon::AlreadyFree);
        assert_eq!(b.mark_lost(1), Abandon::AlreadyFree);
    }

    #[test]
    fn abandon_wins_then_ap_discards() {
        let b = BusyFlag::new();
        assert_eq!(b.abandon(1), Abandon::Abandoned);
        assert_eq!(b.abandon(1), Abandon::AlreadyAbandoned);
        assert!(!b.is_free(1), "a timed-out AP stays busy");
        assert_eq!(ap_runs(&b, 1), Finish::Abandoned);
        assert!(b.is_free(1));
        // Abandoned while running: the late result is discarded.
        assert_eq!(b.start(2), Start::Run);
        assert_eq!(b.abandon(2), Abandon::Abandoned);
        assert_eq!(b.begin_finish(2), Finish::Abandoned);
        assert!(b.is_free(2) && !b.is_lost());
    }

    #[test]
    fn lost_from_posted_or_abandoned() {
        let b = BusyFlag::new();
        assert_eq!(b.mark_lost(0), Abandon::AlreadyFree);
        assert_eq!(b.mark_lost(1), Abandon::Abandoned);
        assert!(b.is_lost() && !b.is_free(1));
        assert_eq!(b.abandon(1), Abandon::AlreadyAbandoned);
        assert_eq!(ap_runs(&b, 1), Finish::Lost);
        assert!(b.is_free(1) && !b.is_lost());
        assert_eq!(b.abandon(2), Abandon::Abandoned);
        assert_eq!(b.mark_lost(2), Abandon::AlreadyAbandoned);
        assert!(b.is_lost());
        let Start::Discarded(true) = b.start(2) else {
            panic!("lost call must be discarded")
        };
        assert!(b.is_free(2));
    }

    /// A broadcast's flag: its AP finished some older broadcast, not
    /// necessarily the previous tag.
    #[test]
    fn any_forms_accept_any_older_done_tag() {
        let b = BusyFlag::new();
        b.reset_free(7);
        assert!(!b.is_free(9));
        // Runs and wins.
        let expected = b.start_word(9).expect("not given up");
        assert_eq!(b.begin_finish_from(expected, 9), Finish::Won);
        assert_eq!(b.abandon_any(9), Abandon::Finishing);
        assert_eq!(b.mark_lost_any(9), Abandon::Finishing);
        b.finish(9);
        assert!(b.is_free(9));
        assert_eq!(b.abandon_any(9), Abandon::AlreadyFree);
        assert_eq!(b.mark_lost_any(9), Abandon::AlreadyFree);
        // Given up before it started, then lost: discarded, never run.
        assert_eq!(b.abandon_any(12), Abandon::Abandoned);
        assert_eq!(b.abandon_any(12), Abandon::AlreadyAbandoned);
        assert_eq!(b.mark_lost_any(12), Abandon::AlreadyAbandoned);
        assert!(b.is_lost() && !b.is_free(12));
        assert_eq!(b.start_word(12), Err(true));
        assert!(b.is_free(12) && !b.is_lost());
        // Given up while it runs: the late result is discarded.
        let expected = b.start_word(13).expect("not given up");
        assert_eq!(b.abandon_any(13), Abandon::Abandoned);
        assert_eq!(b.begin_finish_from(expected, 13), Finish::Abandoned);
        assert!(b.is_free(13));
        // Lost before it started.
        assert_eq!(b.mark_lost_any(20), Abandon::Abandoned);
        assert_eq!(b.start_word(20), Err(true));
        assert!(b.is_free(20));
    }

    #[test]
    fn tags_wrap() {
        let b = BusyFlag::new();
        b.reset_free(u32::MAX);
        assert!(b.is_free(u32::MAX));
        assert!(b.is_pending(0));
        assert_eq!(b.abandon(0), Abandon::Abandoned);
        assert_eq!(ap_runs(&b, 0), Finish::Abandoned);
        assert!(b.is_free(0));
    }
}
