//! loom models of the hand-offs between CPUs (run with
//! `RUSTFLAGS="--cfg loom" cargo test --release --test loom`; CI bounds
//! the search with LOOM_MAX_PREEMPTIONS).
//!
//! They drive the library's own `Mailbox`/`Channel`, `Semaphore`,
//! `BusyFlag` and token pool — the code that runs in SMM — with loom's
//! atomics.
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

struct Machine {
    cpus: Vec<Cpu>,
    bcast: Bcast,
    tokens: Vec<Token>,
    pool: PoolState,
    counter: AtomicUsize,
    status: [std::cell::UnsafeCell<Status>; 3],
}

// SAFETY: the status cells are written by one AP each and read by the BSP
// only after the token says that AP finished (the property under test).
unsafe impl Sync for Machine {}
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
            status: [
                std::cell::UnsafeCell::new(Status(0)),
                std::cell::UnsafeCell::new(Status(0)),
                std::cell::UnsafeCell::new(Status(0)),
            ],
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
        let pool = self.pool();
        ch.run(tag, |link| pool.by_link(link))
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
                let pool = self.pool();
                return Some(b.run(cpu, tag, |link| pool.by_link(link)));
            }
            if seen != Some(0) {
                return None;
            }
            thread::yield_now();
        }
    }

    /// BSP side: snapshot (CPU 0 is the BSP) and publish `bump` with the
    /// status array and token `link`; returns (tag, member count).
    fn publish_broadcast(&self, token: impl FnOnce(u32) -> u32) -> (u32, u32) {
        let b = self.bcast.view();
        let count = b.snapshot(0);
        let link = token(count);
        let tag = b.publish(
            &Call {
                procedure: bump as *const () as usize,
                argument: &self.counter as *const AtomicUsize as *mut c_void,
                kind: KIND_PROCEDURE2,
                // UnsafeCell<Status> is laid out as Status: an array of
                // NumberOfCpus status words.
                status: self.status[0].get(),
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
                // SAFETY: the BSP owns AP 1's status word now.
                unsafe { *self.status[1].get() = Status::TIMEOUT };
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
        // SAFETY: the AP thread is joined.
        let st = unsafe { *self.status[1].get() };
        if abandoned == Abandon::Abandoned {
            assert_eq!(st, Status::TIMEOUT, "late result discarded");
        } else {
            assert_eq!(st, Status::DEVICE_ERROR);
            assert_eq!(self.counter.load(Ordering::Relaxed), 1);
        }
    }

    fn post(&self, cpu: usize, token: u32) {
        let ch = self.cpus[cpu].channel();
        let claim = ch.try_claim().expect("mailbox free");
        ch.post(
            claim,
            &Call {
                procedure: bump as *const () as usize,
                argument: &self.counter as *const AtomicUsize as *mut c_void,
                kind: KIND_PROCEDURE2,
                status: self.status[cpu].get(),
                token,
            },
        );
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
        // SAFETY: both APs finished (token done): nobody writes these now.
        unsafe {
            assert_eq!(*m.status[1].get(), Status::DEVICE_ERROR);
            assert_eq!(*m.status[2].get(), Status::DEVICE_ERROR);
        }
        for ap in aps {
            ap.join().unwrap();
        }
        let b = m.bcast.view();
        assert!(b.is_free_for(1) && b.is_free_for(2));
        assert_eq!(m.bcast.in_flight.load(Ordering::Relaxed), 0);
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
            let pool = m.pool();
            Some(b.run(cpu, tag, |link| pool.by_link(link)))
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

/// Blocking dispatch: the BSP waits for the mailbox to be free, then the
/// status is there; a second dispatch to the same AP reuses the mailbox.
#[test]
fn blocking_dispatch_handoff_twice() {
    loom::model(|| {
        let m = Machine::new(2, 1);
        let ap = {
            let m = m.clone();
            thread::spawn(move || {
                assert!(!m.ap_once(1));
                assert!(!m.ap_once(1));
            })
        };
        for round in 1..=2 {
            m.post(1, 0);
            while !m.cpus[1].channel().is_free() {
                thread::yield_now();
            }
            assert_eq!(m.counter.load(Ordering::Relaxed), round);
            // SAFETY: the AP finished (mailbox free) and waits for the next release.
            unsafe { assert_eq!(*m.status[1].get(), Status::DEVICE_ERROR) };
            // SAFETY: as above.
            unsafe { *m.status[1].get() = Status(0) };
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
                // The BSP owns the status word now.
                // SAFETY: the AP lost `begin_finish`, it never writes it.
                unsafe { *m.status[1].get() = Status::TIMEOUT };
                m.pool().lookup(handle).unwrap().1.mark_timed_out();
            }
            Abandon::Finishing | Abandon::AlreadyFree => {}
            Abandon::AlreadyAbandoned => unreachable!(),
        }
        ap.join().unwrap();
        assert!(m.cpus[1].channel().is_free());
        let state = m.pool().lookup(handle).unwrap().1.state();
        // SAFETY: the AP thread is joined.
        let st = unsafe { *m.status[1].get() };
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
    //! The whole rendezvous of one SMI on two CPUs (entry, election,
    //! barriers, a blocking dispatch, the exit handshake), on the real
    //! instance in a caller buffer, under loom.
    use super::*;
    use mm_mp::efi::{Boolean, ProcessorInformation, INVALID_APIC_ID};
    use mm_mp::ffi::*;
    use mm_mp::platform::{MmMpConfig, MmMpPlatform};
    use mm_mp::Instance;

    struct Ctx {
        inst: std::sync::atomic::AtomicUsize,
        ran: AtomicUsize,
        how: How,
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

    unsafe extern "efiapi" fn entry(context: *mut c_void, bsp: usize) {
        // SAFETY: the model registers its live Ctx as the context.
        let ctx = unsafe { &*(context as *const Ctx) };
        let inst = ctx.inst.load(std::sync::atomic::Ordering::SeqCst) as *const Instance;
        // SAFETY: initialised before any CPU entered.
        let inst = unsafe { &*inst };
        let mut st = Status(0);
        if ctx.how == How::Broadcast {
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
                    assert_eq!(sts[1 - bsp], Status::SUCCESS);
                }
                // Relaxed mode: the AP had not joined yet (nothing written).
                Status::NOT_STARTED => assert_eq!(sts, [Status(0); 2]),
                other => panic!("broadcast: {other:?}"),
            }
            return;
        }
        let r = if ctx.how == How::Protocol {
            // SAFETY: valid instance.
            let mp = unsafe { MmMpGetMmMpProtocol(inst as *const Instance as *mut MmMpInstance) };
            // SAFETY: our protocol; valid out-pointer; NULL token = blocking.
            unsafe {
                ((*mp).dispatch_procedure)(
                    mp,
                    Some(count),
                    1 - bsp,
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
                    1 - bsp,
                    0,
                    context,
                    std::ptr::null_mut(),
                    &mut st,
                )
            }
        };
        // Relaxed: the other CPU may not be present (yet, or at all).
        if r == Status::SUCCESS {
            assert_eq!(st, Status::SUCCESS);
        } else {
            assert_eq!(r, Status::INVALID_PARAMETER);
        }
    }

    fn smi(relaxed: bool, how: How) {
        loom::model(move || {
            let ctx = Box::new(Ctx {
                inst: std::sync::atomic::AtomicUsize::new(0),
                ran: AtomicUsize::new(0),
                how,
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
            ctx.inst
                .store(inst as usize, std::sync::atomic::Ordering::SeqCst);
            let inst_addr = inst as usize;
            let ap = thread::spawn(move || {
                // SAFETY: the instance outlives the thread (joined below).
                unsafe { MmMpSmiRendezvous(inst_addr as *mut MmMpInstance, 1) }
            });
            // SAFETY: valid instance.
            unsafe { MmMpSmiRendezvous(inst, 0) };
            ap.join().unwrap();
            // SAFETY: valid instance, both CPUs left.
            let i = unsafe { Instance::from_ptr(inst as *const Instance) }.unwrap();
            let ran = ctx.ran.load(Ordering::Relaxed);
            if relaxed {
                // The BSP may run alone (the AP arrives after the SMI ended
                // and runs one of its own): every SMI dispatches once if it
                // has a present AP, so 0..=2 runs; semaphores always balanced.
                assert!(ran <= 2);
            } else {
                assert_eq!(ran, 1);
            }
            assert_eq!(i.run_sem(0).unwrap().value(), 0);
            assert_eq!(i.run_sem(1).unwrap().value(), 0);
            assert_eq!(i.arrival().value(), 0);
            assert!(!i.in_smi());
            // SAFETY: allocated above with this layout; nothing uses it now.
            unsafe { std::alloc::dealloc(buf, layout) };
        });
    }

    #[test]
    fn traditional_smi_two_cpus() {
        smi(false, How::Dispatch);
    }

    #[test]
    fn relaxed_smi_two_cpus() {
        smi(true, How::Dispatch);
    }

    /// The blocking fast path (`Instance::dispatch_blocking`, reached
    /// through the protocol) in a whole traditional SMI.
    #[test]
    fn traditional_smi_two_cpus_protocol_dispatch() {
        smi(false, How::Protocol);
    }

    /// A blocking broadcast in a relaxed SMI: the AP may join before or
    /// after the snapshot (or not at all before the SMI ends).
    #[test]
    fn relaxed_smi_two_cpus_broadcast() {
        smi(true, How::Broadcast);
    }
}
