//! BroadcastProcedure through one descriptor that the APs read, instead of
//! one mailbox write per AP (docs/PERFORMANCE.md [3]).
//!
//! EDK2 fills every AP's mailbox: the BSP's cost grows with the number of
//! CPUs. Here the BSP's side of a broadcast visits one bit per CPU, 32
//! CPUs per word:
//!
//! * **present bits**: each AP sets its bit when it joins an SMI (after it
//!   is present) and clears it when it leaves; the BSP clears the bit of an
//!   AP it marks lost. A broadcast's set is one snapshot of these words
//!   (BEHAVIOUR.md §2.3 step 4), minus the BSP.
//! * **descriptor**: the call (procedure, argument, status array, token)
//!   and its *tag*, a wrapping count of broadcasts, on one line the BSP
//!   writes; every AP in the dispatch loop polls the tag next to its
//!   mailbox's.
//! * **members**: the snapshot as published, one word per 32 CPUs holding
//!   `(tag << 32) | bits`, so that an AP reads its membership and the
//!   broadcast it belongs to in one load: a late joiner (relaxed mode)
//!   whose bit was not in the snapshot does not run the call.
//! * **broadcast flags**: one per CPU, the same `(tag, state)` word as a
//!   mailbox's busy flag (sync/busy.rs) with the same DONE / FINISHING /
//!   ABANDONED / LOST states and races, next to the busy flag on the line
//!   the AP writes. It holds the tag of the last broadcast its AP finished,
//!   which need not be the previous one (an AP is not a member of every
//!   broadcast), hence the `*_any`/`*_from` forms of the flag's operations.
//! * **in flight**: a count the BSP raises by the member count when it
//!   publishes and every member lowers once when it is through (finished,
//!   discarded or lost). Zero means no AP is busy with a broadcast: the
//!   BSP's busy checks read one word instead of a flag per CPU.
//! * **mailbox posts**: BSP scratch, a count of the calls posted to any
//!   mailbox and the count at which the BSP last found every mailbox of a
//!   broadcast's set free. A broadcast checks the mailboxes of its set for
//!   BEHAVIOUR.md §2.3's "busy" verdict only when calls were posted since.
//!
//! The BSP publishes a broadcast only when no member is busy, so a
//! descriptor is never rewritten while a member may still read it.

use core::ffi::c_void;
use core::mem::size_of;

use crate::efi::Status;
use crate::mailbox::{run_procedure, Call, KIND_PROCEDURE2};
use crate::memory::Strided;
use crate::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{Abandon, BusyFlag, Finish};
use crate::tokens::Token;

/// CPUs per word of the bit sets.
pub const GROUP: usize = 32;

/// Word and bit of CPU `cpu` in a bit set.
#[inline(always)]
pub const fn bit_of(cpu: usize) -> (usize, u32) {
    (cpu / GROUP, 1 << (cpu % GROUP))
}

/// Number of words of a bit set over `cpus` CPUs.
pub const fn words_for(cpus: usize) -> Option<usize> {
    match cpus.checked_add(GROUP - 1) {
        Some(n) => Some(n / GROUP),
        None => None,
    }
}

/// The broadcast call and its tag (written by the BSP only).
#[repr(C)]
pub struct Descriptor {
    /// Tag of the last broadcast published (wrapping count).
    tag: AtomicU32,
    /// Token slot + 1, or 0.
    token: AtomicU32,
    procedure: AtomicUsize,
    argument: AtomicUsize,
    /// The caller's CPUStatus array (NumberOfCpus entries), or 0.
    status: AtomicUsize,
}

impl Descriptor {
    pub fn new() -> Self {
        Descriptor {
            tag: AtomicU32::new(0),
            token: AtomicU32::new(0),
            procedure: AtomicUsize::new(0),
            argument: AtomicUsize::new(0),
            status: AtomicUsize::new(0),
        }
    }
}

impl Descriptor {
    /// AP: the tag of the last broadcast published, only to decide whether
    /// to look further ([`Broadcasts::pending`] reads it again, Acquire).
    #[inline(always)]
    pub fn published(&self) -> u32 {
        // Relaxed: a stale value only delays the look by one round of the
        // caller's loop; nothing is read on its strength.
        self.tag.load(Ordering::Relaxed)
    }
}

impl Default for Descriptor {
    fn default() -> Self {
        Self::new()
    }
}

/// The BSP's count of mailbox calls (BSP scratch, one line).
#[repr(C)]
pub struct MailboxPosts {
    /// Calls posted to any mailbox (`Channel::post`).
    pub posted: AtomicU64,
    /// `posted` when a broadcast last found every mailbox of its set free.
    verified: AtomicU64,
}

impl MailboxPosts {
    pub fn new() -> Self {
        MailboxPosts {
            posted: AtomicU64::new(0),
            verified: AtomicU64::new(0),
        }
    }

    /// BSP: one more call posted to a mailbox.
    #[inline(always)]
    pub fn note(&self) {
        // Relaxed: BSP scratch (a later SMI's BSP reads it after the SMI
        // boundary); a plain increment, only the BSP posts.
        let n = self.posted.load(Ordering::Relaxed);
        self.posted.store(n.wrapping_add(1), Ordering::Relaxed);
    }
}

impl Default for MailboxPosts {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything a broadcast touches, as views into the instance's region.
#[derive(Clone, Copy)]
pub struct Broadcasts<'a> {
    pub descriptor: &'a Descriptor,
    pub in_flight: &'a AtomicU32,
    /// Present APs, `GROUP` per word (set and cleared with RMWs).
    pub present: Strided<'a, AtomicU32>,
    /// The snapshot of the broadcast being checked (BSP scratch).
    pub snapshot: Strided<'a, AtomicU32>,
    /// Members of the last broadcast published: `(tag << 32) | bits`.
    pub members: Strided<'a, AtomicU64>,
    /// Calls posted to mailboxes (BSP scratch).
    pub posts: &'a MailboxPosts,
    /// Per CPU: the broadcast flag.
    pub flags: Strided<'a, BusyFlag>,
}

impl<'a> Broadcasts<'a> {
    // -- AP side ---------------------------------------------------------------

    /// AP `cpu` joins the SMI's broadcasts (after it became present). Its
    /// flag is set to the current tag first: the BSP publishes a broadcast
    /// that includes this AP only after it saw the bit, hence after this
    /// tag was read, so the flag never claims that broadcast done.
    pub fn join(&self, cpu: usize) {
        let (Some(flag), Some(word)) = (self.flags.get(cpu), self.present.get(bit_of(cpu).0))
        else {
            return;
        };
        // Acquire: the current tag (any value at or before the last one
        // published works: it only has to differ from the next one).
        flag.reset_free(self.descriptor.tag.load(Ordering::Acquire));
        // Release: the BSP that sees the bit (Acquire in `snapshot`) sees
        // the flag's reset before it.
        word.fetch_or(bit_of(cpu).1, Ordering::Release);
    }

    /// AP `cpu` leaves the SMI (or the BSP marks it lost).
    pub fn leave(&self, cpu: usize) {
        if let Some(word) = self.present.get(bit_of(cpu).0) {
            // Relaxed: done after the services closed (or, for a lost AP,
            // as they close); the next SMI's broadcasts are ordered after
            // this one's end by the SMI boundary (Release/Acquire of
            // "all in sync" and the arrival counter).
            word.fetch_and(!bit_of(cpu).1, Ordering::Relaxed);
        }
    }

    /// AP: a broadcast that `cpu` is a member of and has not finished.
    /// `seen`: the last tag this AP dealt with (a local of the caller's
    /// spin; `None` looks at the descriptor afresh).
    #[inline(always)]
    pub fn pending(&self, cpu: usize, seen: &mut Option<u32>) -> Option<u32> {
        // Acquire pairs with the Release store of the tag in `publish`:
        // the members and the call are visible once the tag is.
        let tag = self.descriptor.tag.load(Ordering::Acquire);
        if *seen == Some(tag) {
            return None;
        }
        let (w, bit) = bit_of(cpu);
        // Relaxed: ordered after the Acquire load of the tag.
        let members = self.members.get(w)?.load(Ordering::Relaxed);
        if (members >> 32) as u32 != tag {
            // Already the next broadcast's members (so this AP is through
            // with `tag`): look again at the tag.
            return None;
        }
        if members as u32 & bit == 0 || self.flags.get(cpu)?.is_free(tag) {
            *seen = Some(tag);
            return None;
        }
        Some(tag)
    }

    /// AP `cpu`: run broadcast `tag` (from [`Broadcasts::pending`]) and
    /// publish its result. Returns `true` when the BSP ended the SMI without
    /// this AP meanwhile (it must leave at once).
    #[inline(never)]
    pub fn run(&self, cpu: usize, tag: u32, token_at: impl Fn(u32) -> Option<&'a Token>) -> bool {
        let Some(flag) = self.flags.get(cpu) else {
            return false;
        };
        let lost = match flag.start_word(tag) {
            Ok(expected) => self.run_call(cpu, tag, flag, expected, token_at),
            // Timed out before it started: not run, already DONE again.
            Err(lost) => lost,
        };
        // Release: the BSP that sees the count fall (Acquire) knows this AP
        // no longer reads the descriptor and sees what it wrote.
        self.in_flight.fetch_sub(1, Ordering::Release);
        lost
    }

    fn run_call(
        &self,
        cpu: usize,
        tag: u32,
        flag: &BusyFlag,
        expected: u64,
        token_at: impl Fn(u32) -> Option<&'a Token>,
    ) -> bool {
        let d = self.descriptor;
        // Relaxed: ordered after the Acquire load of the tag (`pending`);
        // the BSP does not rewrite them before this member is through.
        let procedure = d.procedure.load(Ordering::Relaxed);
        let argument = d.argument.load(Ordering::Relaxed) as *mut c_void;
        let status = run_procedure(KIND_PROCEDURE2, procedure, argument);
        match flag.begin_finish_from(expected, tag) {
            Finish::Won => {}
            Finish::Abandoned => return false,
            Finish::Lost => return true,
        }
        let target = self.status_slot(cpu);
        if !target.is_null() {
            // SAFETY: the BSP validated the CPUStatus array (NumberOfCpus
            // entries, this CPU's index is below that) and the caller keeps
            // it valid until the call completes; we won `begin_finish`, so
            // the BSP will not write this entry itself.
            unsafe { target.write_volatile(status) };
        }
        // Relaxed: as the call's fields above.
        if let Some(token) = token_at(d.token.load(Ordering::Relaxed)) {
            token.complete_one(status);
        }
        flag.finish(tag);
        false
    }

    // -- BSP side ----------------------------------------------------------------

    /// Tag of the last broadcast published (BSP side: the BSP writes it).
    #[inline(always)]
    pub fn tag(&self) -> u32 {
        // Relaxed: written by this BSP or an earlier SMI's, ordered before
        // by the SMI boundary.
        self.descriptor.tag.load(Ordering::Relaxed)
    }

    /// Token slot + 1 of the last broadcast (BSP side, timeouts).
    pub fn token(&self) -> u32 {
        // Relaxed: as `tag`.
        self.descriptor.token.load(Ordering::Relaxed)
    }

    /// CPU `cpu`'s entry of the last broadcast's CPUStatus array (null when
    /// it had none).
    pub fn status_slot(&self, cpu: usize) -> *mut Status {
        // Relaxed: as `tag` (the AP reads it after its Acquire of the tag).
        let base = self.descriptor.status.load(Ordering::Relaxed);
        if base == 0 {
            return core::ptr::null_mut();
        }
        // In bounds of the caller's NumberOfCpus-entry array (cpu is below
        // NumberOfCpus wherever this is called); wrapping arithmetic so
        // that no overflow check is compiled in.
        base.wrapping_add(cpu.wrapping_mul(size_of::<Status>())) as *mut Status
    }

    /// Take the snapshot of the present APs but `bsp` (BEHAVIOUR.md §2.3 step 4)
    /// into the BSP's scratch; returns its size.
    #[inline(always)]
    pub fn snapshot(&self, bsp: usize) -> u32 {
        let (bsp_word, bsp_bit) = bit_of(bsp);
        let mut count = 0;
        for ((w, present), (_, snap)) in self.present.iter().zip(self.snapshot.iter()) {
            // Acquire pairs with `join`'s Release: the member's flag reset
            // is visible to the busy checks.
            let mut bits = present.load(Ordering::Acquire);
            if w == bsp_word {
                bits &= !bsp_bit;
            }
            // Relaxed: BSP scratch.
            snap.store(bits, Ordering::Relaxed);
            count += bits.count_ones();
        }
        count
    }

    /// Whether CPU `cpu` is in the snapshot.
    pub fn in_snapshot(&self, cpu: usize) -> bool {
        let (w, bit) = bit_of(cpu);
        // Relaxed: BSP scratch.
        self.snapshot
            .get(w)
            .is_some_and(|s| s.load(Ordering::Relaxed) & bit != 0)
    }

    /// Call `f` for every CPU of the snapshot.
    pub fn for_each_in_snapshot(&self, mut f: impl FnMut(usize)) {
        for (w, snap) in self.snapshot.iter() {
            // Relaxed: BSP scratch.
            for_each_bit(w, snap.load(Ordering::Relaxed), &mut f);
        }
    }

    /// Call `f` for every member of the last broadcast published.
    pub fn for_each_member(&self, mut f: impl FnMut(usize)) {
        let tag = self.tag();
        for (w, members) in self.members.iter() {
            // Relaxed: written by the BSP (this one, or ordered before by
            // the SMI boundary).
            let m = members.load(Ordering::Relaxed);
            if (m >> 32) as u32 == tag {
                for_each_bit(w, m as u32, &mut f);
            }
        }
    }

    /// Whether `cpu` is done with the broadcasts it was given (BSP side).
    /// One load while no broadcast is in flight.
    #[inline(always)]
    pub fn is_free_for(&self, cpu: usize) -> bool {
        // Acquire pairs with the members' Release decrements: nothing of
        // the last broadcasts is still read or written by an AP.
        self.in_flight.load(Ordering::Acquire) == 0 || self.member_done(cpu)
    }

    fn member_done(&self, cpu: usize) -> bool {
        let tag = self.tag();
        let (w, bit) = bit_of(cpu);
        // Relaxed: BSP-written (see `for_each_member`).
        let members = self.members.get(w).map_or(0, |m| m.load(Ordering::Relaxed));
        (members >> 32) as u32 != tag || members as u32 & bit == 0 || self.flag_free(cpu, tag)
    }

    /// Whether `cpu`'s broadcast flag says broadcast `tag` is over for it.
    pub fn flag_free(&self, cpu: usize, tag: u32) -> bool {
        self.flags.get(cpu).map_or(true, |f| f.is_free(tag))
    }

    /// BEHAVIOUR.md §2.3 step 6 over the snapshot: whether a CPU in it is busy with
    /// the last broadcast or with a call of its own mailbox
    /// (`mailbox_busy(cpu)`, asked only when calls were posted to mailboxes
    /// since the last time all were found free). Nothing to visit when
    /// neither can be.
    #[inline(always)]
    pub fn snapshot_busy(&self, mailbox_busy: impl Fn(usize) -> bool) -> bool {
        // Acquire: as `is_free_for`.
        let broadcast_open = self.in_flight.load(Ordering::Acquire) != 0;
        // Relaxed: BSP scratch.
        let posted = self.posts.posted.load(Ordering::Relaxed);
        let check_mailboxes = posted != self.posts.verified.load(Ordering::Relaxed);
        if !broadcast_open && !check_mailboxes {
            return false;
        }
        let mut busy = false;
        self.for_each_in_snapshot(|cpu| {
            busy |= (check_mailboxes && mailbox_busy(cpu))
                || (broadcast_open && !self.member_done(cpu));
        });
        if !busy && check_mailboxes {
            // Relaxed: BSP scratch.
            self.posts.verified.store(posted, Ordering::Relaxed);
        }
        busy
    }

    /// Publish broadcast `call` (status = CPUStatus array or null) to the
    /// snapshot of `count` members. Returns its tag.
    #[inline(always)]
    pub fn publish(&self, call: &Call, count: u32) -> u32 {
        let d = self.descriptor;
        let tag = self.tag().wrapping_add(1);
        // Relaxed: published by the Release store of the tag below.
        d.procedure.store(call.procedure, Ordering::Relaxed);
        d.argument.store(call.argument as usize, Ordering::Relaxed);
        d.status.store(call.status as usize, Ordering::Relaxed);
        d.token.store(call.token, Ordering::Relaxed);
        for ((_, snap), (_, members)) in self.snapshot.iter().zip(self.members.iter()) {
            // Relaxed: BSP scratch; the members word is published with the tag.
            let bits = snap.load(Ordering::Relaxed);
            members.store(u64::from(tag) << 32 | u64::from(bits), Ordering::Relaxed);
        }
        // Relaxed: ordered before the Release store of the tag, after which
        // alone a member can lower the count.
        self.in_flight.fetch_add(count, Ordering::Relaxed);
        // Release: publishes the call and the members to the APs' Acquire.
        d.tag.store(tag, Ordering::Release);
        tag
    }

    /// BSP: give up on member `cpu`'s share of broadcast `tag` after its
    /// deadline (or mark it lost, `lost`). On `Abandoned` the BSP owns the
    /// member's CPUStatus entry.
    pub fn give_up(&self, cpu: usize, tag: u32, lost: bool) -> Abandon {
        match self.flags.get(cpu) {
            Some(f) if lost => f.mark_lost_any(tag),
            Some(f) => f.abandon_any(tag),
            None => Abandon::AlreadyFree,
        }
    }

    /// Whether `cpu`'s broadcast was given up for the end of an SMI.
    pub fn is_lost(&self, cpu: usize) -> bool {
        self.flags.get(cpu).is_some_and(|f| f.is_lost())
    }
}

/// Call `f(w * GROUP + b)` for every set bit `b` of `bits`.
#[inline(always)]
fn for_each_bit(w: usize, mut bits: u32, f: &mut impl FnMut(usize)) {
    while bits != 0 {
        f(w * GROUP + bits.trailing_zeros() as usize);
        bits &= bits - 1;
    }
}
