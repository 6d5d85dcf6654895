//! The token pool (BEHAVIOUR.md §3): a fixed array of [`Token`]s inside the
//! caller's region, an intrusive FIFO of the tokens in use (the link lives
//! in the token), and handles that encode slot + sequence number.
//!
//! * Handle = `(sequence << SLOT_BITS) | (slot + 1)`: never NULL, validated
//!   in O(1) without dereferencing it (slot bound, sequence stored in the
//!   slot, sequence issued in the current SMI).
//! * Reset at SMI exit is O(1): the "first sequence of this SMI" moves to
//!   the next sequence, so every earlier handle is stale at once, and the
//!   never-used watermark goes back to 0.
//! * Within an SMI a slot is reused only under exhaustion, and only a
//!   token whose completion was observed (Check/Wait/GetTokenResult),
//!   oldest first; its old handle is then stale (EFI_NOT_FOUND).
//!
//! Only the BSP allocates and resets (the services reject APs), so the pool
//! state is written by one CPU at a time; it is still made of atomics so
//! every CPU may validate handles concurrently.

use crate::efi::Status;
use crate::memory::Strided;
use crate::platform::Deadline;
use crate::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Bits of a handle that hold slot + 1.
#[cfg(target_pointer_width = "64")]
pub const SLOT_BITS: u32 = 24;
#[cfg(not(target_pointer_width = "64"))]
pub const SLOT_BITS: u32 = 12;
/// Largest `MaxTokens` a configuration may ask for.
pub const MAX_TOKENS: u32 = (1 << SLOT_BITS) - 1;
const SLOT_MASK: usize = (1 << SLOT_BITS) - 1;
const SEQ_MASK: usize = usize::MAX >> SLOT_BITS;

const OBSERVED: u32 = 1;
const TIMED_OUT: u32 = 2;

/// One non-blocking call (EDK2 `PROCEDURE_TOKEN` + its `RunningApCount`).
#[repr(C)]
pub struct Token {
    seq: AtomicUsize,
    /// APs that still have to finish.
    pending: AtomicU32,
    flags: AtomicU32,
    /// Slot + 1 of the next (newer) token in use; 0 = end of list.
    next: AtomicU32,
    /// Overall result: SUCCESS, or the first failure an AP reported.
    result: AtomicUsize,
    deadline_start: AtomicU64,
    /// 0 = no deadline.
    deadline_ticks: AtomicU64,
}

/// What a look at a token found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TokenState {
    Running,
    Done,
    TimedOut,
}

impl Token {
    pub fn new() -> Self {
        Token {
            seq: AtomicUsize::new(0),
            pending: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            next: AtomicU32::new(0),
            result: AtomicUsize::new(0),
            deadline_start: AtomicU64::new(0),
            deadline_ticks: AtomicU64::new(0),
        }
    }

    /// AP: one participant finished with `status` (BEHAVIOUR.md §2.2 "store the
    /// status, then complete the token").
    pub fn complete_one(&self, status: Status) {
        if status.is_error() {
            // Relaxed: published by the Release decrement below; only the
            // first failure is kept ("first failure observed").
            let _ = self.result.compare_exchange(
                Status::SUCCESS.0,
                status.0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        // Release: a reader that loads `pending == 0` with Acquire sees this
        // AP's status write and result; the decrements form one release
        // sequence, so it sees every participant's writes.
        self.pending.fetch_sub(1, Ordering::Release);
    }

    /// Current state (no side effect).
    pub fn state(&self) -> TokenState {
        // Acquire pairs with `complete_one` (see there).
        if self.pending.load(Ordering::Acquire) == 0 {
            TokenState::Done
        } else if self.flags.load(Ordering::Acquire) & TIMED_OUT != 0 {
            TokenState::TimedOut
        } else {
            TokenState::Running
        }
    }

    /// Overall result of the call (meaningful once Done).
    pub fn result(&self) -> Status {
        // Relaxed: read after `state()` returned Done (Acquire).
        Status(self.result.load(Ordering::Relaxed))
    }

    pub fn deadline(&self) -> Option<Deadline> {
        // Relaxed: written by the BSP before the handle existed.
        let ticks = self.deadline_ticks.load(Ordering::Relaxed);
        (ticks != 0)
            .then(|| Deadline::from_parts(self.deadline_start.load(Ordering::Relaxed), ticks))
    }

    /// Completion was observed by Check/Wait/GetTokenResult: the slot may
    /// be recycled under exhaustion.
    pub fn mark_observed(&self) {
        // Release: a recycling BSP that reads the flag with Acquire sees the
        // observer's reads done.
        self.flags.fetch_or(OBSERVED, Ordering::Release);
    }

    /// The call timed out (its result is final).
    pub fn mark_timed_out(&self) {
        // AcqRel: the timed-out verdict is published with the EFI_TIMEOUT
        // status words the BSP wrote for the abandoned APs.
        self.flags.fetch_or(TIMED_OUT | OBSERVED, Ordering::AcqRel);
    }

    fn recyclable(&self) -> bool {
        // Acquire: pairs with `mark_observed`.
        self.flags.load(Ordering::Acquire) & OBSERVED != 0 && self.state() != TokenState::Running
    }
}

impl Default for Token {
    fn default() -> Self {
        Self::new()
    }
}

/// The pool's bookkeeping (one cache line, written by the BSP).
#[repr(C)]
pub struct PoolState {
    /// Next sequence number to hand out (masked to the handle's bits).
    next_seq: AtomicUsize,
    /// First sequence number of the current SMI.
    first_seq: AtomicUsize,
    /// Slots at or above this index have not been used since the reset.
    fresh: AtomicU32,
    /// Oldest / newest token in use (slot + 1; 0 = empty list).
    head: AtomicU32,
    tail: AtomicU32,
}

impl PoolState {
    pub fn new() -> Self {
        PoolState {
            next_seq: AtomicUsize::new(1),
            first_seq: AtomicUsize::new(1),
            fresh: AtomicU32::new(0),
            head: AtomicU32::new(0),
            tail: AtomicU32::new(0),
        }
    }
}

impl Default for PoolState {
    fn default() -> Self {
        Self::new()
    }
}

/// The pool: its state and its array.
pub struct TokenPool<'a> {
    pub state: &'a PoolState,
    pub tokens: Strided<'a, Token>,
}

impl<'a> TokenPool<'a> {
    /// The token for slot + 1 (as stored in mailboxes), if in range.
    pub fn by_link(&self, link: u32) -> Option<&'a Token> {
        self.tokens.get((link as usize).checked_sub(1)?)
    }

    /// Allocate a token for `participants` APs (BSP only). Returns the slot
    /// and the handle; `None` when every slot is in use and none can be
    /// recycled (EFI_OUT_OF_RESOURCES).
    pub fn alloc(&self, participants: u32, deadline: Option<Deadline>) -> Option<(usize, usize)> {
        // Relaxed throughout the pool state: only the BSP writes it, and the
        // token contents reach APs through the run semaphores (Release).
        let fresh = self.state.fresh.load(Ordering::Relaxed) as usize;
        let slot = if fresh < self.tokens.len() {
            self.state.fresh.store(fresh as u32 + 1, Ordering::Relaxed);
            fresh
        } else {
            self.recycle()?
        };
        let token = self.tokens.get(slot)?;
        let seq = self.state.next_seq.load(Ordering::Relaxed) & SEQ_MASK;
        let next = (seq + 1) & SEQ_MASK;
        self.state.next_seq.store(next, Ordering::Relaxed);
        if next == self.state.first_seq.load(Ordering::Relaxed) {
            // Sequence space of one SMI exhausted (only reachable on IA32
            // with 2^20 calls in one SMI): restart the window rather than
            // let old handles alias new ones.
            self.state.first_seq.store(seq, Ordering::Relaxed);
        }
        token.pending.store(participants, Ordering::Relaxed);
        token.flags.store(0, Ordering::Relaxed);
        token.result.store(Status::SUCCESS.0, Ordering::Relaxed);
        token.next.store(0, Ordering::Relaxed);
        let (start, ticks) = deadline.map_or((0, 0), |d| d.parts());
        token.deadline_start.store(start, Ordering::Relaxed);
        token.deadline_ticks.store(ticks, Ordering::Relaxed);
        // Release: a CPU that validates the handle (Acquire on `seq`) sees
        // the fields above initialised.
        token.seq.store(seq, Ordering::Release);
        self.push_back(slot as u32 + 1);
        Some((slot, (seq << SLOT_BITS) | (slot + 1)))
    }

    fn push_back(&self, link: u32) {
        let tail = self.state.tail.load(Ordering::Relaxed);
        match self.by_link(tail) {
            Some(t) => t.next.store(link, Ordering::Relaxed),
            None => self.state.head.store(link, Ordering::Relaxed),
        }
        self.state.tail.store(link, Ordering::Relaxed);
    }

    /// Unlink the oldest recyclable token and return its slot.
    fn recycle(&self) -> Option<usize> {
        let mut prev = 0u32;
        let mut link = self.state.head.load(Ordering::Relaxed);
        // The list holds at most `len` entries; bound the walk anyway so a
        // corrupted link can never loop for ever.
        for _ in 0..self.tokens.len() {
            let token = self.by_link(link)?;
            let next = token.next.load(Ordering::Relaxed);
            if token.recyclable() {
                match self.by_link(prev) {
                    Some(p) => p.next.store(next, Ordering::Relaxed),
                    None => self.state.head.store(next, Ordering::Relaxed),
                }
                if self.state.tail.load(Ordering::Relaxed) == link {
                    self.state.tail.store(prev, Ordering::Relaxed);
                }
                // Make the old handle stale before the slot is reused.
                token.seq.store(SEQ_MASK.wrapping_add(1), Ordering::Relaxed);
                return Some(link as usize - 1);
            }
            prev = link;
            link = next;
        }
        None
    }

    /// O(1) validation of a handle issued in the current SMI.
    pub fn lookup(&self, handle: usize) -> Option<(usize, &'a Token)> {
        let slot = (handle & SLOT_MASK).checked_sub(1)?;
        let seq = handle >> SLOT_BITS;
        let token = self.tokens.get(slot)?;
        // Acquire pairs with the Release store in `alloc`.
        if token.seq.load(Ordering::Acquire) != seq {
            return None;
        }
        let first = self.state.first_seq.load(Ordering::Relaxed);
        let next = self.state.next_seq.load(Ordering::Relaxed);
        let age = seq.wrapping_sub(first) & SEQ_MASK;
        let issued = next.wrapping_sub(first) & SEQ_MASK;
        (age < issued).then_some((slot, token))
    }

    /// End of SMI: every handle becomes stale, every slot free (O(1)).
    pub fn reset(&self) {
        let next = self.state.next_seq.load(Ordering::Relaxed);
        self.state.first_seq.store(next, Ordering::Relaxed);
        self.state.fresh.store(0, Ordering::Relaxed);
        self.state.head.store(0, Ordering::Relaxed);
        self.state.tail.store(0, Ordering::Relaxed);
    }

    /// Number of tokens handed out since the last reset and not recycled.
    pub fn in_use(&self) -> usize {
        let mut n = 0;
        let mut link = self.state.head.load(Ordering::Relaxed);
        while let Some(t) = self.by_link(link) {
            n += 1;
            if n > self.tokens.len() {
                break;
            }
            link = t.next.load(Ordering::Relaxed);
        }
        n
    }
}
