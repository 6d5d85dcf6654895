//! loom models of the hand-offs between CPUs (run with
//! `RUSTFLAGS="--cfg loom" cargo test --release --test loom`; CI bounds
//! the search with LOOM_MAX_PREEMPTIONS).
//!
//! They drive the library's own `Mailbox`/`Channel`, `Semaphore`,
//! `BusyFlag` and token pool — the code that runs in SMM — with loom's
//! atomics. The CPUStatus words the library writes through raw pointers
//! are checked by loom too (`StatusWords`).
#![cfg(loom)]

use std::ffi::c_void;
use std::sync::Arc;

use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use loom::thread;

use mm_mp::broadcast::{Broadcasts, Descriptor, MailboxPosts};
use mm_mp::efi::Status;
use mm_mp::mailbox::{Call, Channel, Mailbox, KIND_PROCEDURE2};
use mm_mp::memory::{ArrayLayout, Strided};
use mm_mp::sync::{Abandon, BusyFlag, Semaphore, SEMAPHORE_LOCKED};
use mm_mp::tokens::{PoolState, Token, TokenPool, TokenState};

/// The procedure: bump the counter it is given, report CPU-specific status.
unsafe extern "efiapi" fn bump(arg: *mut c_void) -> Status {
    // SAFETY: the model passes a live AtomicUsize.
    let c = unsafe { &*(arg as *const AtomicUsize) };
    c.fetch_add(1, Ordering::Relaxed);
    Status::DEVICE_ERROR
}

struct Cpu {
    mailbox: Mailbox,
    busy: BusyFlag,
    posted: AtomicU32,
    known_done: AtomicU32,
    posts: MailboxPosts,
}

impl Cpu {
    fn channel(&self) -> Channel<'_> {
        Channel {
            request: &self.mailbox,
            busy: &self.busy,
            posted: &self.posted,
            known_done: &self.known_done,
            posts: &self.posts,
        }
    }
}

/// A view of a whole Vec as the library's strided arrays.
fn strided<T>(v: &[T]) -> Strided<'_, T> {
    let layout = ArrayLayout {
        offset: 0,
        stride: std::mem::size_of::<T>(),
        len: v.len(),
    };
    // SAFETY: `v` holds `len` initialised Ts, `stride` bytes apart, for
    // the borrow's lifetime; the library only takes shared references.
    unsafe { Strided::new(v.as_ptr() as *const u8, layout) }
}

/// The broadcast machinery of `src/broadcast.rs` over CPUs 0..n (one
/// word of each bit set).
struct Bcast {
    descriptor: Descriptor,
    in_flight: AtomicU32,
    present: Vec<AtomicU32>,
    snapshot: Vec<AtomicU32>,
    members: Vec<AtomicU64>,
    posts: MailboxPosts,
    flags: Vec<BusyFlag>,
}

impl Bcast {
    fn new(n: usize) -> Self {
        Bcast {
            descriptor: Descriptor::new(),
            in_flight: AtomicU32::new(0),
            present: vec![AtomicU32::new(0)],
            snapshot: vec![AtomicU32::new(0)],
            members: vec![AtomicU64::new(0)],
            posts: MailboxPosts::new(),
            flags: (0..n).map(|_| BusyFlag::new()).collect(),
        }
    }

    fn view(&self) -> Broadcasts<'_> {
        Broadcasts {
            descriptor: &self.descriptor,
            in_flight: &self.in_flight,
            present: strided(&self.present),
            snapshot: strided(&self.snapshot),
            members: strided(&self.members),
            posts: &self.posts,
            flags: strided(&self.flags),
        }
    }
}

/// Most CPUs a `Machine` model has.
const MAX_CPUS: usize = 3;

/// The CPUStatus words of the models, one per CPU, contiguous as a
/// broadcast's array is. The library writes them through raw pointers,
/// which loom cannot see, so every access is also recorded on a loom cell
/// per word: loom then fails a model in which a read or write of a word
/// is not ordered after the last write of it by another thread, whatever
/// the timing (a BSP that reads or rewrites a status word while its AP
/// may still store to it).
///
/// The library's own store is recorded where the AP looks up the call's
/// token (`Machine::token_at`): `Channel::run` and `Broadcasts::run` do
/// that right after the store, before they complete the token and free
/// the AP (BEHAVIOUR.md §2.2), and the lookup checks that the word already
/// holds the procedure's status.
struct StatusWords {
    words: std::cell::UnsafeCell<[Status; MAX_CPUS]>,
    access: [loom::cell::UnsafeCell<()>; MAX_CPUS],
}

impl StatusWords {
    fn new() -> Self {
        StatusWords {
            words: std::cell::UnsafeCell::new([Status(0); MAX_CPUS]),
            access: std::array::from_fn(|_| loom::cell::UnsafeCell::new(())),
        }
    }

    /// CPU `cpu`'s word, as the library's `*mut Status` (for CPU 0: the
    /// base of the NumberOfCpus-entry array a broadcast takes).
    fn ptr(&self, cpu: usize) -> *mut Status {
        assert!(cpu < MAX_CPUS);
        // SAFETY: in bounds of the array (checked above).
        unsafe { (self.words.get() as *mut Status).add(cpu) }
    }

    /// Read CPU `cpu`'s word (a recorded read).
    fn read(&self, cpu: usize) -> Status {
        self.access[cpu].with(|_| {
            // SAFETY: a live, initialised word; loom checks (the recorded
            // read) that no other thread's write of it is unordered with
            // this read.
            unsafe { self.ptr(cpu).read_volatile() }
        })
    }

    /// Write CPU `cpu`'s word (a recorded write), as the BSP does before
    /// it posts a call (EFI_NOT_READY) or when it times one out.
    fn write(&self, cpu: usize, status: Status) {
        self.access[cpu].with_mut(|_| {
            // SAFETY: as `read`, for a write.
            unsafe { self.ptr(cpu).write_volatile(status) }
        })
    }

    /// Record the AP's store of CPU `cpu`'s word, which the library made
    /// just before, and check that the word holds what the procedure
    /// returned.
    fn ap_stored(&self, cpu: usize, status: Status) {
        self.access[cpu].with_mut(|_| {
            // SAFETY: as `read`.
            let word = unsafe { self.ptr(cpu).read_volatile() };
            assert_eq!(word, status, "status stored before the token is completed");
        })
    }
}

struct Machine {
    cpus: Vec<Cpu>,
    bcast: Bcast,
    tokens: Vec<Token>,
    pool: PoolState,
    counter: AtomicUsize,
    status: StatusWords,
}

// SAFETY: every status word is accessed under loom's access checks
// (`StatusWords`), which fail the model on any unordered access; the rest
// is loom atomics.
unsafe impl Sync for Machine {}
// SAFETY: as above.
unsafe impl Send for Machine {}

impl Machine {
    fn new(n: usize, tokens: usize) -> Arc<Machine> {
        Arc::new(Machine {
            cpus: (0..n)
                .map(|_| Cpu {
                    mailbox: Mailbox::new(),
                    busy: BusyFlag::new(),
                    posted: AtomicU32::new(0),
                    known_done: AtomicU32::new(0),
                    posts: MailboxPosts::new(),
                })
                .collect(),
            bcast: Bcast::new(n),
            tokens: (0..tokens).map(|_| Token::new()).collect(),
            pool: PoolState::new(),
            counter: AtomicUsize::new(0),
            status: StatusWords::new(),
        })
    }

    fn pool(&self) -> TokenPool<'_> {
        let layout = ArrayLayout {
            offset: 0,
            stride: std::mem::size_of::<Token>(),
            len: self.tokens.len(),
        };
        TokenPool {
            state: &self.pool,
            // SAFETY: `tokens` is a live Vec of `len` Tokens, stride = size.
            tokens: unsafe { Strided::new(self.tokens.as_ptr() as *const u8, layout) },
        }
    }

    /// AP `cpu`'s token lookup for `Channel::run` / `Broadcasts::run`,
    /// which they make once the status word is stored (see `StatusWords`).
    fn token_at<'a>(&'a self, cpu: usize) -> impl Fn(u32) -> Option<&'a Token> + 'a {
        move |link| {
            self.status.ap_stored(cpu, Status::DEVICE_ERROR);
            self.pool().by_link(link)
        }
    }

    /// AP side: wait for a call, run it (as the dispatch loop's fast
    /// path does: only the request tag is polled). Returns "lost".
    fn ap_once(&self, cpu: usize) -> bool {
        let ch = self.cpus[cpu].channel();
        let seen = ch.completed();
        let tag = loop {
            let tag = ch.posted();
            if seen != Some(tag) {
                break tag;
            }
            thread::yield_now();
        };
        ch.run(tag, self.token_at(cpu))
    }

    /// AP side of a broadcast: wait until the descriptor has one, then
    /// take it as the dispatch loop does. `None`: not a member; else
    /// whether it came back lost.
    fn ap_broadcast_once(&self, cpu: usize) -> Option<bool> {
        let b = self.bcast.view();
        loop {
            // Tag 0: nothing published yet (the models publish once).
            let mut seen = Some(0);
            if let Some(tag) = b.pending(cpu, &mut seen) {
                return Some(b.run(cpu, tag, self.token_at(cpu)));
            }
            if seen != Some(0) {
                return None;
            }
            thread::yield_now();
        }
    }

    /// BSP side: snapshot (CPU 0 is the BSP) and publish `bump` with the
    /// status array and token `link`; returns (tag, member count). The
    /// status array is filled first as BEHAVIOUR.md §2.3 step 9 says:
    /// EFI_NOT_READY for the members, EFI_NOT_STARTED for every other CPU.
    fn publish_broadcast(&self, token: impl FnOnce(u32) -> u32) -> (u32, u32) {
        let b = self.bcast.view();
        let count = b.snapshot(0);
        let link = token(count);
        for cpu in 0..self.cpus.len() {
            let initial = if b.in_snapshot(cpu) {
                Status::NOT_READY
            } else {
                Status::NOT_STARTED
            };
            self.status.write(cpu, initial);
        }
        let tag = b.publish(
            &Call {
                procedure: bump as *const () as usize,
                argument: &self.counter as *const AtomicUsize as *mut c_void,
                kind: KIND_PROCEDURE2,
                // The base of the NumberOfCpus-entry status array.
                status: self.status.ptr(0),
                token: link,
            },
            count,
        );
        (tag, count)
    }

    /// BSP: time AP 1's call out (`abandon`), and if that won, write
    /// EFI_TIMEOUT to its status and mark it lost (`mark_lost`, the end of
    /// the SMI). Returns both verdicts (the second `AlreadyFree` when the
    /// first did not win).
    fn time_out_then_lose(
        &self,
        abandon: impl FnOnce() -> Abandon,
        mark_lost: impl FnOnce() -> Abandon,
    ) -> (Abandon, Abandon) {
        let abandoned = abandon();
        let lost = match abandoned {
            Abandon::Abandoned => {
                // The BSP owns AP 1's status word now.
                self.status.write(1, Status::TIMEOUT);
                mark_lost()
            }
            Abandon::Finishing | Abandon::AlreadyFree => Abandon::AlreadyFree,
            Abandon::AlreadyAbandoned => unreachable!(),
        };
        (abandoned, lost)
    }

    /// After `time_out_then_lose` and the AP's end (`ap_lost`: it came back
    /// lost): the AP reports "lost" exactly when the mark landed before its
    /// discard, and exactly one side wrote the status.
    fn check_give_up_outcome(&self, abandoned: Abandon, lost: Abandon, ap_lost: bool) {
        assert_eq!(ap_lost, lost == Abandon::AlreadyAbandoned);
        // The AP thread is joined.
        let st = self.status.read(1);
        if abandoned == Abandon::Abandoned {
            assert_eq!(st, Status::TIMEOUT, "late result discarded");
        } else {
            assert_eq!(st, Status::DEVICE_ERROR);
            assert_eq!(self.counter.load(Ordering::Relaxed), 1);
        }
    }

    /// BSP: post `bump` to `cpu`'s free mailbox with its status word and
    /// token link, writing EFI_NOT_READY to the status word first
    /// (BEHAVIOUR.md §2.2).
    fn post(&self, cpu: usize, token: u32) {
        let ch = self.cpus[cpu].channel();
        let claim = ch.try_claim().expect("mailbox free");
        self.status.write(cpu, Status::NOT_READY);
        ch.post(
            claim,
            &Call {
                procedure: bump as *const () as usize,
                argument: &self.counter as *const AtomicUsize as *mut c_void,
                kind: KIND_PROCEDURE2,
                status: self.status.ptr(cpu),
                token,
            },
        );
    }

    /// BSP: a token for one AP's call; returns (link, handle).
    fn token_for_one(&self) -> (u32, usize) {
        let (slot, handle) = self.pool().alloc(1, None).expect("a free token");
        (slot as u32 + 1, handle)
    }
}

/// BSP broadcasts to two APs through the descriptor with one token; when
/// the token says done, both procedures ran, both statuses and the overall
/// result are there, and once the APs are through nothing is in flight.
#[test]
fn broadcast_token_completion() {
    loom::model(|| {
        let m = Machine::new(3, 1);
        m.bcast.view().join(1);
        m.bcast.view().join(2);
        let mut handle = 0;
        let (_, count) = m.publish_broadcast(|count| {
            let (slot, h) = m.pool().alloc(count, None).unwrap();
            handle = h;
            slot as u32 + 1
        });
        assert_eq!(count, 2);
        let aps: Vec<_> = (1..3)
            .map(|cpu| {
                let m = m.clone();
                thread::spawn(move || assert_eq!(m.ap_broadcast_once(cpu), Some(false)))
            })
            .collect();
        loop {
            let (_, t) = m.pool().lookup(handle).unwrap();
            if t.state() == TokenState::Done {
                assert_eq!(t.result(), Status::DEVICE_ERROR);
                break;
            }
            thread::yield_now();
        }
        assert_eq!(m.counter.load(Ordering::Relaxed), 2);
        // Both APs stored their status before completing the token.
        assert_eq!(m.status.read(0), Status::NOT_STARTED);
        assert_eq!(m.status.read(1), Status::DEVICE_ERROR);
        assert_eq!(m.status.read(2), Status::DEVICE_ERROR);
        for ap in aps {
            ap.join().unwrap();
        }
        let b = m.bcast.view();
        assert!(b.is_free_for(1) && b.is_free_for(2));
        assert_eq!(m.bcast.in_flight.load(Ordering::Relaxed), 0);
    });
}

/// A member is free again for the BSP's busy checks (`is_free_for`: its
/// broadcast flag back at DONE, possibly before the in-flight count falls)
/// only after it stored its status and completed its share of the token
/// (BEHAVIOUR.md §2.2, §2.3): the BSP reads each member's status as soon as
/// it sees that member free, and once both are free the token is done.
#[test]
fn broadcast_member_free_then_status() {
    loom::model(|| {
        let m = Machine::new(3, 1);
        m.bcast.view().join(1);
        m.bcast.view().join(2);
        let mut handle = 0;
        let (_, count) = m.publish_broadcast(|count| {
            let (slot, h) = m.pool().alloc(count, None).unwrap();
            handle = h;
            slot as u32 + 1
        });
        assert_eq!(count, 2);
        let aps: Vec<_> = (1..3)
            .map(|cpu| {
                let m = m.clone();
                thread::spawn(move || assert_eq!(m.ap_broadcast_once(cpu), Some(false)))
            })
            .collect();
        let b = m.bcast.view();
        for cpu in 1..3 {
            while !b.is_free_for(cpu) {
                thread::yield_now();
            }
            assert_eq!(m.status.read(cpu), Status::DEVICE_ERROR);
        }
        let (_, t) = m.pool().lookup(handle).unwrap();
        assert_eq!(t.state(), TokenState::Done, "members free, token running");
        assert_eq!(t.result(), Status::DEVICE_ERROR);
        assert_eq!(m.counter.load(Ordering::Relaxed), 2);
        for ap in aps {
            ap.join().unwrap();
        }
    });
}

/// An AP joins while the BSP takes its snapshot and publishes (relaxed
/// mode's late arrival, BEHAVIOUR.md §2.3 step 4): it runs the broadcast exactly
/// when the snapshot counted it, the token completes with the count, and
/// the in-flight count returns to zero. Each AP thread looks at the
/// descriptor once; its dispatch loop's later looks happen on the BSP's
/// thread after it (two spinning threads would not fit loom's bounds).
#[test]
fn broadcast_races_with_late_joiner() {
    loom::model(|| {
        let m = Machine::new(3, 1);
        m.bcast.view().join(1);
        let look = |m: &Machine, cpu: usize| {
            let b = m.bcast.view();
            let tag = b.pending(cpu, &mut None)?;
            Some(b.run(cpu, tag, m.token_at(cpu)))
        };
        let late = {
            let m = m.clone();
            thread::spawn(move || {
                m.bcast.view().join(2);
                look(&m, 2)
            })
        };
        let early = {
            let m = m.clone();
            thread::spawn(move || look(&m, 1))
        };
        let mut handle = 0;
        let (_, count) = m.publish_broadcast(|count| {
            let (slot, h) = m.pool().alloc(count, None).unwrap();
            handle = h;
            slot as u32 + 1
        });
        if count == 1 {
            // Outside the snapshot, AP 2 is free for a call of its own
            // while the broadcast is in flight, whether it joined before
            // or after the publication, or not yet.
            assert!(m.bcast.view().is_free_for(2), "non-member busy");
        }
        let mut ran = [early.join().unwrap(), late.join().unwrap()];
        for (cpu, r) in (1..3).zip(ran.iter_mut()) {
            if r.is_none() {
                *r = look(&m, cpu);
            }
            assert_ne!(*r, Some(true), "nobody is lost here");
        }
        assert!(ran[0].is_some(), "AP 1 joined before the snapshot");
        assert_eq!(ran[1].is_some(), count == 2, "member iff in the snapshot");
        assert_eq!(m.counter.load(Ordering::Relaxed), count as usize);
        let (_, t) = m.pool().lookup(handle).unwrap();
        assert_eq!(t.state(), TokenState::Done);
        assert_eq!(m.bcast.in_flight.load(Ordering::Relaxed), 0);
        assert!(m.bcast.view().is_free_for(2));
    });
}

/// A member's share of a broadcast timed out, then marked lost, while the
/// AP takes it (BEHAVIOUR.md §2.7, §6.3 step 4). The member's flag holds the tag
/// of an older broadcast (not the previous tag, as an AP that missed
/// broadcasts has): exactly one side owns its status entry, the AP reports
/// "lost" exactly when the mark landed first, and the flag ends DONE.
#[test]
fn broadcast_give_up_races_with_member() {
    loom::model(|| {
        let m = Machine::new(2, 1);
        let b = m.bcast.view();
        b.join(1);
        m.bcast.flags[1].reset_free(7);
        let (tag, count) = m.publish_broadcast(|_| 0);
        assert_eq!(count, 1);
        let ap = {
            let m = m.clone();
            thread::spawn(move || m.ap_broadcast_once(1))
        };
        let (abandoned, lost) =
            m.time_out_then_lose(|| b.give_up(1, tag, false), || b.give_up(1, tag, true));
        let ap_lost = ap.join().unwrap().expect("a member");
        assert!(m.bcast.flags[1].is_free(tag));
        assert_eq!(m.bcast.in_flight.load(Ordering::Relaxed), 0);
        m.check_give_up_outcome(abandoned, lost, ap_lost);
    });
}

/// Blocking dispatch (BEHAVIOUR.md §2.2): the BSP waits for the mailbox to
/// be free; then the procedure ran, its status is stored and the call's
/// token is complete ("status, token, free"). The BSP reads the status and
/// at once dispatches the next call to the same AP, which rewrites the
/// status word (EFI_NOT_READY) while the AP is still in its loop: an AP
/// that freed itself before storing the status or completing the token
/// fails here.
#[test]
fn blocking_dispatch_handoff_twice() {
    loom::model(|| {
        let m = Machine::new(2, 2);
        let ap = {
            let m = m.clone();
            thread::spawn(move || {
                assert!(!m.ap_once(1));
                assert!(!m.ap_once(1));
            })
        };
        for round in 1..=2 {
            let (link, handle) = m.token_for_one();
            m.post(1, link);
            while !m.cpus[1].channel().is_free() {
                thread::yield_now();
            }
            assert_eq!(m.counter.load(Ordering::Relaxed), round);
            let (_, token) = m.pool().lookup(handle).unwrap();
            assert_eq!(token.state(), TokenState::Done, "free before completed");
            assert_eq!(token.result(), Status::DEVICE_ERROR);
            assert_eq!(m.status.read(1), Status::DEVICE_ERROR);
        }
        ap.join().unwrap();
    });
}

/// Non-blocking dispatch (BEHAVIOUR.md §2.2): the BSP polls the token as
/// CheckForProcedure does; once it is done the status is stored. Then the
/// BSP waits for the mailbox and dispatches again at once.
#[test]
fn token_done_then_status() {
    loom::model(|| {
        let m = Machine::new(2, 2);
        let ap = {
            let m = m.clone();
            thread::spawn(move || {
                assert!(!m.ap_once(1));
                assert!(!m.ap_once(1));
            })
        };
        for round in 1..=2 {
            let (link, handle) = m.token_for_one();
            m.post(1, link);
            let (_, token) = m.pool().lookup(handle).unwrap();
            while token.state() != TokenState::Done {
                thread::yield_now();
            }
            assert_eq!(m.status.read(1), Status::DEVICE_ERROR);
            assert_eq!(m.counter.load(Ordering::Relaxed), round);
            while !m.cpus[1].channel().is_free() {
                thread::yield_now();
            }
        }
        ap.join().unwrap();
    });
}

/// Timeout race (BEHAVIOUR.md §2.7): the BSP abandons while the AP finishes.
/// Exactly one side owns the status word; the AP always ends FREE.
#[test]
fn abandon_races_with_finish() {
    loom::model(|| {
        let m = Machine::new(2, 1);
        let (slot, handle) = m.pool().alloc(1, None).unwrap();
        m.post(1, slot as u32 + 1);
        let ap = {
            let m = m.clone();
            thread::spawn(move || assert!(!m.ap_once(1)))
        };
        let verdict = m.cpus[1].channel().abandon();
        match verdict {
            Abandon::Abandoned => {
                // The BSP owns the status word now: the AP lost
                // `begin_finish` and never writes it.
                m.status.write(1, Status::TIMEOUT);
                m.pool().lookup(handle).unwrap().1.mark_timed_out();
            }
            Abandon::Finishing | Abandon::AlreadyFree => {}
            Abandon::AlreadyAbandoned => unreachable!(),
        }
        ap.join().unwrap();
        assert!(m.cpus[1].channel().is_free());
        let state = m.pool().lookup(handle).unwrap().1.state();
        // The AP thread is joined.
        let st = m.status.read(1);
        if verdict == Abandon::Abandoned {
            assert_eq!(st, Status::TIMEOUT, "late result discarded");
            assert_eq!(state, TokenState::TimedOut);
        } else {
            assert_eq!(st, Status::DEVICE_ERROR);
            assert_eq!(state, TokenState::Done);
        }
    });
}

/// A timed-out call that the end of the SMI then marks lost, against the
/// AP discarding it (BEHAVIOUR.md §2.7, §6.3 step 4): the AP reports "lost" exactly
/// when the mark landed before its discard, never writes the status word,
/// never runs a call abandoned before it started, and the mailbox ends free.
#[test]
fn lost_mark_races_with_discard() {
    loom::model(|| {
        let m = Machine::new(2, 1);
        m.post(1, 0);
        let ap = {
            let m = m.clone();
            thread::spawn(move || m.ap_once(1))
        };
        let ch = m.cpus[1].channel();
        let (abandoned, lost) = m.time_out_then_lose(|| ch.abandon(), || ch.mark_lost());
        let ap_lost = ap.join().unwrap();
        assert!(ch.is_free());
        m.check_give_up_outcome(abandoned, lost, ap_lost);
    });
}

/// Check-in against lock-down (BEHAVIOUR.md §6.6): a CPU whose check-in succeeded
/// is counted in the locked value; one that failed is not.
#[test]
fn check_in_versus_lock_door() {
    loom::model(|| {
        let counter = Arc::new(Semaphore::new(0));
        let cpus: Vec<_> = (0..2)
            .map(|_| {
                let c = counter.clone();
                thread::spawn(move || c.release().is_some())
            })
            .collect();
        let locked = counter.lock_down();
        let admitted = cpus
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&ok| ok)
            .count();
        assert_eq!(locked as usize, admitted);
        assert_eq!(counter.value(), SEMAPHORE_LOCKED);
    });
}

mod full_smi {
    //! Whole SMIs on two CPUs (entry, election, barriers, a service call
    //! from the MMI handler, the exit handshake), on the real instance in a
    //! caller buffer, under loom: one SMI per CPU in both modes, and two
    //! SMIs in a row in traditional mode, where a CPU that leaves the first
    //! enters the second at once.
    use std::collections::BTreeSet;
    use std::sync::atomic::Ordering::SeqCst;
    use std::sync::Mutex;

    use super::*;
    use mm_mp::efi::{Boolean, ProcessorInformation, INVALID_APIC_ID};
    use mm_mp::ffi::*;
    use mm_mp::platform::{MmMpConfig, MmMpPlatform};
    use mm_mp::stats::Counter;
    use mm_mp::Instance;

    struct Ctx {
        inst: std::sync::atomic::AtomicUsize,
        /// Procedure runs (on the APs).
        ran: AtomicUsize,
        /// MMI handler runs, one per SMI on its BSP (bookkeeping of the
        /// model, read after every CPU left: not a loom atomic).
        handlers: std::sync::atomic::AtomicUsize,
        /// Handler service calls that returned EFI_SUCCESS (as `handlers`).
        accepted: std::sync::atomic::AtomicUsize,
        how: How,
        relaxed: bool,
    }

    /// What the MMI handler does on the BSP.
    #[derive(Clone, Copy, PartialEq)]
    enum How {
        /// `Instance::dispatch_procedure` (the general path).
        Dispatch,
        /// DispatchProcedure through the protocol's function pointer (the
        /// blocking fast path inlined into the EFIAPI entry).
        Protocol,
        /// A blocking BroadcastProcedure with a CPUStatus array (the
        /// descriptor, the present bits and the AP's join).
        Broadcast,
    }

    unsafe extern "efiapi" fn count(arg: *mut c_void) -> Status {
        // SAFETY: the model passes its live Ctx.
        let ctx = unsafe { &*(arg as *const Ctx) };
        ctx.ran.fetch_add(1, Ordering::Relaxed);
        Status::SUCCESS
    }

    /// The MMI handler (MmFoundationEntry): one blocking call of `count`
    /// on the other CPU, as `Ctx::how` says.
    unsafe extern "efiapi" fn entry(context: *mut c_void, bsp: usize) {
        // SAFETY: the model registers its live Ctx as the context.
        let ctx = unsafe { &*(context as *const Ctx) };
        let inst = ctx.inst.load(SeqCst) as *const Instance;
        // SAFETY: initialised before any CPU entered.
        let inst = unsafe { &*inst };
        ctx.handlers.fetch_add(1, SeqCst);
        let ap = 1 - bsp;
        let r = if ctx.how == How::Broadcast {
            // Relaxed mode: an AP whose present bit is already set is in
            // the snapshot (only the AP clears it, after the handlers).
            let joined = ctx.relaxed
                && inst
                    .broadcasts()
                    .present
                    .get(0)
                    .is_some_and(|w| w.load(Ordering::Acquire) & (1 << ap) != 0);
            let mut sts = [Status(0); 2];
            // SAFETY: NumberOfCpus status words; NULL token = blocking.
            let r = unsafe {
                inst.broadcast_procedure(
                    Some(count),
                    0,
                    context,
                    std::ptr::null_mut(),
                    sts.as_mut_ptr(),
                )
            };
            match r {
                Status::SUCCESS => {
                    assert_eq!(sts[bsp], Status::NOT_STARTED);
                    assert_eq!(sts[ap], Status::SUCCESS);
                }
                // Relaxed mode: the AP had not joined yet (nothing written).
                Status::NOT_STARTED => {
                    assert!(!joined, "a joined AP left out of the snapshot");
                    assert_eq!(sts, [Status(0); 2]);
                }
                other => panic!("broadcast: {other:?}"),
            }
            r
        } else {
            // Relaxed mode: an AP already present is a valid target (only
            // the AP clears the flag, after the handlers).
            let present = ctx.relaxed && inst.cpu(ap).is_some_and(|s| s.is_present());
            let mut st = Status(0);
            let r = if ctx.how == How::Protocol {
                // SAFETY: valid instance.
                let mp =
                    unsafe { MmMpGetMmMpProtocol(inst as *const Instance as *mut MmMpInstance) };
                // SAFETY: our protocol; valid out-pointer; NULL token = blocking.
                unsafe {
                    ((*mp).dispatch_procedure)(
                        mp,
                        Some(count),
                        ap,
                        0,
                        context,
                        std::ptr::null_mut(),
                        &mut st,
                    )
                }
            } else {
                // SAFETY: valid out-pointer; NULL token = blocking.
                unsafe {
                    inst.dispatch_procedure(
                        Some(count),
                        ap,
                        0,
                        context,
                        std::ptr::null_mut(),
                        &mut st,
                    )
                }
            };
            if r == Status::SUCCESS {
                assert_eq!(st, Status::SUCCESS);
            } else {
                // Relaxed: the other CPU is not present (yet, or at all).
                assert_eq!(r, Status::INVALID_PARAMETER);
                assert!(!present, "a present AP refused");
                assert_eq!(st, Status(0), "a refused call wrote its status");
            }
            r
        };
        if r == Status::SUCCESS {
            ctx.accepted.fetch_add(1, SeqCst);
        }
    }

    /// What one execution of a model ended with: (SMIs, late CPUs, calls
    /// accepted).
    type Outcome = (u64, u64, usize);

    /// The outcomes of a relaxed SMI per CPU on two CPUs (BEHAVIOUR.md
    /// §6.1, §6.2). Either both CPUs were in one SMI: the AP joined before
    /// the call (accepted) or after it (refused: not present yet, not in
    /// the snapshot), or it checked in after the door was locked and was
    /// turned away without ever being present (late). Or each CPU ran an
    /// SMI of its own, alone (the other arrived after the first ended):
    /// nothing to call.
    const RELAXED_OUTCOMES: [Outcome; 4] = [(1, 0, 1), (1, 0, 0), (1, 1, 0), (2, 0, 0)];

    /// Every CPU takes `rounds` SMIs, one after the other (CPU 0 on the
    /// model's thread, CPU 1 on another); the MMI handler calls `how`.
    /// `preemptions` caps loom's preemption bound (LOOM_MAX_PREEMPTIONS)
    /// for this model. Returns the outcomes the exploration reached.
    fn smis(
        relaxed: bool,
        how: How,
        rounds: usize,
        preemptions: Option<usize>,
    ) -> BTreeSet<Outcome> {
        let outcomes = Arc::new(Mutex::new(BTreeSet::new()));
        let seen = outcomes.clone();
        let mut builder = loom::model::Builder::new();
        if let Some(cap) = preemptions {
            builder.preemption_bound = Some(builder.preemption_bound.map_or(cap, |b| b.min(cap)));
        }
        builder.check(move || {
            let ctx = Box::new(Ctx {
                inst: std::sync::atomic::AtomicUsize::new(0),
                ran: AtomicUsize::new(0),
                handlers: std::sync::atomic::AtomicUsize::new(0),
                accepted: std::sync::atomic::AtomicUsize::new(0),
                how,
                relaxed,
            });
            let mut table = [ProcessorInformation::EMPTY; 2];
            table[0].processor_id = 0;
            table[1].processor_id = 1;
            assert_ne!(table[0].processor_id, INVALID_APIC_ID);
            let cfg = MmMpConfig {
                revision: 1,
                number_of_cpus: 2,
                max_tokens: 1,
                cache_line_size: 64,
                sync_mode: relaxed as u32,
                bsp_index: 0,
                bsp_election: Boolean::TRUE,
                hot_plug_support: Boolean::FALSE,
                blocking_startup_this_ap: Boolean::FALSE,
                configure_mtrrs: Boolean::FALSE,
                reserved: 0,
                ap_sync_timeout_us: 0,
                ap_sync_timeout2_us: 0,
                processor_info: table.as_ptr(),
                hot_plug_apic_id: std::ptr::null_mut(),
            };
            // SAFETY: all-zero is a valid MM_MP_PLATFORM (every callback NULL).
            let mut plat: MmMpPlatform = unsafe { std::mem::zeroed() };
            plat.revision = 1;
            plat.context = &*ctx as *const Ctx as *mut c_void;
            plat.mm_foundation_entry = Some(entry);
            let mut size = 0;
            // SAFETY: valid pointers.
            assert_eq!(
                unsafe { MmMpGetRequiredSize(&cfg, &mut size) },
                Status::SUCCESS
            );
            let layout = std::alloc::Layout::from_size_align(size, 64).unwrap();
            // SAFETY: non-zero size.
            let buf = unsafe { std::alloc::alloc_zeroed(layout) };
            let mut inst = std::ptr::null_mut();
            // SAFETY: buffer of the required size, aligned.
            let st = unsafe { MmMpInitialize(buf as *mut c_void, size, &cfg, &plat, &mut inst) };
            assert_eq!(st, Status::SUCCESS);
            ctx.inst.store(inst as usize, SeqCst);
            let inst_addr = inst as usize;
            // One CPU's SMIs. Traditional mode: every CPU meets the others
            // in every SMI, so none is ever turned away as late; a CPU that
            // left an SMI and enters the next must find the door open.
            let cpu_smis = move |cpu: usize| {
                let inst = inst_addr as *mut MmMpInstance;
                for _ in 0..rounds {
                    // SAFETY: the instance outlives both threads (the AP's
                    // is joined before it is freed).
                    unsafe { MmMpSmiRendezvous(inst, cpu) };
                    if !relaxed {
                        // SAFETY: as above.
                        let i = unsafe { Instance::from_ptr(inst as *const Instance) }.unwrap();
                        assert_eq!(
                            i.stats().get(Counter::LateCpus),
                            0,
                            "a CPU was turned away from an SMI"
                        );
                    }
                }
            };
            let ap = thread::spawn(move || cpu_smis(1));
            cpu_smis(0);
            ap.join().unwrap();
            // SAFETY: valid instance, both CPUs left.
            let i = unsafe { Instance::from_ptr(inst as *const Instance) }.unwrap();
            let ran = ctx.ran.load(Ordering::Relaxed);
            let accepted = ctx.accepted.load(SeqCst);
            let smis = i.stats().get(Counter::Smis);
            let late = i.stats().get(Counter::LateCpus);
            let started = i.stats().get(if how == How::Broadcast {
                Counter::Broadcasts
            } else {
                Counter::Dispatches
            });
            // Every accepted call ran its procedure exactly once; a refused
            // one never ran it (BEHAVIOUR.md §2.2, §2.3).
            assert_eq!(ran, accepted, "procedure runs against accepted calls");
            assert_eq!(started, accepted as u64);
            assert_eq!(
                ctx.handlers.load(SeqCst) as u64,
                smis,
                "one handler per SMI"
            );
            if relaxed {
                assert!(
                    RELAXED_OUTCOMES.contains(&(smis, late, accepted)),
                    "(SMIs, late, accepted) = {smis}, {late}, {accepted}"
                );
            } else {
                // Every CPU in every SMI: each handler's call accepted.
                assert_eq!(smis, rounds as u64);
                assert_eq!(late, 0);
                assert_eq!(accepted, rounds);
            }
            seen.lock().unwrap().insert((smis, late, accepted));
            assert_eq!(i.run_sem(0).unwrap().value(), 0);
            assert_eq!(i.run_sem(1).unwrap().value(), 0);
            assert_eq!(i.arrival().value(), 0);
            assert!(!i.in_smi());
            // SAFETY: allocated above with this layout; nothing uses it now.
            unsafe { std::alloc::dealloc(buf, layout) };
        });
        let reached = outcomes.lock().unwrap().clone();
        reached
    }

    #[test]
    fn traditional_smi_two_cpus() {
        smis(false, How::Dispatch, 1, None);
    }

    /// A relaxed SMI per CPU with the handler's call `how`: every execution
    /// ends in one of `RELAXED_OUTCOMES`, and from one preemption on the
    /// exploration reaches each of them, the accepted call among them.
    fn relaxed_smi(how: How) {
        let reached = smis(true, how, 1, None);
        if loom::model::Builder::new().preemption_bound != Some(0) {
            assert_eq!(reached, BTreeSet::from(RELAXED_OUTCOMES));
        }
    }

    /// Relaxed mode, dispatching (see `relaxed_smi`).
    #[test]
    fn relaxed_smi_two_cpus() {
        relaxed_smi(How::Dispatch);
    }

    /// The blocking fast path (`Instance::dispatch_blocking`, reached
    /// through the protocol) in a whole traditional SMI.
    #[test]
    fn traditional_smi_two_cpus_protocol_dispatch() {
        smis(false, How::Protocol, 1, None);
    }

    /// A blocking broadcast in a relaxed SMI: the AP may join before or
    /// after the snapshot (or not at all before the SMI ends); see
    /// `relaxed_smi`.
    #[test]
    fn relaxed_smi_two_cpus_broadcast() {
        relaxed_smi(How::Broadcast);
    }

    /// Two SMIs in a row, traditional mode (BEHAVIOUR.md §6.2 step 7,
    /// §6.3 step 9): a CPU that leaves the first SMI enters the second at
    /// once, so when it sees "all in sync" cleared it must find the door
    /// open (arrival counter reset) and the BSP forgotten; both SMIs gather
    /// both CPUs (either may be elected in the second) and run their call.
    /// At most two preemptions: the single-SMI models explore three, and
    /// two around the hand-over between the SMIs take about 7 s (three
    /// take about two minutes).
    #[test]
    fn traditional_two_smis_in_a_row() {
        smis(false, How::Dispatch, 2, Some(2));
    }
}
