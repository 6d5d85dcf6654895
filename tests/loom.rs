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

use loom::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use loom::thread;

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
}

impl Cpu {
    fn channel(&self) -> Channel<'_> {
        Channel {
            request: &self.mailbox,
            busy: &self.busy,
            posted: &self.posted,
            known_done: &self.known_done,
        }
    }
}

struct Machine {
    cpus: Vec<Cpu>,
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
                })
                .collect(),
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

/// BSP broadcasts to two APs with one token; when the token says done,
/// both procedures ran and both statuses and the overall result are there.
#[test]
fn broadcast_token_completion() {
    loom::model(|| {
        let m = Machine::new(3, 1);
        let (slot, handle) = m.pool().alloc(2, None).unwrap();
        m.post(1, slot as u32 + 1);
        m.post(2, slot as u32 + 1);
        let aps: Vec<_> = (1..3)
            .map(|cpu| {
                let m = m.clone();
                thread::spawn(move || assert!(!m.ap_once(cpu)))
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
        assert!(m.cpus[1].channel().is_free() && m.cpus[2].channel().is_free());
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

/// Timeout race (SPEC §2.7): the BSP abandons while the AP finishes.
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
/// AP discarding it (SPEC §2.7, §6.3 step 4): the AP reports "lost" exactly
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
        let abandoned = ch.abandon();
        let lost = match abandoned {
            Abandon::Abandoned => {
                // SAFETY: the BSP owns the status word now.
                unsafe { *m.status[1].get() = Status::TIMEOUT };
                ch.mark_lost()
            }
            Abandon::Finishing | Abandon::AlreadyFree => Abandon::AlreadyFree,
            Abandon::AlreadyAbandoned => unreachable!(),
        };
        let ap_lost = ap.join().unwrap();
        assert!(ch.is_free());
        assert_eq!(ap_lost, lost == Abandon::AlreadyAbandoned);
        // SAFETY: the AP thread is joined.
        let st = unsafe { *m.status[1].get() };
        if abandoned == Abandon::Abandoned {
            assert_eq!(st, Status::TIMEOUT, "late result discarded");
        } else {
            assert_eq!(st, Status::DEVICE_ERROR);
            assert_eq!(m.counter.load(Ordering::Relaxed), 1);
        }
    });
}

/// Check-in against lock-down (SPEC §6.6): a CPU whose check-in succeeded
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
        /// Dispatch through the protocol's function pointer (the blocking
        /// fast path inlined into the EFIAPI entry) instead of calling
        /// `Instance::dispatch_procedure` (the general path).
        via_protocol: bool,
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
        let r = if ctx.via_protocol {
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

    fn smi(relaxed: bool, via_protocol: bool) {
        loom::model(move || {
            let ctx = Box::new(Ctx {
                inst: std::sync::atomic::AtomicUsize::new(0),
                ran: AtomicUsize::new(0),
                via_protocol,
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
        smi(false, false);
    }

    #[test]
    fn relaxed_smi_two_cpus() {
        smi(true, false);
    }

    /// The blocking fast path (`Instance::dispatch_blocking`, reached
    /// through the protocol) in a whole traditional SMI.
    #[test]
    fn traditional_smi_two_cpus_protocol_dispatch() {
        smi(false, true);
    }
}
