//! The long run: many SMIs mixing every SMI source
//! (broadcast, unicast from the BSP, unicast from an AP) on machines in
//! traditional and in relaxed mode, with and without CPU hot-plug, with
//! exact procedure counts and every semaphore balanced after every SMI.
//!
//! `MM_MP_LONG_RUN_SMIS` sets the number of SMIs per machine (default
//! 1500, what CI runs; four machines); docs/RELIABILITY.md quotes the
//! documented run of at least 1,000,000 SMIs.
//!
//! Lower bounds on the work done: a run passes only if at least half of
//! its SMIs broadcast to an AP and completed a dispatch, procedures ran at
//! least half as often as every AP in every SMI would make them, the
//! library's statistics count exactly the broadcasts and dispatches the
//! handler saw start, and, with hot-plug, every add/remove cycle was
//! applied (hot-plug statistics) and the hot-added CPU ran procedures. A
//! library that refuses every call with EFI_NOT_STARTED, or whose APs
//! never become present, fails.
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use mm_mp::efi::Boolean;
use mm_mp::efi::{MmCompletion, Status, INVALID_APIC_ID};
use mm_mp::ffi::{
    MmMpGetHotPlugStatistics, MmMpGetRendezvousProtocol, MmMpHotPlugStatistics, MmMpStatistics,
};

fn smis() -> usize {
    std::env::var("MM_MP_LONG_RUN_SMIS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

struct Counts {
    rec: Arc<Record>,
    expected: AtomicUsize,
    failures: AtomicUsize,
    /// Broadcasts that returned EFI_SUCCESS (they started procedures).
    broadcasts: AtomicUsize,
    /// Dispatches that returned EFI_SUCCESS and whose wait did too.
    dispatches: AtomicUsize,
    /// APs every SMI should have: the machine's CPUs that are never
    /// removed, minus the BSP.
    aps: usize,
}

impl Counts {
    fn new(n: usize, aps: usize) -> Arc<Counts> {
        Arc::new(Counts {
            rec: Arc::from(Record::new(n)),
            expected: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            broadcasts: AtomicUsize::new(0),
            dispatches: AtomicUsize::new(0),
            aps,
        })
    }

    /// At the end of a run: no failed call, exact procedure counts, `smis`
    /// SMIs handled, the statistics agree with what the handler saw, and
    /// the work done reaches the lower bounds of the module comment.
    /// Returns the statistics.
    fn verify(&self, m: &Machine, smis: usize) -> MmMpStatistics {
        assert_eq!(self.failures.load(Ordering::SeqCst), 0);
        assert_eq!(
            self.rec.total(),
            self.expected.load(Ordering::SeqCst),
            "exact procedure counts"
        );
        let s = m.stats();
        assert_eq!(s.smis as usize, smis);
        let broadcasts = self.broadcasts.load(Ordering::SeqCst);
        let dispatches = self.dispatches.load(Ordering::SeqCst);
        assert_eq!(
            s.broadcasts as usize, broadcasts,
            "statistics: the broadcasts that started procedures"
        );
        assert_eq!(
            s.dispatches as usize, dispatches,
            "statistics: the procedures started by DispatchProcedure"
        );
        assert!(
            broadcasts * 2 >= smis,
            "only {broadcasts} of {smis} SMIs broadcast to an AP"
        );
        assert!(
            dispatches * 2 >= smis,
            "only {dispatches} of {smis} SMIs completed a dispatch"
        );
        let floor = smis * self.aps / 2;
        assert!(
            self.rec.total() >= floor,
            "{} procedure runs in {smis} SMIs with {} APs, at least {floor} expected",
            self.rec.total(),
            self.aps
        );
        s
    }
}

/// The BSP's work in every SMI: gather the APs (relaxed), broadcast with a
/// status array, one token dispatch waited for; exact counts in `c`.
fn work(sim: &Sim, bsp: usize, c: &Counts, relaxed: bool) {
    let n = sim.opts.cpus;
    let arg = Arc::as_ptr(&c.rec) as *mut std::ffi::c_void;
    let live =
        |x: usize| x != bsp && !sim.dead[x].load(Ordering::SeqCst) && sim.instance().is_expected(x);
    if relaxed {
        // Relaxed: the BSP starts alone; gather the others the way a
        // handler that needs every CPU does (EDKII_SMM_CPU_RENDEZVOUS_PROTOCOL).
        // SAFETY: valid instance; our own protocol.
        let all = unsafe {
            let p = MmMpGetRendezvousProtocol(sim.inst);
            ((*p).wait_for_all_processor)(p, Boolean::TRUE)
        };
        if all == Status::SUCCESS {
            sim.pump_until(|| (0..n).all(|x| !live(x) || sim.joined(x)));
        }
    }
    let mut st = vec![Status(0); n];
    match sim.broadcast(p2(proc_count), 0, arg, None, Some(&mut st)) {
        Status::SUCCESS => {
            let ran = st.iter().filter(|&&s| s == Status::SUCCESS).count();
            let set = st.iter().filter(|&&s| s != Status::NOT_STARTED).count();
            if ran != set || ran == 0 {
                c.failures.fetch_add(1, Ordering::SeqCst);
            }
            c.expected.fetch_add(ran, Ordering::SeqCst);
            c.broadcasts.fetch_add(1, Ordering::SeqCst);
        }
        Status::NOT_STARTED => {}
        _ => {
            c.failures.fetch_add(1, Ordering::SeqCst);
        }
    }
    // One token dispatch to the first present AP, then wait for it.
    if let Some(ap) = (0..n).find(|&x| x != bsp && sim.instance().cpu(x).unwrap().is_present()) {
        let mut t: MmCompletion = NULL_TOKEN;
        if sim.dispatch(p2(proc_count), ap, 0, arg, Some(&mut t), None) == Status::SUCCESS {
            if sim.wait(t) == Status::SUCCESS {
                c.expected.fetch_add(1, Ordering::SeqCst);
                c.dispatches.fetch_add(1, Ordering::SeqCst);
            } else {
                c.failures.fetch_add(1, Ordering::SeqCst);
            }
        } else {
            c.failures.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The SMI sources in turn: broadcast, unicast to CPU 0, unicast to an AP.
fn raise(m: &Machine, i: usize, aps: usize) {
    match i % 3 {
        0 => m.broadcast_smi(),
        1 => m.unicast_smi(0),
        _ => m.unicast_smi(1 + i % aps),
    }
}

fn run(relaxed: bool, n: usize, total: usize) -> (std::time::Duration, MmMpStatistics) {
    let m = Machine::start(
        Options::new(n)
            .relaxed(relaxed)
            .clock(Clock::Real)
            .timeout_us(500)
            .tokens(8),
    );
    let counts = Counts::new(n, n - 1);
    let c = counts.clone();
    m.sim
        .set_handler(move |sim, bsp| work(sim, bsp, &c, relaxed));
    let start = std::time::Instant::now();
    for i in 1..=total {
        raise(&m, i, n - 1);
        m.wait_smis(i, 60);
        m.assert_balanced();
    }
    let elapsed = start.elapsed();
    (elapsed, counts.verify(&m, total))
}

/// Hot-plug mixed in: 4 CPUs and one hot-pluggable slot; every
/// `HOT_PLUG_EVERY` SMIs the platform reserves the slot, the BSP adds the
/// CPU (BEHAVIOUR.md §5.2), its first SMI initialises it, it works in the next
/// SMIs and is removed again (ejected at SMI end) once it ran a procedure,
/// which it must do within `JOIN_WITHIN` SMIs. Between those, the same
/// work and sources as `run`. Returns (time, statistics, cycles).
fn run_hot_plug(relaxed: bool, total: usize) -> (std::time::Duration, MmMpStatistics, usize) {
    const HOT_PLUG_EVERY: usize = 50;
    const JOIN_WITHIN: usize = 100;
    const NEW: usize = 4;
    let n = NEW + 1;
    let m = Machine::start(
        Options::new(n)
            .relaxed(relaxed)
            .hot_plug(true)
            .empty(&[NEW])
            .clock(Clock::Real)
            .timeout_us(500)
            .tokens(8),
    );
    let counts = Counts::new(n, NEW - 1);
    // 0: plain work; 1: add the CPU; 2: remove it once it ran a procedure.
    let op = Arc::new(AtomicUsize::new(0));
    // Procedures the CPU of slot NEW had run when op 2 was set.
    let runs_at_init = Arc::new(AtomicUsize::new(0));
    let (c, o, r0) = (counts.clone(), op.clone(), runs_at_init.clone());
    m.sim.set_handler(move |sim, bsp| {
        // The work first: a CPU with a pending removal makes Broadcast
        // return EFI_INVALID_PARAMETER (BEHAVIOUR.md §2.3 step 5).
        work(sim, bsp, &c, relaxed);
        match o.load(Ordering::SeqCst) {
            1 => {
                if sim.add_processor(apic(NEW)) == (Status::SUCCESS, NEW) {
                    o.store(0, Ordering::SeqCst);
                } else {
                    c.failures.fetch_add(1, Ordering::SeqCst);
                }
            }
            2 => {
                if bsp == NEW {
                    // It won the election: hand the BSP role over first.
                    if sim.switch_bsp(0) != Status::SUCCESS {
                        c.failures.fetch_add(1, Ordering::SeqCst);
                    }
                } else if c.rec.runs()[NEW] == r0.load(Ordering::SeqCst) {
                    // Not yet part of a broadcast or dispatch: a later SMI.
                } else if sim.remove_processor(NEW) == Status::SUCCESS {
                    o.store(0, Ordering::SeqCst);
                } else {
                    c.failures.fetch_add(1, Ordering::SeqCst);
                }
            }
            _ => {}
        }
    });
    let inst = m.sim.instance();
    let start = std::time::Instant::now();
    let (mut smis, mut cycles) = (0, 0);
    while smis < total {
        for _ in 0..HOT_PLUG_EVERY.min(total - smis) {
            smis += 1;
            raise(
                &m,
                smis,
                if inst.cpu(NEW).unwrap().is_empty() {
                    NEW - 1
                } else {
                    NEW
                },
            );
            m.wait_smis(smis, 60);
            m.assert_balanced();
        }
        if smis >= total {
            break;
        }
        // Hot-add: the platform reserves the slot, a broadcast SMI adds it.
        m.sim.set_hot_plug_id(NEW, apic(NEW));
        op.store(1, Ordering::SeqCst);
        while op.load(Ordering::SeqCst) == 1 {
            smis += 1;
            m.broadcast_smi();
            m.wait_smis(smis, 60);
        }
        // The new CPU's first SMI only initialises it.
        m.revive(NEW);
        m.sim.pending[NEW].store(true, Ordering::SeqCst);
        while inst.cpu(NEW).unwrap().needs_init() {
            std::thread::yield_now();
        }
        m.wait_smis(smis, 60);
        // It works with the others until removed (mixed sources).
        runs_at_init.store(counts.rec.runs()[NEW], Ordering::SeqCst);
        op.store(2, Ordering::SeqCst);
        let joined_at = smis;
        while !inst.cpu(NEW).unwrap().is_empty() {
            assert!(
                smis - joined_at < JOIN_WITHIN,
                "cycle {cycles}: the hot-added CPU ran no procedure in {JOIN_WITHIN} SMIs"
            );
            smis += 1;
            raise(&m, smis, NEW);
            m.wait_smis(smis, 60);
        }
        m.kill(NEW);
        m.assert_balanced();
        assert_eq!(m.sim.hot_plug_id(NEW), INVALID_APIC_ID, "slot released");
        assert_eq!((0..n).filter(|&i| inst.is_expected(i)).count(), NEW);
        cycles += 1;
    }
    let elapsed = start.elapsed();
    let s = counts.verify(&m, smis);
    // Every cycle's Add and Remove were applied at the end of an SMI
    // (BEHAVIOUR.md §5.3, §11 MmMpGetHotPlugStatistics).
    let mut h = MmMpHotPlugStatistics::default();
    // SAFETY: valid instance and out-pointer.
    let st = unsafe { MmMpGetHotPlugStatistics(m.sim.inst, &mut h) };
    assert_eq!(st, Status::SUCCESS);
    assert_eq!(
        (h.cpus_added as usize, h.cpus_removed as usize),
        (cycles, cycles),
        "hot-plug operations applied"
    );
    // The hot-added CPU worked in the SMIs between its Add and its Remove.
    let new_runs = counts.rec.runs()[NEW];
    assert!(
        new_runs >= cycles,
        "the hot-added CPU ran {new_runs} procedures in {cycles} cycles"
    );
    (elapsed, s, cycles)
}

fn report(what: &str, total: usize, t: std::time::Duration, s: &MmMpStatistics) {
    eprintln!(
        "long run: {what}, {total} SMIs in {t:.2?} ({:.1} us/SMI); spurious {}, late {}, IPIs {}, timeouts {}, lost {}, dispatches {}, broadcasts {}",
        t.as_secs_f64() * 1e6 / total as f64,
        s.spurious_smis,
        s.late_cpus,
        s.ipis_sent,
        s.timeouts,
        s.lost_aps,
        s.dispatches,
        s.broadcasts
    );
}

#[test]
fn long_run_mixed_sources_both_modes() {
    let total = smis();
    for relaxed in [false, true] {
        let (t, s) = run(relaxed, 4, total);
        report(
            if relaxed { "relaxed" } else { "traditional" },
            total,
            t,
            &s,
        );
    }
}

#[test]
fn long_run_with_hot_plug_both_modes() {
    let total = smis();
    for relaxed in [false, true] {
        let (t, s, cycles) = run_hot_plug(relaxed, total);
        assert!(cycles >= total / 60, "only {cycles} hot-plug cycles");
        let what = format!(
            "{} mode with hot-plug ({cycles} add/remove cycles)",
            if relaxed { "relaxed" } else { "traditional" }
        );
        report(&what, s.smis as usize, t, &s);
    }
}
